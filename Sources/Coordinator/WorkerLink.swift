import Foundation
import NIOCore
import NIOPosix
import Wire

/// What the connections to the workers report to the training loop.
enum WorkerEvent: Sendable {
    /// Worker `worker` finished its handshake and holds the data sets.
    case ready(worker: Int, HelloAck)
    /// A message from worker `worker`.
    case message(worker: Int, WireMessage)
    /// Time passes (once a second): lets the loop notice a worker that stopped answering.
    case tick
    /// The connection to worker `worker` ended.
    case closed(worker: Int, reason: String)
}

/// One connection to a worker: dials it, does the handshake and the data-set exchange, then
/// forwards what it receives as `WorkerEvent`s and writes what the loop sends it.
struct WorkerLink: Sendable {
    let index: Int
    let address: String
    /// How the connection is protected (a shared secret, or none).
    let security: WireSecurity
    private let channel = ChannelHolder()
    let outbox: AsyncStream<WireMessage>.Continuation
    private let outboxStream: AsyncStream<WireMessage>

    init(index: Int, address: String, security: WireSecurity = .none) {
        self.index = index
        self.address = address
        self.security = security
        (outboxStream, outbox) = AsyncStream.makeStream(of: WireMessage.self)
    }

    /// How long the handshake and the data-set exchange may take.
    static let handshakeTimeout = TimeAmount.seconds(60)

    /// Sends `message` to the worker (queued; written in order).
    func send(_ message: WireMessage) { outbox.yield(message) }

    /// Closes the connection (a worker given up on); its `run` then ends.
    func close() { channel.close() }

    /// Runs the connection until it ends, reporting to `events`.
    func run(hello: Hello, dataSets: [DatasetTransfer], counter: ByteCounter,
             events: AsyncStream<WorkerEvent>.Continuation) async {
        do {
            guard let colon = address.lastIndex(of: ":"), let port = Int(address[address.index(after: colon)...]) else {
                throw CoordinatorError("worker address '\(address)' is not HOST:PORT")
            }
            let host = String(address[..<colon])
            let channel: NIOAsyncChannel<WireMessage, WireMessage>
            do {
                channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                    .channelOption(.socketOption(.tcp_nodelay), value: 1)
                    .connectTimeout(.seconds(5))
                    .connect(host: host, port: port) { channel in
                        channel.eventLoop.makeCompletedFuture {
                            try channel.pipeline.syncOperations.addHandler(counter)
                            try WirePipeline.configure(channel, role: .coordinator, security: security)
                            return try NIOAsyncChannel<WireMessage, WireMessage>(wrappingChannelSynchronously: channel)
                        }
                    }
            } catch {
                throw CoordinatorError("cannot reach worker \(address): \(error) (is `worker --listen \(address)` running there, and the port open?)")
            }
            // A worker that accepts the connection but never answers the handshake (a busy or
            // stuck process) is given up after the deadline instead of hanging the run.
            let raw = channel.channel
            self.channel.set(raw)
            let deadline = raw.eventLoop.scheduleTask(in: Self.handshakeTimeout) { raw.close(promise: nil) }
            try await channel.executeThenClose { inbound, outbound in
                var messages = inbound.makeAsyncIterator()
                func next() async throws -> WireMessage {
                    guard let m = try await messages.next() else {
                        throw CoordinatorError("worker \(address) closed the connection during the handshake, or did not finish it within \(Self.handshakeTimeout) (is it serving another coordinator?)")
                    }
                    if case .error(let report) = m { throw CoordinatorError("worker \(address) refused: \(report)") }
                    return m
                }
                try await outbound.write(.hello(hello))
                guard case .helloAck(let ack) = try await next() else {
                    throw CoordinatorError("worker \(address) did not answer the handshake")
                }
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
                events.yield(.ready(worker: index, ack))
                try await withThrowingTaskGroup(of: Void.self) { group in
                    group.addTask {
                        for await message in outboxStream {
                            try await outbound.write(message)
                            if case .goodbye = message { return }
                        }
                    }
                    while let m = try await messages.next() {
                        events.yield(.message(worker: index, m))
                    }
                    group.cancelAll()
                }
            }
            events.yield(.closed(worker: index, reason: "connection ended"))
        } catch {
            events.yield(.closed(worker: index, reason: "\(error)"))
        }
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

/// The channel of a link, once connected, so that the training loop can close it.
final class ChannelHolder: @unchecked Sendable {
    private let lock = NSLock()
    private var channel: Channel?
    private var closed = false

    func set(_ channel: Channel) {
        let closeNow = lock.withLock { () -> Bool in
            self.channel = channel
            return closed
        }
        if closeNow { channel.close(promise: nil) }
    }

    func close() {
        let channel = lock.withLock { () -> Channel? in
            closed = true
            return self.channel
        }
        channel?.close(promise: nil)
    }
}
