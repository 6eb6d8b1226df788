import Engine
import Foundation
import Logging
import NIOCore
import Synchronization
import Training
import Wire

/// What a worker keeps across sessions (the data sets, by digest) and the logic of one session.
final class WorkerState {
    let blas: BLASRuntime.Report
    let parallelism: Int
    let logger: Logger
    /// How long a new connection may take to send its hello.
    static let handshakeTimeout = TimeAmount.seconds(10)
    /// Data sets received in earlier sessions, by SHA-256.
    private var dataSets: [DatasetDigest: LabeledDataSet] = [:]

    init(blas: BLASRuntime.Report, parallelism: Int, logger: Logger) {
        self.blas = blas
        self.parallelism = parallelism
        self.logger = logger
    }

    /// Serves one coordinator session until it says goodbye or the connection ends.
    ///
    /// Tasks run `parallelism` at a time, each on one BLAS thread: a worker's cores are used
    /// across shards, never inside one shard's products, so a shard's gradient is the same
    /// bits whatever the thread count.
    func serve(_ connection: NIOAsyncChannel<WireMessage, WireMessage>, parallelism: Int) async {
        let peer = connection.channel.remoteAddress.map { "\($0)" } ?? "unknown peer"
        logger.info("session from \(peer)")
        // A peer that connects and stays silent must not hold the worker (it serves one
        // session at a time): without a hello within the deadline the connection is closed.
        let channel = connection.channel
        let logger = self.logger
        let handshakeDeadline = channel.eventLoop.scheduleTask(in: Self.handshakeTimeout) {
            logger.warning("no hello from \(peer) within \(Self.handshakeTimeout); closing the connection")
            channel.close(promise: nil)
        }
        do {
            try await connection.executeThenClose { inbound, outbound in
                var session = Session()
                let timing = SessionTiming()
                defer { timing.report(to: logger, peer: peer, threads: parallelism) }
                // Answers go out through their own task, so that a computation slot is free
                // again as soon as its gradient is computed: the next task held starts at once
                // instead of after the answer has been handed to the connection.
                let (answers, answerSink) = AsyncStream.makeStream(of: (WireMessage, Bool).self)
                try await withThrowingTaskGroup(of: Void.self) { writers in
                    writers.addTask {
                        for await (answer, isTraining) in answers {
                            let writing = ContinuousClock.now
                            try await outbound.write(answer)
                            if isTraining { timing.answered(writingSince: writing) }
                        }
                    }
                    defer { answerSink.finish() }
                    try await withThrowingTaskGroup(of: Void.self) { group in
                        var running = 0
                        for try await message in inbound {
                            if case .task(let task) = message {
                                let job: @Sendable () -> WireMessage
                                do {
                                    job = try self.prepare(task, session: session, timing: timing)
                                } catch let error as WireError {
                                    // Tell the coordinator why, then end the session.
                                    try? await outbound.write(.error(ErrorReport(error)))
                                    throw error
                                }
                                if running == parallelism {
                                    try await group.next()
                                    running -= 1
                                }
                                running += 1
                                let isTraining = task.kind == .train
                                if isTraining { timing.started() }
                                group.addTask {
                                    answerSink.yield((job(), isTraining))
                                }
                                continue
                            }
                            if case .hello = message { handshakeDeadline.cancel() }
                            if case .parameters = message { timing.parametersReceived() }
                            if case .error(let report) = message {
                                // The coordinator refused the session (authentication, handshake).
                                logger.error("session from \(peer) refused by the coordinator: \(report)")
                                break
                            }
                            for reply in try handle(message, session: &session) { try await outbound.write(reply) }
                            if case .parameters = message { timing.networkRebuilt() }
                            if case .goodbye = message { break }
                        }
                        try await group.waitForAll()
                    }
                    answerSink.finish()
                    try await writers.waitForAll()
                }
            }
            logger.info("session from \(peer) ended")
        } catch {
            logger.error("session from \(peer) failed: \(error)")
        }
    }

    /// The state of one session.
    struct Session {
        var signature: ModelSignature?
        var active: [DatasetKind: DatasetDigest] = [:]
        var network: Network<Float>?
        var step: UInt64 = 0
    }

    func handle(_ message: WireMessage, session: inout Session) throws -> [WireMessage] {
        switch message {
        case .hello(let hello):
            session.signature = hello.signature
            let name = ProcessInfo.processInfo.hostName + ":\(getpid())"
            return [.helloAck(HelloAck(answering: hello, workerName: name, blasKernel: blas.coreName,
                                       threadCount: parallelism))]
        case .datasetOffer(let descriptor):
            let have = dataSets[descriptor.digest] != nil
            if have { session.active[descriptor.kind] = descriptor.digest }
            return [.datasetStatus(DatasetStatus(kind: descriptor.kind, digest: descriptor.digest,
                                                 state: have ? .ready : .missing))]
        case .dataset(let transfer):
            let d = transfer.descriptor
            let data = try LabeledDataSet(rows: 1, columns: d.featureCount, pixels: transfer.images,
                                          labels: transfer.labels, classCount: d.classCount,
                                          source: "\(d.kind) data set from the coordinator")
            // Index the nonzero pixels now, before the first step, rather than in its first shard.
            _ = data.sparsePixels
            dataSets[d.digest] = data
            session.active[d.kind] = d.digest
            logger.info("received \(d.kind) data set: \(d.sampleCount) samples, \(d.digest)")
            return [.datasetStatus(DatasetStatus(kind: d.kind, digest: d.digest, state: .ready))]
        case .parameters(let update):
            guard let signature = session.signature else { return [] }
            session.network = update.values.withUnsafeBufferPointer {
                Network(sizes: signature.layerSizes, flattened: $0)
            }
            session.step = update.step
            return []
        case .task(let task):
            return [try prepare(task, session: session)()]
        case .ping(let n):
            return [.pong(n)]
        case .goodbye, .error, .helloAck, .datasetStatus, .gradient, .evaluation, .pong:
            return []
        }
    }

    /// Checks a task against the session and returns the work that answers it.
    func prepare(_ task: ShardTask, session: Session, timing: SessionTiming? = nil) throws -> @Sendable () -> WireMessage {
        guard let network = session.network else {
            throw WireError.unexpectedMessage(.task, "a task arrived before any parameters")
        }
        guard task.step == session.step else {
            throw WireError.unexpectedMessage(.task, "a task for step \(task.step) arrived, but the latest parameters are for step \(session.step)")
        }
        guard let digest = session.active[task.dataset], let data = dataSets[digest] else {
            throw WireError.unexpectedMessage(.task, "a task names the \(task.dataset) data set, which this session has not sent")
        }
        guard task.samples.requiredSampleCount <= data.count else {
            throw WireError.unexpectedMessage(.task, "sample \(task.samples.requiredSampleCount - 1) is beyond the \(data.count) samples of the \(task.dataset) data set")
        }
        let indices: [Int]
        switch task.samples {
        case .indices(let list): indices = list.map(Int.init)
        case .range(let start, let count): indices = Array(start..<(start + count))
        }
        switch task.kind {
        case .train:
            return {
                let started = ContinuousClock.now
                let result = ShardResult.compute(network, on: data, indices: indices)
                timing?.computed(since: started)
                return .gradient(GradientResult(step: task.step, shardID: task.shardID, sampleCount: result.count,
                                                lossSum: result.lossSum, correctCount: result.correct,
                                                gradientSum: result.gradient.flattened()))
            }
        case .evaluate:
            return {
                let e = Evaluation.evaluate(network, on: data, indices: indices)
                return .evaluation(EvaluationResult(step: task.step, shardID: task.shardID, sampleCount: e.count,
                                                    lossSum: e.lossSum, correctCount: e.correct))
            }
        }
    }
}

/// How much of a session's training time a worker spent computing gradients, logged when the
/// session ends: the time inside `ShardResult.compute` (forward and backward on a shard), and
/// the span from the start of the first gradient task to the moment the last answer was handed
/// to the connection. Everything else in that span is outside gradient computation; the log
/// splits off two parts of it: waiting for the next parameters after answering every task held
/// (the coordinator's turnaround: last gradients in, reduction, optimizer, parameters out,
/// plus the transfer and decoding), rebuilding the network from them, and handing answers to
/// the connection (`outbound.write`, which waits when the socket buffer is full until the
/// coordinator reads). The rest is within steps (flattening gradients, waiting for tasks,
/// evaluation tasks).
final class SessionTiming: Sendable {
    private struct State {
        var tasks = 0
        var compute: Duration = .zero
        var first: ContinuousClock.Instant?
        var last: ContinuousClock.Instant?
        var running = 0
        var idleSince: ContinuousClock.Instant?
        var parametersAt: ContinuousClock.Instant?
        var waitingForParameters: Duration = .zero
        var rebuilding: Duration = .zero
        var writing: Duration = .zero
    }
    private let state = Mutex(State())

    /// Records the start of a gradient computation.
    func started() {
        state.withLock { $0.running += 1 }
    }

    /// Records one gradient computation that started at `start` and ends now.
    func computed(since start: ContinuousClock.Instant) {
        let end = ContinuousClock.now
        state.withLock {
            $0.tasks += 1
            $0.compute += end - start
            if $0.first == nil { $0.first = start }
        }
    }

    /// Records that an answer was handed to the connection; handing it over started at `writing`.
    func answered(writingSince writing: ContinuousClock.Instant) {
        let now = ContinuousClock.now
        state.withLock {
            $0.writing += now - writing
            $0.last = now
            $0.running -= 1
            if $0.running == 0 { $0.idleSince = now }
        }
    }

    /// Records that a parameters message arrived (decoded).
    func parametersReceived() {
        let now = ContinuousClock.now
        state.withLock {
            if let idle = $0.idleSince, $0.running == 0 { $0.waitingForParameters += now - idle }
            $0.idleSince = nil
            $0.parametersAt = now
        }
    }

    /// Records that the network was rebuilt from the latest parameters.
    func networkRebuilt() {
        let now = ContinuousClock.now
        state.withLock {
            if let at = $0.parametersAt, $0.first != nil { $0.rebuilding += now - at }
            $0.parametersAt = nil
        }
    }

    func report(to logger: Logger, peer: String, threads: Int) {
        let s = state.withLock { $0 }
        guard let first = s.first, let last = s.last, s.tasks > 0 else { return }
        let span = (last - first).seconds
        let compute = s.compute.seconds
        func percent(_ part: Double) -> String { String(format: "%.1f", 100 * part / (span * Double(threads))) }
        logger.info("""
            session from \(peer): \(s.tasks) gradient task(s), \(String(format: "%.3f", compute)) s of gradient computation \
            in \(String(format: "%.3f", span)) s from the first to the last answer on \(threads) thread(s): \
            \(String(format: "%.1f", 100 * (1 - compute / (span * Double(threads)))))% outside gradient computation \
            (waiting for parameters \(percent(s.waitingForParameters.seconds))%, rebuilding the network \(percent(s.rebuilding.seconds))%, \
            handing answers to the connection \(percent(s.writing.seconds))%)
            """)
    }
}

extension Duration {
    /// The duration in seconds.
    var seconds: Double {
        let (s, a) = components
        return Double(s) + Double(a) * 1e-18
    }
}

/// Closes a connection on which nothing arrived for the read timeout of the
/// `IdleStateHandler` before it.
final class CloseWhenIdle: ChannelInboundHandler, Sendable {
    typealias InboundIn = ByteBuffer
    let logger: Logger
    let peer: String
    let timeout: TimeAmount

    init(logger: Logger, peer: String, timeout: TimeAmount) {
        self.logger = logger
        self.peer = peer
        self.timeout = timeout
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let idle = event as? IdleStateHandler.IdleStateEvent, idle == .read {
            logger.warning("nothing from \(peer) for \(timeout); ending the session")
            context.close(promise: nil)
            return
        }
        context.fireUserInboundEventTriggered(event)
    }
}
