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
    /// Where each session's gradient computations are appended (`worker --computation-log`).
    let computationLog: String?
    /// How long a new connection may take to send its hello.
    static let handshakeTimeout = TimeAmount.seconds(10)
    /// Data sets received in earlier sessions, by SHA-256.
    private var dataSets: [DatasetDigest: LabeledDataSet] = [:]
    /// Shapes (layer sizes, then the shard size) this process has warmed up on.
    private var warmedUp: Set<[Int]> = []
    /// Throwaway shard gradients computed by a warm-up.
    static let warmUpShards = 3

    init(blas: BLASRuntime.Report, parallelism: Int, logger: Logger, computationLog: String? = nil) {
        self.blas = blas
        self.parallelism = parallelism
        self.logger = logger
        self.computationLog = computationLog
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
                let timing = SessionTiming(keepingIntervals: computationLog != nil)
                defer {
                    timing.report(to: logger, peer: peer, threads: parallelism)
                    if let path = computationLog { timing.appendIntervals(to: path, peer: peer, logger: logger) }
                }
                // Answers go out through their own task, so that a computation slot is free
                // again as soon as its gradient is computed: the next task held starts at once
                // instead of after the answer has been handed to the connection.
                // Each answer with the number of training tasks it answers, and what to call once
                // it is handed to the connection.
                let (answers, answerSink) = AsyncStream.makeStream(of: (WireMessage, Int, (@Sendable () -> Void)?).self)
                let combiner = ShardCombiner()
                try await withThrowingTaskGroup(of: Void.self) { writers in
                    writers.addTask {
                        var failure: (any Error)?
                        for await (answer, trainingTasks, written) in answers {
                            defer { written?() }
                            // After a failed write, only release the computations that wait.
                            guard failure == nil else { continue }
                            do {
                                let writing = ContinuousClock.now
                                try await outbound.write(answer)
                                if trainingTasks > 0 { timing.answered(trainingTasks, writingSince: writing) }
                            } catch {
                                failure = error
                            }
                        }
                        if let failure { throw failure }
                    }
                    defer { answerSink.finish() }
                    // Children are computations (true) and gatherers (false); only the
                    // computations take a slot.
                    try await withThrowingTaskGroup(of: Bool.self) { group in
                        var running = 0
                        /// Tasks for the step after the latest parameters, held until its
                        /// parameters arrive; their samples are gathered meanwhile by a free
                        /// computation slot (`gatherings`).
                        var ahead: [(step: UInt64, job: Job)] = []
                        let gatherings = GatheringQueue(timing: timing)
                        func start(_ job: @escaping Job, on network: Network<Float>, isTraining: Bool) async throws {
                            while running == parallelism {
                                if try await group.next() == true { running -= 1 }
                            }
                            running += 1
                            if isTraining { timing.started() }
                            group.addTask {
                                // Nothing yet when the result waits for its sibling (`ShardCombiner`).
                                if let answer = job(network) {
                                    if gatherings.isEmpty {
                                        answerSink.yield((answer.message, answer.trainingTasks, nil))
                                    } else {
                                        // Samples to gather next: the answer, which the coordinator
                                        // waits for, goes to the connection first, rather than wait
                                        // for a core while this one gathers.
                                        await withCheckedContinuation { (written: CheckedContinuation<Void, Never>) in
                                            let result = answerSink.yield((answer.message, answer.trainingTasks, { written.resume() }))
                                            if case .terminated = result { written.resume() }
                                        }
                                    }
                                }
                                // The slot is free: gather the samples of tasks held ahead.
                                gatherings.gatherAll()
                                return true
                            }
                        }
                        /// Runs `body`; a WireError from it is sent to the coordinator, then
                        /// ends the session.
                        func reportingErrors<T>(_ body: () throws -> T) async throws -> T {
                            do {
                                return try body()
                            } catch let error as WireError {
                                try? await outbound.write(.error(ErrorReport(error)))
                                throw error
                            }
                        }
                        for try await message in inbound {
                            if case .task(let task) = message {
                                let job = try await reportingErrors {
                                    try self.prepare(task, session: session, gatherings: gatherings, combiner: combiner)
                                }
                                if self.isAhead(task, session: session) {
                                    ahead.append((task.step, job))
                                    if running < parallelism {
                                        // A slot is free: gather there now (a no-op if another
                                        // gatherer is at work; it takes these samples too).
                                        group.addTask { gatherings.gatherAll(); return false }
                                    }
                                } else {
                                    try await start(job, on: session.network!, isTraining: task.kind == .train)
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
                            let replies = try await reportingErrors { try handle(message, session: &session) }
                            if let data = session.warmUpOn {
                                session.warmUpOn = nil
                                await warmUp(on: data, session: session)
                            }
                            for reply in replies { try await outbound.write(reply) }
                            if case .parameters = message {
                                timing.networkRebuilt()
                                // The tasks held for this step start now; those for the next step
                                // (evaluation parameters come between two steps) wait on.
                                let held = ahead
                                ahead = held.filter { $0.step == session.step &+ 1 }
                                // Their samples not gathered yet are gathered by their own
                                // computations: a gatherer stops after the samples at hand
                                // rather than hold back the first computation.
                                if held.contains(where: { $0.step == session.step }) { gatherings.yieldToComputations() }
                                for (step, job) in held where step == session.step {
                                    try await start(job, on: session.network!, isTraining: true)
                                }
                            }
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
        /// Samples per training task, as the hello announced it (for the warm-up).
        var shardSize: Int?
        /// A training set just made active: the worker warms up on it before it says it is
        /// ready.
        var warmUpOn: LabeledDataSet?
    }

    func handle(_ message: WireMessage, session: inout Session) throws -> [WireMessage] {
        switch message {
        case .hello(let hello):
            session.signature = hello.signature
            session.shardSize = hello.shardSize
            let name = ProcessInfo.processInfo.hostName + ":\(getpid())"
            return [.helloAck(HelloAck(answering: hello, workerName: name, blasKernel: blas.coreName,
                                       threadCount: parallelism))]
        case .datasetOffer(let descriptor):
            try checkFitsModel(descriptor, session)
            let held = dataSets[descriptor.digest]
            if let held {
                session.active[descriptor.kind] = descriptor.digest
                if descriptor.kind == .train { session.warmUpOn = held }
            }
            return [.datasetStatus(DatasetStatus(kind: descriptor.kind, digest: descriptor.digest,
                                                 state: held != nil ? .ready : .missing))]
        case .dataset(let transfer):
            let d = transfer.descriptor
            try checkFitsModel(d, session)
            let data = try LabeledDataSet(rows: 1, columns: d.featureCount, pixels: transfer.images,
                                          labels: transfer.labels, classCount: d.classCount,
                                          source: "\(d.kind) data set from the coordinator")
            // Index the nonzero pixels now, before the first step, rather than in its first shard.
            _ = data.sparsePixels
            dataSets[d.digest] = data
            session.active[d.kind] = d.digest
            logger.info("received \(d.kind) data set: \(d.sampleCount) samples, \(d.digest)")
            if d.kind == .train { session.warmUpOn = data }
            return [.datasetStatus(DatasetStatus(kind: d.kind, digest: d.digest, state: .ready))]
        case .parameters(let update):
            guard let signature = session.signature else { return [] }
            session.network = update.parameterValues.withUnsafeBufferPointer {
                Network(sizes: signature.layerSizes, flattened: $0)
            }
            session.step = update.step
            return []
        case .task(let task):
            guard let network = session.network, !isAhead(task, session: session) else {
                throw WireError.unexpectedMessage(.task, "a task for step \(task.step) arrived, but the latest parameters are for step \(session.step)")
            }
            return [try prepare(task, session: session)(network)!.message]
        case .ping(let n):
            return [.pong(n)]
        case .goodbye, .error, .helloAck, .datasetStatus, .gradient, .evaluation, .pong:
            return []
        }
    }

    /// Computes a few throwaway shard gradients of the session's shape (random parameters, the
    /// data set's first samples), once per process and shape, before the worker reports its
    /// training set ready. A fresh process otherwise pays in its first shards for mapping some
    /// tens of megabytes of heap and for cold code and caches: the first step took ~25 ms
    /// longer than the others. Benchmarks of other systems skip their first iterations for the
    /// same reason; here the cost moves to the session's start.
    ///
    /// Shards run on the threads of Swift's cooperative pool, one per core, and a thread's
    /// first shards are slow however warm the process is (OpenBLAS's packing buffers and the
    /// Engine's scratch space are per thread): so the warm-up runs on all of them at once, as
    /// many concurrent tasks as the pool has threads, each holding its thread throughout.
    private func warmUp(on data: LabeledDataSet, session: Session) async {
        guard let sizes = session.signature?.layerSizes, sizes.first == data.featureCount,
              let shardSize = session.shardSize.map({ min($0, data.count) }), shardSize > 0,
              warmedUp.insert(sizes + [shardSize]).inserted else { return }
        let started = ContinuousClock.now
        var generator = SeededGenerator(seed: 1)
        let network = Network<Float>(sizes: sizes, using: &generator)
        let threads = Self.poolThreads
        await withTaskGroup(of: Void.self) { group in
            for thread in 0..<threads {
                group.addTask {
                    for k in 0..<Self.warmUpShards {
                        let first = (thread * Self.warmUpShards + k) * shardSize
                        let indices = (0..<shardSize).map { (first + $0) % data.count }
                        _ = ShardResult.compute(network, on: data, indices: indices).gradient.flattened()
                    }
                }
            }
        }
        logger.info("warmed up: \(Self.warmUpShards) shard gradients of \(shardSize) samples on each of \(threads) thread(s) in \(ContinuousClock.now - started)")
    }

    /// Threads of Swift's cooperative pool on Linux: one per active core.
    static var poolThreads: Int { max(1, ProcessInfo.processInfo.activeProcessorCount) }

    /// Refuses a data set the session's model cannot read: samples of another size than its
    /// inputs, or more classes than its outputs (a task on it would stop the worker).
    private func checkFitsModel(_ descriptor: DatasetDescriptor, _ session: Session) throws {
        guard let sizes = session.signature?.layerSizes, let inputs = sizes.first, let outputs = sizes.last else {
            throw WireError.unexpectedMessage(.datasetOffer, "a data set arrived before the hello")
        }
        guard descriptor.featureCount == inputs else {
            throw WireError.shapeMismatch("\(descriptor.kind) data set", expected: "\(inputs) values per sample (the model's inputs)",
                                          actual: "\(descriptor.featureCount) values per sample")
        }
        guard descriptor.classCount <= outputs else {
            throw WireError.shapeMismatch("\(descriptor.kind) data set", expected: "at most \(outputs) classes (the model's outputs)",
                                          actual: "\(descriptor.classCount) classes")
        }
    }

    /// The work that answers a task, given the network of the task's step.
    typealias Job = @Sendable (Network<Float>) -> (message: WireMessage, trainingTasks: Int)?

    /// Whether `task` is a training task for the step after the session's latest parameters:
    /// the coordinator sends a worker its next tasks as soon as it has answered all it held, and
    /// the worker gathers their samples while the step's parameters are being made (it computes
    /// them when those arrive).
    func isAhead(_ task: ShardTask, session: Session) -> Bool {
        task.kind == .train && session.network != nil && task.step == session.step &+ 1
    }

    /// Checks a task against the session and returns the work that answers it. A task for the
    /// next step (`isAhead`) has its samples gathered by the first free computation slot
    /// (`gatherings`), or else by its own computation.
    ///
    /// With a `combiner`, a training task's result may wait for its sibling's (the job then
    /// returns nil) and the answer may be the sum of several tasks.
    func prepare(_ task: ShardTask, session: Session, gatherings: GatheringQueue? = nil,
                 combiner: ShardCombiner? = nil) throws -> Job {
        guard session.network != nil else {
            throw WireError.unexpectedMessage(.task, "a task arrived before any parameters")
        }
        let ahead = isAhead(task, session: session)
        guard task.step == session.step || ahead else {
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
            combiner?.hold(step: task.step, shard: task.shardID)
            @Sendable func answer(_ result: consuming ShardResult<Float>) -> (message: WireMessage, trainingTasks: Int)? {
                let node: ShardCombiner.Node
                if let combiner {
                    guard let completed = combiner.complete(step: task.step, shard: task.shardID, result) else { return nil }
                    node = completed
                } else {
                    node = ShardCombiner.Node(first: task.shardID, count: 1, result: result)
                }
                return (.gradient(GradientResult(step: task.step, shardID: node.first, shardCount: node.count,
                                                 sampleCount: node.sampleCount, lossSum: node.lossSum, correctCount: node.correct,
                                                 gradientValues: WireFloats(count: node.parameterCount) { node.flatten(into: $0) })),
                        Int(node.count))
            }
            let timing = gatherings?.timing
            if ahead, let gatherings {
                let samples = SampleGathering { ShardResult<Float>.Input(data, indices: indices) }
                gatherings.add(samples)
                return { network in
                    let started = ContinuousClock.now
                    let result = ShardResult.compute(network, on: samples.input())
                    timing?.computed(since: started)
                    return answer(result)
                }
            }
            return { network in
                let started = ContinuousClock.now
                let result = ShardResult.compute(network, on: data, indices: indices)
                timing?.computed(since: started)
                return answer(result)
            }
        case .evaluate:
            return { network in
                let e = Evaluation.evaluate(network, on: data, indices: indices)
                return (.evaluation(EvaluationResult(step: task.step, shardID: task.shardID, sampleCount: e.count,
                                                     lossSum: e.lossSum, correctCount: e.correct)), 0)
            }
        }
    }
}

/// A held task's samples, gathered once: by a computation slot that is free before the task's
/// parameters arrive (`GatheringQueue`), or else by the task's own computation.
final class SampleGathering: Sendable {
    private let gather: @Sendable () -> ShardResult<Float>.Input
    private let gathered = Mutex<ShardResult<Float>.Input?>(nil)

    init(_ gather: @escaping @Sendable () -> ShardResult<Float>.Input) {
        self.gather = gather
    }

    /// The samples, gathered now if no one has yet.
    func input() -> ShardResult<Float>.Input {
        gathered.withLock { stored in
            if let stored { return stored }
            let input = gather()
            stored = input
            return input
        }
    }

    /// Whether the samples have been gathered.
    var isGathered: Bool { gathered.withLock { $0 != nil } }
}

/// The samples of held tasks not gathered yet, for the next free computation slot.
///
/// One gatherer at a time: a computation slot that has just become free, or a task of its own
/// when tasks arrive while a slot is free. When the held tasks' parameters arrive, the queue
/// is emptied (`yieldToComputations`): the gatherer stops after the samples at hand, so that
/// the first held task starts at once on a worker with one core per slot, and the other held
/// tasks gather their own samples when they start.
final class GatheringQueue: Sendable {
    let timing: SessionTiming?
    private struct State {
        var waiting: [SampleGathering] = []
        /// A gatherer is at work (it takes every sample set added meanwhile).
        var gathering = false
    }
    private let state = Mutex(State())

    init(timing: SessionTiming?) {
        self.timing = timing
    }

    /// Whether no samples wait to be gathered.
    var isEmpty: Bool { state.withLock { $0.waiting.isEmpty } }

    /// Queues a held task's samples.
    func add(_ samples: SampleGathering) {
        state.withLock { $0.waiting.append(samples) }
    }

    /// Gathers no more ahead: the held tasks' computations, about to start, gather what is left.
    func yieldToComputations() {
        state.withLock { $0.waiting.removeAll() }
    }

    /// Gathers the waiting tasks' samples, in the order they came, until none is left; timed
    /// as gradient work. Returns at once if another gatherer is at work (it takes them).
    func gatherAll() {
        let first = state.withLock { s in
            if s.gathering { return false }
            s.gathering = true
            return true
        }
        guard first else { return }
        while let samples = state.withLock({ s -> SampleGathering? in
            if s.waiting.isEmpty {
                s.gathering = false
                return nil
            }
            return s.waiting.removeFirst()
        }) {
            guard !samples.isGathered else { continue }
            let started = ContinuousClock.now
            _ = samples.input()
            timing?.gathered(since: started)
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
///
/// With `keepingIntervals` it also keeps every computation's start and end on the host's
/// monotonic clock, which `worker --computation-log` appends to a file at the end of the
/// session: with the logs of all the workers of a host, a benchmark finds when none of them
/// was computing (`bench/outside.sh`).
final class SessionTiming: Sendable {
    /// What a logged interval was spent on.
    enum IntervalKind: String, Sendable {
        /// Forward and backward on a shard (`ShardResult.compute`).
        case gradient
        /// Gathering a held task's samples before its parameters arrived.
        case gather
    }
    /// At most this many intervals are kept per session (about 24 MB); later ones are counted, not kept.
    static let intervalLimit = 1_000_000

    private struct State {
        var intervals: [(kind: IntervalKind, start: Int64, end: Int64)] = []
        var droppedIntervals = 0
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
    private let keepsIntervals: Bool

    init(keepingIntervals: Bool = false) {
        keepsIntervals = keepingIntervals
    }

    /// Keeps an interval that ended at `end` and lasted `duration` (with the state locked).
    private func keep(_ kind: IntervalKind, lasting duration: Duration, endingAt end: Int64, in s: inout State) {
        guard keepsIntervals else { return }
        guard s.intervals.count < Self.intervalLimit else {
            s.droppedIntervals += 1
            return
        }
        let (seconds, attoseconds) = duration.components
        s.intervals.append((kind, end - (seconds * 1_000_000_000 + attoseconds / 1_000_000_000), end))
    }

    /// Records the start of a gradient computation.
    func started() {
        state.withLock { $0.running += 1 }
    }

    /// Records the gathering of a shard's samples ahead of its parameters (part of computing
    /// its gradient), which started at `start` and ends now.
    func gathered(since start: ContinuousClock.Instant) {
        let end = ContinuousClock.now
        let endNanoseconds = keepsIntervals ? monotonicNanoseconds() : 0
        state.withLock {
            keep(.gather, lasting: end - start, endingAt: endNanoseconds, in: &$0)
            $0.compute += end - start
            if $0.first == nil { $0.first = start }
            // Not waiting for parameters meanwhile.
            if let idle = $0.idleSince, $0.running == 0 { $0.idleSince = idle + (end - start) }
        }
    }

    /// Records one gradient computation that started at `start` and ends now.
    func computed(since start: ContinuousClock.Instant) {
        let end = ContinuousClock.now
        let endNanoseconds = keepsIntervals ? monotonicNanoseconds() : 0
        state.withLock {
            keep(.gradient, lasting: end - start, endingAt: endNanoseconds, in: &$0)
            $0.tasks += 1
            $0.compute += end - start
            if $0.first == nil { $0.first = start }
        }
    }

    /// Records that an answer was handed to the connection; handing it over started at `writing`.
    func answered(_ tasks: Int, writingSince writing: ContinuousClock.Instant) {
        let now = ContinuousClock.now
        state.withLock {
            $0.writing += now - writing
            $0.last = now
            $0.running -= tasks
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

extension SessionTiming {
    /// Appends the session's intervals to the file at `path` (made if missing): a line
    /// `# session from PEER`, then one line per computation, `KIND START END`, KIND `gradient`
    /// or `gather`, START and END in nanoseconds of the host's monotonic clock
    /// (`CLOCK_MONOTONIC`). A file that cannot be written costs a warning, not the session.
    func appendIntervals(to path: String, peer: String, logger: Logger) {
        let (intervals, dropped) = state.withLock { ($0.intervals, $0.droppedIntervals) }
        var text = "# session from \(peer)\n"
        text.reserveCapacity(40 * intervals.count + 40)
        for interval in intervals { text += "\(interval.kind.rawValue) \(interval.start) \(interval.end)\n" }
        if dropped > 0 { text += "# \(dropped) more intervals not kept (over \(Self.intervalLimit))\n" }
        do {
            try Self.openLog(path).write(contentsOf: Data(text.utf8))
        } catch {
            logger.warning("cannot write the computation log \(path): \(error)")
        }
    }

    /// The computation log at `path`, opened for appending (made if missing).
    static func openLog(_ path: String) throws -> FileHandle {
        let fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw SessionTimingLogError(reason: String(cString: strerror(errno))) }
        return FileHandle(fileDescriptor: fd, closeOnDealloc: true)
    }
}

/// Why the computation log cannot be opened.
struct SessionTimingLogError: Error, CustomStringConvertible {
    var reason: String
    var description: String { reason }
}

/// Now on the host's monotonic clock, in nanoseconds (the clock of `--computation-log`).
func monotonicNanoseconds() -> Int64 {
    var now = timespec()
    clock_gettime(CLOCK_MONOTONIC, &now)
    return Int64(now.tv_sec) * 1_000_000_000 + Int64(now.tv_nsec)
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
