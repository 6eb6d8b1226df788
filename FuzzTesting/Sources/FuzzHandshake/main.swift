import FuzzCommon
import NIOCore
import NIOEmbedded
import Wire

// libFuzzer harness: arbitrary bytes into a receiving pipeline that has a shared secret, as a
// worker waiting for the coordinator's challenge or as a coordinator that has sent its challenge
// (and, under it, a hello that must stay held until the handshake completes). What an attacker
// who can reach a port but does not know the secret can send: the authentication frames, frames
// sealed with keys it cannot have, and anything else.
//
// Input: byte 0 bit 0 = the role (0 worker, 1 coordinator), byte 1 = the size of the pieces the
// rest is delivered in (0: all at once), then the bytes the peer sends.
//
// Properties, besides "no crash, no ASan report": the handshake never completes (both nonces are
// fresh and random, so no input can carry a valid proof); no message but a peer's `error` ever
// reaches the message handlers; this side never sends a frame other than its authentication
// frames and one `error` (the held hello is never sent, sealed or not); every error that reaches
// the end of the pipeline is a WireError, and after one the channel is closed.

/// The harness's secret (the fuzzer does not know it any better than an attacker).
private let secret = try! SharedSecret(bytes: (0..<32).map { UInt8(truncatingIfNeeded: $0 &* 37 &+ 11) })

private let hello = Hello(sessionID: 1, signature: MessageInput.signature, coordinatorName: "c")

private final class Recorder: ChannelInboundHandler {
    typealias InboundIn = WireMessage
    var delivered: [WireMessage] = []
    var errors: [Error] = []

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        delivered.append(unwrapInboundIn(data))
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        errors.append(error)
    }
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzHandshake(_ start: UnsafeRawPointer?, _ count: Int) -> CInt {
    guard let input = PipelineInput(UnsafeRawBufferPointer(start: start, count: count)) else { return -1 }
    let (role, piece, bytes) = (input.role, input.pieceSize, input.bytes)

    let channel = EmbeddedChannel()
    let recorder = Recorder()
    do {
        try WirePipeline.configure(channel, role: role, compression: .init(floatEncoding: .raw),
                                   security: .sharedSecret(secret))
        try channel.pipeline.syncOperations.addHandler(recorder)
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 7070)).wait()
        // Written before the handshake: must be held, and never leave unauthenticated.
        if role == .coordinator { channel.writeAndFlush(WireMessage.hello(hello), promise: nil) }
    } catch {
        fuzzRequire(false, "setting up the pipeline failed: \(error)")
    }

    var offset = 0
    var sent: [WireFrame] = []
    while offset < bytes.count, channel.isActive, recorder.errors.isEmpty {
        let end = min(bytes.count, offset + piece)
        do {
            try channel.writeInbound(ByteBuffer(bytes: bytes[offset..<end]))
        } catch {
            recorder.errors.append(error)
        }
        offset = end
        sent += sentFrames(channel)
    }
    channel.embeddedEventLoop.run()
    sent += sentFrames(channel)

    for message in recorder.delivered {
        guard case .error = message else {
            fuzzRequire(false, "a \(message.type) message reached the session before authentication")
            return 0
        }
    }
    let ownAuthentication: Set<MessageType> = role == .worker ? [.authResponse] : [.authChallenge]
    var errorsSent = 0
    for frame in sent {
        if frame.type == .error {
            errorsSent += 1
            fuzzRequire(!frame.flags.contains(.sealed), "a sealed error frame: the handshake completed")
        } else {
            fuzzRequire(ownAuthentication.contains(frame.type),
                        "this \(role) sent a \(frame.type) frame without a completed handshake")
        }
    }
    fuzzRequire(errorsSent <= 1, "this side sent \(errorsSent) error frames")
    fuzzRequire(sent.filter { $0.type == (role == .worker ? .authResponse : .authChallenge) }.count <= 1,
                "this side started the handshake more than once")
    for error in recorder.errors {
        fuzzRequire(error is WireError, "an error that is not a WireError reached the end of the pipeline: \(error)")
    }
    if !recorder.errors.isEmpty {
        fuzzRequire(!channel.isActive, "the channel stayed open after \(recorder.errors[0])")
    }
    _ = try? channel.finish()
    return 0
}
