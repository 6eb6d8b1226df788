import NIOCore

/// Which end of a connection a pipeline serves.
public enum SessionRole: Sendable, CustomStringConvertible {
    /// Dials workers, sends hello, data sets, parameters and tasks.
    case coordinator
    /// Listens, answers hello, computes tasks.
    case worker

    public var description: String { self == .coordinator ? "coordinator" : "worker" }

    /// The role at the other end.
    public var peer: SessionRole { self == .coordinator ? .worker : .coordinator }

    func maySend(_ type: MessageType) -> Bool {
        switch type.sender {
        case .either: return true
        case .coordinator: return self == .coordinator
        case .worker: return self == .worker
        }
    }
}

/// Turns frames into ``WireMessage``s and back, and enforces the protocol's rules that do not
/// need the session's state: the direction of each message, the handshake first, the model's
/// parameter count on every parameters and gradient message.
///
/// Install it with `channel.pipeline.syncOperations.addWireHandlers(role:)`, then wrap the
/// channel in `NIOAsyncChannel<WireMessage, WireMessage>` and write the session as plain async
/// code. On any ``WireError`` (from itself or from the ``FrameDecoder`` before it) it sends the
/// peer an ``WireMessage/error(_:)`` message with the error's code and description, closes the
/// connection, and passes the error on (so the session's read throws it); later input is
/// dropped. An ``WireMessage/error(_:)`` received from the peer is passed on as a message, then
/// the connection is closed.
///
/// The handshake it checks:
/// - worker: the first message must be a `hello` whose version is ours and whose model passes
///   ``ModelSignature/validate(limits:)``; nothing else is read until our `helloAck` is sent.
/// - coordinator: nothing is read before our `hello` is sent; the answer must be a `helloAck`
///   echoing its version, session id and model.
///
/// With `sharedMemory` on, it also offers (coordinator, to a peer on loopback) or accepts
/// (worker) a ``SharedPayloadRegion`` in the handshake's extensions; then the floats of
/// parameters and gradients go through the region's slots and the frames only name the slot.
/// Before the handshake completes only `error` and `goodbye` may cross besides these.
public final class WireMessageHandler: ChannelDuplexHandler {
    public typealias InboundIn = WireFrame
    public typealias InboundOut = WireMessage
    public typealias OutboundIn = WireMessage
    public typealias OutboundOut = WireFrame

    private enum State {
        /// Coordinator: hello not sent yet. Worker: hello not received yet.
        case idle
        /// Coordinator: hello sent, waiting for helloAck. Worker: hello received, helloAck not sent.
        case handshaking(Hello)
        case established(ModelSignature)
        /// A violation was reported; everything else is dropped.
        case failed
    }

    public let role: SessionRole
    public let limits: FrameLimits
    private let codec: PayloadCodec
    private var state: State = .idle
    private let sharedMemory: SharedMemoryPolicy
    /// Coordinator: the region offered in the hello, until the helloAck answers. Worker: the
    /// region mapped for the hello's offer, until the helloAck is sent.
    private var offeredRegion: SharedPayloadRegion?
    /// The region the session's float payloads may use, once both sides agreed on it.
    private var region: SharedPayloadRegion?
    /// Worker: why the offered region could not be mapped (said in the helloAck). Coordinator:
    /// why no region could be made for the offer (added to the helloAck passed on, so that the
    /// session can report it).
    private var declineReason: String?

    /// - Parameters:
    ///   - role: the end of the connection this pipeline serves.
    ///   - limits: the limits payloads are checked against (use the ones given to ``FrameDecoder``).
    ///   - compression: how this side compresses the float arrays it sends.
    ///   - sharedMemory: whether parameters and gradients may pass through a shared payload
    ///     region when the peer is on this host (a coordinator offers one to a worker it reaches
    ///     over loopback; a worker accepts an offer it can verify).
    public init(role: SessionRole, limits: FrameLimits = .default, compression: PayloadCodec.Configuration = .init(),
                sharedMemory: SharedMemoryPolicy = .off) {
        self.role = role
        self.limits = limits
        self.codec = PayloadCodec(compression)
        self.sharedMemory = sharedMemory
    }

    /// The model agreed in the handshake, once it is complete.
    public var agreedSignature: ModelSignature? {
        if case .established(let signature) = state { return signature }
        return nil
    }

    // MARK: Inbound

    public func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if case .failed = state { return }
        let frame = unwrapInboundIn(data)
        do {
            let message = try WireMessage.decode(
                type: frame.type, payload: frame.payload, codec: codec, limits: limits, signature: agreedSignature,
                shared: region)
            let accepted = try acceptInbound(message)
            context.fireChannelRead(wrapInboundOut(accepted))
            if case .error = message {
                state = .failed
                context.close(promise: nil)
            }
        } catch let error as WireError {
            fail(context: context, error: error)
        } catch {
            context.fireErrorCaught(error)
        }
    }

    /// Checks `message` against the protocol's rules and the handshake, and returns it as the
    /// session should see it (a helloAck with a note of why the coordinator could not offer
    /// shared memory, when it could not).
    private func acceptInbound(_ message: WireMessage) throws -> WireMessage {
        let type = message.type
        guard role.peer.maySend(type) else {
            throw WireError.unexpectedMessage(type, "a \(role) does not accept it (only a \(role) sends it)")
        }
        switch type {
        case .error, .goodbye: return message
        default: break
        }
        switch (role, state, message) {
        case (.worker, .idle, .hello(let hello)):
            guard hello.protocolVersion == WireProtocol.version else {
                throw WireError.handshakeMismatch(
                    "coordinator speaks protocol version \(hello.protocolVersion), this worker \(WireProtocol.version)")
            }
            do {
                try hello.signature.validate(limits: limits)
            } catch let error as WireError {
                throw WireError.handshakeMismatch("this worker cannot train the model: \(error)")
            }
            state = .handshaking(hello)
            if sharedMemory == .on, let offer = hello.sharedMemoryOffer {
                // A region that cannot be verified is declined: the session sends floats in frames.
                do {
                    let mapped = try SharedPayloadRegion.open(
                        path: offer.path, token: offer.token, parameterCount: hello.signature.parameterCount,
                        gradientSlots: offer.gradientSlots)
                    mapped.removeName()   // the name is no longer needed, even if the coordinator dies now
                    offeredRegion = mapped
                } catch {
                    declineReason = "the worker could not map the coordinator's region: \(error)"
                }
            }
        case (.worker, .idle, _):
            throw WireError.unexpectedMessage(type, "the first message of a session must be hello")
        case (.worker, .handshaking, _):
            throw WireError.unexpectedMessage(type, "sent before this worker's helloAck")
        case (.coordinator, .idle, _):
            throw WireError.unexpectedMessage(type, "sent before the coordinator's hello")
        case (.coordinator, .handshaking(let hello), .helloAck(let ack)):
            guard ack.protocolVersion == hello.protocolVersion else {
                throw WireError.handshakeMismatch(
                    "worker speaks protocol version \(ack.protocolVersion), this coordinator \(hello.protocolVersion)")
            }
            guard ack.sessionID == hello.sessionID else {
                throw WireError.handshakeMismatch("helloAck is for session \(ack.sessionID), not \(hello.sessionID)")
            }
            guard ack.signature == hello.signature else {
                throw WireError.handshakeMismatch("worker acknowledged model \(ack.signature), the session trains \(hello.signature)")
            }
            state = .established(hello.signature)
            if let offered = offeredRegion {
                offered.unlink()   // both sides have it mapped, or the worker declined
                offeredRegion = nil
                if ack.sharedMemoryAnswer?.accepted == true { region = offered }
            }
            if let reason = declineReason {
                var noted = ack
                noted.extensions.append(.sharedMemoryDeclined(reason))
                return .helloAck(noted)
            }
        case (.coordinator, .handshaking, _):
            throw WireError.unexpectedMessage(type, "the answer to hello must be helloAck")
        case (_, .established, .hello), (_, .established, .helloAck):
            throw WireError.unexpectedMessage(type, "the handshake is already complete")
        case (_, .established, _), (_, .failed, _):
            break
        }
        return message
    }

    // MARK: Outbound

    public func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        var message = unwrapOutboundIn(data)
        do {
            message = offeringSharedMemory(message, to: context.channel.remoteAddress)
            try acceptOutbound(message)
            let allocator = context.channel.allocator
            let shared = try region.flatMap {
                try message.sharedPayload(in: $0, role: role, signature: agreedSignature, allocator: allocator)
            }
            let payload = try shared ?? message.payload(codec: codec, signature: agreedSignature, allocator: allocator)
            // Whatever closes the connection after an error frame lets the peer read it first.
            if case .error = message { context.triggerUserOutboundEvent(LingerOnClose(), promise: nil) }
            context.write(wrapOutboundOut(WireFrame(type: message.type, payload: payload)), promise: promise)
        } catch {
            promise?.fail(error)
        }
    }

    /// The coordinator's hello with the offer of a new shared payload region when the peer is
    /// on this host; the worker's helloAck with the acceptance of the region it mapped. Any
    /// other message as it is.
    private func offeringSharedMemory(_ message: WireMessage, to peer: SocketAddress?) -> WireMessage {
        if case .established = state { return message }   // every message after the handshake
        switch (role, state, message) {
        case (.coordinator, .idle, .hello(var hello)):
            guard sharedMemory == .on, let peer, Self.isLoopback(peer) else { return message }
            let made: SharedPayloadRegion
            do {
                made = try SharedPayloadRegion.create(parameterCount: hello.signature.parameterCount)
            } catch {
                declineReason = "this coordinator could not make a region: \(error)"
                return message
            }
            offeredRegion = made
            hello.extensions.append(.sharedMemoryOffer(made))
            return .hello(hello)
        case (.worker, .handshaking, .helloAck(var ack)):
            if let reason = declineReason {
                ack.extensions.append(.sharedMemoryDeclined(reason))
                return .helloAck(ack)
            }
            guard let mapped = offeredRegion else { return message }
            offeredRegion = nil
            region = mapped
            ack.extensions.append(.sharedMemoryAccepted)
            return .helloAck(ack)
        default:
            return message
        }
    }

    /// Whether `address` is this host's loopback (IPv4 127/8, IPv6 ::1, or 127/8 mapped to IPv6).
    static func isLoopback(_ address: SocketAddress) -> Bool {
        guard let ip = address.ipAddress else { return false }
        return ip.hasPrefix("127.") || ip == "::1" || ip.hasPrefix("::ffff:127.")
    }

    private func acceptOutbound(_ message: WireMessage) throws {
        let type = message.type
        guard role.maySend(type) else {
            throw WireError.unexpectedMessage(type, "a \(role) may not send it")
        }
        switch (role, state, message) {
        case (_, _, .error), (_, _, .goodbye):
            return
        case (.coordinator, .idle, .hello(let hello)):
            state = .handshaking(hello)
        case (.worker, .handshaking(let hello), .helloAck(let ack)):
            guard ack.protocolVersion == hello.protocolVersion, ack.sessionID == hello.sessionID, ack.signature == hello.signature else {
                throw WireError.handshakeMismatch("helloAck does not echo the hello's version, session and model")
            }
            state = .established(hello.signature)
        case (_, .established, .hello), (_, .established, .helloAck):
            throw WireError.unexpectedMessage(type, "the handshake is already complete")
        case (_, .established, _), (_, .failed, _):
            return
        case (_, .idle, _), (_, .handshaking, _):
            throw WireError.unexpectedMessage(type, "the handshake is not complete")
        }
    }

    // MARK: Errors

    public func errorCaught(context: ChannelHandlerContext, error: Error) {
        if case .failed = state { return }  // already reported; the rest follows from it
        if let error = error as? WireError {
            fail(context: context, error: error)
        } else {
            context.fireErrorCaught(error)
        }
    }

    /// Reports `error` to the peer, closes, and passes the error on.
    private func fail(context: ChannelHandlerContext, error: WireError) {
        state = .failed
        // First, so the session's read throws it: the write below may complete, and the close
        // end the inbound stream, before this function returns.
        context.fireErrorCaught(error)
        var payload = context.channel.allocator.buffer(capacity: 256)
        // Encoding an error report cannot fail (the text is cut to its limit).
        try? WireMessage.error(ErrorReport(error)).encode(into: &payload, codec: codec)
        let frame = WireFrame(type: .error, payload: payload)
        context.triggerUserOutboundEvent(LingerOnClose(), promise: nil)
        if context.channel.isActive {
            context.writeAndFlush(wrapOutboundOut(frame)).assumeIsolated().whenComplete { _ in
                context.close(promise: nil)
            }
        } else {
            context.close(promise: nil)
        }
    }
}

@available(*, unavailable)
extension WireMessageHandler: Sendable {}

/// Whether a session may pass parameters and gradients through shared memory (see
/// ``SharedPayloadRegion``).
public enum SharedMemoryPolicy: String, Sendable, CaseIterable {
    /// Coordinator: offer a region to a worker on this host (reached over loopback). Worker:
    /// accept an offered region that checks out.
    case on
    /// Floats always travel in the frames.
    case off
}

extension ChannelPipeline.SynchronousOperations {
    /// Adds the protocol's handlers to a connection's pipeline: ``LingeringCloseHandler``,
    /// ``FrameReadSizer``, ``FrameDeadlineHandler``, ``FrameEncoder``, ``FrameDecoder`` (with the buffer capped at one maximal frame),
    /// ``FrameSecurityHandler`` and ``WireMessageHandler``. Afterwards the channel reads and
    /// writes ``WireMessage``s; wrap it in `NIOAsyncChannel<WireMessage, WireMessage>` for the
    /// session.
    public func addWireHandlers(
        role: SessionRole, limits: FrameLimits = .default, compression: PayloadCodec.Configuration = .init(),
        security: WireSecurity = .none, deadlines: WireDeadlines = .default, sharedMemory: SharedMemoryPolicy = .off
    ) throws {
        try addHandler(LingeringCloseHandler())
        try addHandler(FrameReadSizer())
        try addHandler(FrameDeadlineHandler(deadline: deadlines.frame))
        try addHandler(FrameEncoder(limits: limits))
        try addHandler(ByteToMessageHandler(
            FrameDecoder(limits: limits),
            maximumBufferSize: FrameHeader.byteCount + limits.maxPayloadBytes + FrameFlags.sealOverhead))
        try addHandler(FrameSecurityHandler(role: role, security: security, deadlines: deadlines))
        try addHandler(WireMessageHandler(role: role, limits: limits, compression: compression, sharedMemory: sharedMemory))
    }
}
