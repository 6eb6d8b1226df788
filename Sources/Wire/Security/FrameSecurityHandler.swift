import Crypto
import NIOCore

/// Authenticates the peer and seals every later frame; sits between the frame codec and
/// ``WireMessageHandler`` (``WirePipeline`` installs it). It reads and writes ``WireFrame``s.
///
/// With ``WireSecurity/none`` it passes frames through unchanged, and refuses a peer that tries
/// to authenticate (or sends sealed frames) with an `authenticationFailed` error saying that
/// this side has no secret.
///
/// With a secret (docs/PROTOCOL.md, "Authentication"):
/// 1. coordinator → `authChallenge` (version, session id, 32-byte nonce), as soon as the
///    connection is active;
/// 2. worker → `authResponse` (its 32-byte nonce, HMAC-SHA256 proof over the transcript);
/// 3. coordinator checks the proof in constant time, → `authConfirm` (its own proof);
/// 4. worker checks it. Both sides derive per-direction AES-256-GCM keys with HKDF-SHA256.
///
/// Until then, no other frame crosses: what the message layer writes is held back (an `error`
/// frame excepted, which goes out plain), and anything else the peer sends is refused. Every
/// later frame is sealed (``FrameFlags/sealed``); an unsealed frame, or one that fails to open
/// (modified, replayed, reordered, dropped) is refused. The only exception: an unsealed `error`
/// frame is accepted until the peer's first sealed frame, so a worker that rejects the
/// coordinator's proof can say so. A refusal is fired as a ``WireError`` (code
/// `authenticationFailed`, or `timeout` when the handshake takes longer than
/// ``WireDeadlines/authentication``); ``WireMessageHandler`` then sends the peer one `error`
/// frame and closes. Later input is dropped.
public final class FrameSecurityHandler: ChannelDuplexHandler {
    public typealias InboundIn = WireFrame
    public typealias InboundOut = WireFrame
    public typealias OutboundIn = WireFrame
    public typealias OutboundOut = WireFrame

    private enum State {
        /// No secret: frames pass unchanged.
        case open
        /// A secret, and nothing exchanged yet.
        case idle
        case coordinatorAwaitingResponse(sessionID: UInt64, nonce: [UInt8])
        case workerAwaitingConfirm(transcript: [UInt8], keys: (coordinatorToWorker: SymmetricKey, workerToCoordinator: SymmetricKey))
        case established
        case failed
    }

    public let role: SessionRole
    private let secret: SharedSecret?
    private let proofKey: SymmetricKey?
    private let deadline: TimeAmount
    private var state: State
    private var sealer: FrameCipher?
    private var opener: FrameCipher?
    private var peerHasSealed = false
    private var held: [(WireFrame, EventLoopPromise<Void>?)] = []
    private var timer: Scheduled<Void>?

    /// - Parameters:
    ///   - role: the end of the connection this pipeline serves.
    ///   - security: no protection, or a shared secret.
    ///   - deadlines: ``WireDeadlines/authentication`` bounds the handshake.
    public init(role: SessionRole, security: WireSecurity, deadlines: WireDeadlines = .default) {
        self.role = role
        self.secret = security.secret
        self.proofKey = security.secret.map(AuthenticationHandshake.proofKey)
        self.deadline = deadlines.authentication
        self.state = security.secret == nil ? .open : .idle
    }

    /// Whether the handshake is complete and frames are sealed.
    public var isEstablished: Bool {
        if case .established = state { return true }
        return false
    }

    // MARK: Start

    public func handlerAdded(context: ChannelHandlerContext) {
        if context.channel.isActive { start(context: context) }
    }

    public func channelActive(context: ChannelHandlerContext) {
        start(context: context)
        context.fireChannelActive()
    }

    private func start(context: ChannelHandlerContext) {
        guard case .idle = state, timer == nil else { return }
        let seconds = Self.seconds(deadline)
        timer = context.eventLoop.assumeIsolated().scheduleTask(in: deadline) { [self] in
            timer = nil
            switch state {
            case .established, .failed, .open: return
            default:
                fail(context: context, WireError.timeout("the authentication handshake did not complete within \(seconds) s"))
            }
        }
        guard role == .coordinator else { return }
        let sessionID = UInt64.random(in: 1...UInt64.max)
        let nonce = AuthenticationHandshake.nonce()
        var payload = context.channel.allocator.buffer(capacity: AuthenticationHandshake.challengeByteCount)
        payload.writeInteger(WireProtocol.version)
        payload.writeInteger(sessionID)
        payload.writeBytes(nonce)
        state = .coordinatorAwaitingResponse(sessionID: sessionID, nonce: nonce)
        context.writeAndFlush(wrapOutboundOut(WireFrame(type: .authChallenge, payload: payload)), promise: nil)
    }

    // MARK: Inbound

    public func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = unwrapInboundIn(data)
        switch state {
        case .failed:
            return
        case .open:
            if frame.type.isAuthentication || frame.flags.contains(.sealed) {
                return fail(context: context, .authenticationFailed(
                    "the \(role.peer) authenticates with a shared secret, but this \(role) has none; give this \(role) the same secret with --secret-file FILE or \(SharedSecret.environmentVariable)=FILE"))
            }
            context.fireChannelRead(data)
        case .established:
            if frame.flags.contains(.sealed) {
                do {
                    let opened = try opener!.open(frame, allocator: context.channel.allocator)
                    peerHasSealed = true
                    context.fireChannelRead(wrapInboundOut(opened))
                } catch let error as WireError {
                    fail(context: context, error)
                } catch {
                    fail(context: context, .authenticationFailed("\(frame.type) frame could not be opened"))
                }
            } else if frame.type == .error && !peerHasSealed {
                context.fireChannelRead(data)
            } else {
                fail(context: context, .authenticationFailed(
                    "an unsealed \(frame.type) frame arrived after authentication; every frame must be sealed"))
            }
        case .idle, .coordinatorAwaitingResponse, .workerAwaitingConfirm:
            if frame.type == .error { return context.fireChannelRead(data) }
            do {
                try handshake(frame, context: context)
            } catch let error as WireError {
                fail(context: context, error)
            } catch {
                fail(context: context, .authenticationFailed("the handshake could not be completed"))
            }
        }
    }

    private func handshake(_ frame: WireFrame, context: ChannelHandlerContext) throws {
        var payload = frame.payload
        switch (role, state, frame.type) {
        case (.worker, .idle, .authChallenge):
            guard payload.readableBytes == AuthenticationHandshake.challengeByteCount,
                  let version = payload.readInteger(as: UInt8.self), let sessionID = payload.readInteger(as: UInt64.self),
                  let coordinatorNonce = payload.readBytes(length: AuthenticationHandshake.nonceByteCount) else {
                throw WireError.authenticationFailed("malformed authChallenge (\(frame.payload.readableBytes) bytes, expected \(AuthenticationHandshake.challengeByteCount))")
            }
            guard version == WireProtocol.version else {
                throw WireError.handshakeMismatch("coordinator speaks protocol version \(version), this worker \(WireProtocol.version)")
            }
            let workerNonce = AuthenticationHandshake.nonce()
            let transcript = AuthenticationHandshake.transcript(
                version: version, sessionID: sessionID, coordinatorNonce: coordinatorNonce, workerNonce: workerNonce)
            let proof = AuthenticationHandshake.proof(by: .worker, transcript: transcript, key: proofKey!)
            let keys = AuthenticationHandshake.frameKeys(
                secret!, transcript: transcript, coordinatorNonce: coordinatorNonce, workerNonce: workerNonce)
            state = .workerAwaitingConfirm(transcript: transcript, keys: keys)
            var response = context.channel.allocator.buffer(capacity: AuthenticationHandshake.responseByteCount)
            response.writeBytes(workerNonce)
            response.writeBytes(proof)
            context.writeAndFlush(wrapOutboundOut(WireFrame(type: .authResponse, payload: response)), promise: nil)

        case (.coordinator, .coordinatorAwaitingResponse(let sessionID, let coordinatorNonce), .authResponse):
            guard payload.readableBytes == AuthenticationHandshake.responseByteCount,
                  let workerNonce = payload.readBytes(length: AuthenticationHandshake.nonceByteCount),
                  let workerProof = payload.readBytes(length: AuthenticationHandshake.proofByteCount) else {
                throw WireError.authenticationFailed("malformed authResponse (\(frame.payload.readableBytes) bytes, expected \(AuthenticationHandshake.responseByteCount))")
            }
            let transcript = AuthenticationHandshake.transcript(
                version: WireProtocol.version, sessionID: sessionID, coordinatorNonce: coordinatorNonce, workerNonce: workerNonce)
            guard AuthenticationHandshake.verify(workerProof, by: .worker, transcript: transcript, key: proofKey!) else {
                throw WireError.authenticationFailed(
                    "the worker's proof does not match this coordinator's secret: the two sides use different secrets (give both the same --secret-file)")
            }
            let proof = AuthenticationHandshake.proof(by: .coordinator, transcript: transcript, key: proofKey!)
            let keys = AuthenticationHandshake.frameKeys(
                secret!, transcript: transcript, coordinatorNonce: coordinatorNonce, workerNonce: workerNonce)
            var confirm = context.channel.allocator.buffer(capacity: AuthenticationHandshake.confirmByteCount)
            confirm.writeBytes(proof)
            context.write(wrapOutboundOut(WireFrame(type: .authConfirm, payload: confirm)), promise: nil)
            establish(sealWith: keys.coordinatorToWorker, openWith: keys.workerToCoordinator, context: context)

        case (.worker, .workerAwaitingConfirm(let transcript, let keys), .authConfirm):
            guard payload.readableBytes == AuthenticationHandshake.confirmByteCount,
                  let coordinatorProof = payload.readBytes(length: AuthenticationHandshake.proofByteCount) else {
                throw WireError.authenticationFailed("malformed authConfirm (\(frame.payload.readableBytes) bytes, expected \(AuthenticationHandshake.confirmByteCount))")
            }
            guard AuthenticationHandshake.verify(coordinatorProof, by: .coordinator, transcript: transcript, key: proofKey!) else {
                throw WireError.authenticationFailed(
                    "the coordinator's proof does not match this worker's secret: the two sides use different secrets (give both the same --secret-file)")
            }
            establish(sealWith: keys.workerToCoordinator, openWith: keys.coordinatorToWorker, context: context)

        case (.worker, .idle, let type):
            throw WireError.authenticationFailed(
                "this worker requires authentication with a shared secret, and the coordinator sent \(type) without authenticating; give the coordinator the same secret with --secret-file FILE or \(SharedSecret.environmentVariable)=FILE")
        case (.coordinator, .coordinatorAwaitingResponse, let type):
            throw WireError.authenticationFailed(
                "the worker answered the authentication challenge with \(type): it has no shared secret or does not speak protocol version \(WireProtocol.version); give the worker the same secret with --secret-file FILE")
        case (_, _, let type):
            throw WireError.authenticationFailed("unexpected \(type) frame during the authentication handshake")
        }
    }

    private func establish(sealWith sealKey: SymmetricKey, openWith openKey: SymmetricKey, context: ChannelHandlerContext) {
        timer?.cancel()
        timer = nil
        sealer = FrameCipher(key: sealKey)
        opener = FrameCipher(key: openKey)
        state = .established
        let frames = held
        held = []
        for (frame, promise) in frames { writeSealed(frame, promise: promise, context: context) }
        context.flush()
    }

    // MARK: Outbound

    public func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        let frame = unwrapOutboundIn(data)
        switch state {
        case .open:
            context.write(data, promise: promise)
        case .established:
            writeSealed(frame, promise: promise, context: context)
        case .failed:
            if sealer != nil {
                writeSealed(frame, promise: promise, context: context)
            } else if frame.type == .error {
                context.write(data, promise: promise)
            } else {
                promise?.fail(WireError.authenticationFailed("the connection failed authentication"))
            }
        case .idle, .coordinatorAwaitingResponse, .workerAwaitingConfirm:
            // An error report may leave before authentication (it tells the peer why it is
            // refused); everything else waits for the keys.
            if frame.type == .error {
                context.write(data, promise: promise)
            } else {
                held.append((frame, promise))
            }
        }
    }

    private func writeSealed(_ frame: WireFrame, promise: EventLoopPromise<Void>?, context: ChannelHandlerContext) {
        do {
            let sealed = try sealer!.seal(frame, allocator: context.channel.allocator)
            context.write(wrapOutboundOut(sealed), promise: promise)
        } catch {
            promise?.fail(error)
        }
    }

    // MARK: End

    public func channelInactive(context: ChannelHandlerContext) {
        stop(failingHeldWith: ChannelError.ioOnClosedChannel)
        context.fireChannelInactive()
    }

    public func handlerRemoved(context: ChannelHandlerContext) {
        stop(failingHeldWith: ChannelError.ioOnClosedChannel)
    }

    private func stop(failingHeldWith error: Error) {
        timer?.cancel()
        timer = nil
        let frames = held
        held = []
        for (_, promise) in frames { promise?.fail(error) }
    }

    /// Refuses the peer: drops later input and passes the error on, so that
    /// ``WireMessageHandler`` reports it to the peer and closes.
    private func fail(context: ChannelHandlerContext, _ error: WireError) {
        if case .failed = state { return }
        state = .failed
        stop(failingHeldWith: error)
        context.fireErrorCaught(error)
    }

    static func seconds(_ amount: TimeAmount) -> String {
        let value = Double(amount.nanoseconds) / 1e9
        return value == value.rounded() ? String(Int(value)) : String(value)
    }
}

@available(*, unavailable)
extension FrameSecurityHandler: Sendable {}
