import Foundation
import Synchronization
import NIOCore
import NIOPosix
import Wire

/// What the connections to the workers report to the training loop.
///
/// `connection` numbers the successive connections of one link (a worker that is lost and
/// reconnected gets a new number), so that the loop can tell a new session from a late
/// message of an old one. For one link the events come in order: a connection's messages,
/// then its `closed`, then the next connection's `ready`.
enum WorkerEvent: Sendable {
    /// Worker `worker` finished its handshake and holds the data sets.
    case ready(worker: Int, connection: Int, HelloAck)
    /// A message from worker `worker`.
    case message(worker: Int, connection: Int, WireMessage)
    /// Time passes (a few times a second): lets the loop notice a worker that stopped answering.
    case tick
    /// A connection to worker `worker` ended, or an attempt to make one failed.
    case closed(worker: Int, connection: Int, reason: String)
}

/// One worker, as the coordinator sees it: dials it, does the handshake and the data-set
/// exchange, then forwards what it receives as `WorkerEvent`s and writes what the loop sends
/// it, with a heartbeat `ping` every ``heartbeatInterval``. When the connection ends (or cannot
/// be made) it dials again with exponential backoff, until ``stop()``.
final class WorkerLink: Sendable {
    let index: Int
    let address: String
    /// How the connection is protected (a shared secret, or none).
    let security: WireSecurity
    /// Whether the parameters sent are compressed.
    let compression: CompressionPolicy
    /// Whether parameters and gradients may pass through shared memory with a worker on this host.
    let sharedMemory: SharedMemoryPolicy
    private let state = Mutex(State())

    private struct State {
        var connection = 0
        var outbox: AsyncStream<[WireMessage]>.Continuation?
        var channel: Channel?
        var stopped = false
        /// The worker refused for a reason dialling again cannot mend; the link has ended.
        var refusedForGood = false
        /// The next dial waits the longest backoff (the worker was given up on for a stuck task).
        var holdingOff = false
        /// Why a message could not be written on the current connection, which was then closed.
        var writeFailure: String?
    }

    init(index: Int, address: String, security: WireSecurity = .none, compression: CompressionPolicy = .auto,
         sharedMemory: SharedMemoryPolicy = .off) {
        self.sharedMemory = sharedMemory
        self.index = index
        self.address = address
        self.security = security
        self.compression = compression
    }

    /// How long a worker may take to answer the hello.
    static let helloTimeout = TimeAmount.seconds(10)
    /// How long the data-set exchange that follows may take.
    static let dataSetTimeout = TimeAmount.seconds(300)
    /// Pings on an established connection; any message from the worker shows it is alive.
    static let heartbeatInterval = Duration.milliseconds(500)
    /// Waits between attempts to reach the worker: doubling from the first to the last.
    static let backoff = (first: 0.25, last: 5.0)

    /// Sends `messages` on connection `connection`, once its handshake is over (written in
    /// order, flushed together: a step's parameters and first tasks leave in one write). Dropped
    /// if that connection is no longer the current one: a new session first needs new
    /// parameters. The messages go to the channel's event loop at once, not through the link's
    /// task (one thread hand-off less for every step's parameters); a failed write ends the
    /// connection, which its reading side reports.
    func send(_ messages: [WireMessage], connection: Int) {
        let channel = state.withLock { s in s.connection == connection && s.outbox != nil ? s.channel : nil }
        guard let channel, !messages.isEmpty else { return }
        channel.eventLoop.execute {
            for message in messages {
                let written = channel.eventLoop.makePromise(of: Void.self)
                written.futureResult.whenFailure { [self] error in
                    // A message that cannot be encoded (or a connection already gone): the
                    // session cannot go on without it, so the connection ends, saying why.
                    state.withLock { s in
                        if s.connection == connection, s.writeFailure == nil, channel.isActive {
                            s.writeFailure = "a \(message.type) message could not be written: \(Self.describe(error))"
                        }
                    }
                    channel.close(promise: nil)
                }
                channel.write(message, promise: written)
            }
            channel.flush()
        }
    }

    /// Closes connection `connection` if it is still the current one (a worker given up on);
    /// the link then dials again.
    func close(connection: Int) {
        let channel = state.withLock { s in s.connection == connection ? s.channel : nil }
        channel?.close(promise: nil)
    }

    /// Ends the link: says goodbye on the current connection, dials no more, and closes the
    /// connection after `grace` (a worker that is stopped or gone never closes its side).
    func stop(reason: String, grace: Duration = .seconds(2)) {
        let (outbox, channel) = state.withLock { s in
            s.stopped = true
            defer { s.outbox = nil }
            return (s.outbox, s.channel)
        }
        outbox?.yield([.goodbye(reason: reason)])
        outbox?.finish()
        guard let channel else { return }
        Task {
            try? await Task.sleep(for: grace)
            try? await channel.close()
        }
    }

    /// Makes the next dial, after the current connection ends, wait the longest backoff
    /// rather than the shortest: for a worker whose computation is stuck while its connection
    /// lives, so that it does not get tasks again at once.
    func holdOff() {
        state.withLock { $0.holdingOff = true }
    }

    private var isStopped: Bool { state.withLock { $0.stopped } }

    /// Whether the worker refused for a reason dialling again cannot mend (wrong secret,
    /// protocol version or model): the link has given up on it.
    var refusedForGood: Bool { state.withLock { $0.refusedForGood } }

    /// Runs the link until it is stopped or its task cancelled, reporting to `events`.
    func run(hello: Hello, dataSets: [DatasetTransfer], counter: ByteCounter,
             events: AsyncStream<WorkerEvent>.Continuation) async {
        var wait = Self.backoff.first
        while !isStopped && !Task.isCancelled {
            let connection = state.withLock { s in
                s.connection += 1
                s.channel = nil
                s.outbox = nil
                s.writeFailure = nil
                return s.connection
            }
            var established = false
            do {
                try await connect(connection, hello: hello, dataSets: dataSets, counter: counter, events: events) {
                    established = true
                }
                let failure = state.withLock { $0.writeFailure }
                events.yield(.closed(worker: index, connection: connection, reason: failure ?? "the worker closed the connection"))
            } catch {
                if Self.isPermanent(error) {
                    // Dialling again cannot help: the secret, the protocol version or the model
                    // differ. The link gives up on this worker for the rest of the run.
                    state.withLock { $0.refusedForGood = true }
                    events.yield(.closed(worker: index, connection: connection,
                                         reason: Self.describe(error) + " (not retried: fix the configuration and start the run again)"))
                    return
                }
                events.yield(.closed(worker: index, connection: connection, reason: Self.describe(error)))
            }
            state.withLock { s in
                s.outbox?.finish()
                s.outbox = nil
                s.channel = nil
            }
            if established { wait = Self.backoff.first }
            if state.withLock({ s in defer { s.holdingOff = false }; return s.holdingOff }) { wait = Self.backoff.last }
            guard !isStopped else { return }
            do { try await Task.sleep(for: .seconds(wait)) } catch { return }
            wait = min(wait * 2, Self.backoff.last)
        }
    }

    /// Opens a connection to the worker, with the protocol's handlers installed.
    private func dial(counter: ByteCounter?) async throws -> NIOAsyncChannel<WireMessage, WireMessage> {
        guard let colon = address.lastIndex(of: ":"), let port = Int(address[address.index(after: colon)...]) else {
            throw CoordinatorError("worker address '\(address)' is not HOST:PORT")
        }
        let host = String(address[..<colon])
        let security = self.security, sharedMemory = self.sharedMemory
        let codec = compression.configuration(peerIsLoopback: isLoopbackHost(host))
        do {
            return try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                .channelOption(.socketOption(.tcp_nodelay), value: 1)
                .connectTimeout(.seconds(5))
                .connect(host: host, port: port) { channel in
                    channel.eventLoop.makeCompletedFuture {
                        if let counter { try channel.pipeline.syncOperations.addHandler(counter) }
                        try WirePipeline.configure(channel, role: .coordinator, compression: codec, security: security,
                                                   sharedMemory: sharedMemory)
                        try channel.pipeline.syncOperations.addHandler(EventForwarder())
                        return try NIOAsyncChannel<WireMessage, WireMessage>(wrappingChannelSynchronously: channel)
                    }
                }
        } catch {
            throw CoordinatorError("cannot reach worker \(address): \(Self.describe(connectionError: error)) (is `worker --listen \(address)` running there, and the port open?)")
        }
    }

    /// Whether a failure comes from the configuration of the two sides, so that trying again
    /// cannot succeed.
    static func isPermanent(_ error: Error) -> Bool {
        let code: ErrorCode
        if let refusal = error as? WorkerRefusal {
            code = refusal.report.code
        } else if let wire = error as? WireError {
            code = wire.code
        } else {
            return false
        }
        return [.authenticationFailed, .handshakeMismatch, .unsupportedVersion, .invalidModel, .badMagic].contains(code)
    }

    /// Why a connection ended, in a few words.
    static func describe(_ error: Error) -> String {
        if let io = error as? IOError { return String(cString: strerror(io.errnoCode)).lowercased() }
        if let wire = error as? WireError { return "\(wire)" }
        return "\(error)"
    }

    /// A connection failure in a few words.
    static func describe(connectionError error: Error) -> String {
        if let failure = error as? NIOConnectionError {
            if failure.connectionErrors.isEmpty {
                return "the host name does not resolve (\(failure.host))"
            }
            return failure.connectionErrors.map { attempt in
                let reason: String
                if let io = attempt.error as? IOError {
                    switch io.errnoCode {
                    case ECONNREFUSED: reason = "connection refused: nothing listens on that port"
                    case EHOSTUNREACH, ENETUNREACH: reason = "no route to the host"
                    case ETIMEDOUT: reason = "timed out"
                    default: reason = String(cString: strerror(io.errnoCode))
                    }
                } else if attempt.error is ChannelError {
                    reason = "timed out after 5 s"
                } else {
                    reason = "\(attempt.error)"
                }
                return failure.connectionErrors.count == 1 ? reason : "\(attempt.target.ipAddress ?? "\(attempt.target)"): \(reason)"
            }.joined(separator: "; ")
        }
        if case ChannelError.connectTimeout = error { return "no answer within 5 s" }
        return "\(error)"
    }

    /// Checks the worker without training: dials it, does the handshake (protocol version and
    /// model), and says goodbye. Returns its answer and the round-trip time in seconds.
    func probe(hello: Hello) async throws -> (HelloAck, Double) {
        let started = ContinuousClock.now
        let channel = try await dial(counter: nil)
        let raw = channel.channel
        let deadline = raw.eventLoop.scheduleTask(in: Self.helloTimeout) { raw.close(promise: nil) }
        defer { deadline.cancel() }
        return try await channel.executeThenClose { inbound, outbound in
            try await outbound.write(.hello(hello))
            var messages = inbound.makeAsyncIterator()
            switch try await messages.next() {
            case .helloAck(let ack)?:
                let seconds = (ContinuousClock.now - started).seconds
                try? await outbound.write(.goodbye(reason: "checked by coordinator --dry-run"))
                return (ack, seconds)
            case .error(let report)?:
                throw WorkerRefusal(address: address, report: report)
            case let other?:
                throw CoordinatorError("worker \(address) answered the hello with \(other.type)")
            case nil:
                throw CoordinatorError("worker \(address) closed the connection without answering within \(Self.helloTimeout) (is it stopped, or serving another coordinator?)")
            }
        }
    }

    /// One connection: dial, handshake, data sets, then messages until it ends.
    private func connect(_ connection: Int, hello: Hello, dataSets: [DatasetTransfer], counter: ByteCounter,
                         events: AsyncStream<WorkerEvent>.Continuation, onEstablished: () -> Void) async throws {
        let channel = try await dial(counter: counter)
        let raw = channel.channel
        let stoppedMeanwhile = state.withLock { s in
            if s.connection == connection { s.channel = raw }
            return s.stopped
        }
        if stoppedMeanwhile { try? await raw.close() }
        // A worker that accepts the connection but does not answer (a stopped process, or one
        // still serving an old session) is given up after the deadline instead of hanging.
        var deadline = raw.eventLoop.scheduleTask(in: Self.helloTimeout) { raw.close(promise: nil) }
        defer { deadline.cancel() }
        try await channel.executeThenClose { inbound, outbound in
            var messages = inbound.makeAsyncIterator()
            func next() async throws -> WireMessage {
                guard let m = try await messages.next() else {
                    throw CoordinatorError("worker \(address) closed the connection during the handshake, or did not answer within the deadline (is it stopped, or serving another coordinator?)")
                }
                if case .error(let report) = m { throw WorkerRefusal(address: address, report: report) }
                return m
            }
            try await outbound.write(.hello(hello))
            guard case .helloAck(let ack) = try await next() else {
                throw CoordinatorError("worker \(address) did not answer the handshake")
            }
            deadline.cancel()
            deadline = raw.eventLoop.scheduleTask(in: Self.dataSetTimeout) { raw.close(promise: nil) }
            for transfer in dataSets {
                try await outbound.write(.datasetOffer(transfer.descriptor))
                guard case .datasetStatus(let status) = try await next() else {
                    throw CoordinatorError("worker \(address) did not answer the data-set offer")
                }
                if status.state == .missing {
                    try await outbound.write(.dataset(transfer))
                    guard case .datasetStatus(let s) = try await next(), s.state == .ready else {
                        throw CoordinatorError("worker \(address) did not accept the \(transfer.descriptor.kind) data set")
                    }
                }
            }
            deadline.cancel()
            let (outboxStream, outbox) = AsyncStream.makeStream(of: [WireMessage].self)
            let current = state.withLock { s in
                guard s.connection == connection, !s.stopped else { return false }
                s.outbox = outbox
                return true
            }
            guard current else { return }
            // From now on the session's messages go from the event loop straight to the run's
            // events, not through this task (one thread hand-off less for every answer). The
            // handshake is over and the worker sends nothing unasked, so nothing is waiting in
            // `messages` to be overtaken; the loop below still forwards whatever comes that way,
            // and ends when the connection does.
            let forwarder = try await raw.pipeline.handler(type: EventForwarder.self).get()
            let index = self.index
            try await raw.eventLoop.submit {
                forwarder.forward { events.yield(.message(worker: index, connection: connection, $0)) }
            }.get()
            onEstablished()
            events.yield(.ready(worker: index, connection: connection, ack))
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask {
                    for await messages in outboxStream {
                        try await outbound.write(contentsOf: messages)
                        if messages.contains(where: { if case .goodbye = $0 { true } else { false } }) { return }
                    }
                }
                group.addTask {
                    var nonce: UInt64 = 0
                    while true {
                        try await Task.sleep(for: Self.heartbeatInterval)
                        nonce += 1
                        outbox.yield([.ping(nonce)])
                    }
                }
                while let m = try await messages.next() {
                    events.yield(.message(worker: index, connection: connection, m))
                }
                group.cancelAll()
            }
        }
    }
}

/// The last inbound handler of a coordinator's connection: passes messages on to the
/// `NIOAsyncChannel` until its link has finished the handshake, then hands each one to a
/// callback on the event loop (the link yields it to the run's events), so that an answer
/// reaches the training loop without waking the link's task first. Touched on the channel's
/// event loop only.
final class EventForwarder: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = WireMessage
    typealias InboundOut = WireMessage

    private var deliver: (@Sendable (WireMessage) -> Void)?

    /// Hands every message read from now on to `deliver` (call on the event loop).
    func forward(to deliver: @escaping @Sendable (WireMessage) -> Void) {
        self.deliver = deliver
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard let deliver else { return context.fireChannelRead(data) }
        deliver(unwrapInboundIn(data))
    }
}

/// Counts the bytes a channel sends and receives (for the metrics).
final class ByteCounter: ChannelDuplexHandler, @unchecked Sendable {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private let lock = NSLock()
    private var sent = 0
    private var received = 0

    /// Bytes sent and received since the last call.
    func take() -> (sent: Int, received: Int) {
        lock.withLock {
            defer { sent = 0; received = 0 }
            return (sent, received)
        }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let n = unwrapInboundIn(data).readableBytes
        lock.withLock { received += n }
        context.fireChannelRead(data)
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        let n = unwrapOutboundIn(data).readableBytes
        lock.withLock { sent += n }
        context.write(data, promise: promise)
    }
}

/// A worker's error message in answer to the handshake.
struct WorkerRefusal: Error, CustomStringConvertible {
    var address: String
    var report: ErrorReport
    var description: String { "worker \(address) refused: \(report)" }
}
