import FuzzCommon
import NIOCore
import NIOEmbedded
import Wire

// libFuzzer harness: arbitrary bytes into a whole receiving pipeline (FrameDecoder,
// WireMessageHandler) on an EmbeddedChannel, as a worker or as a coordinator that has sent its
// hello, so the session rules (direction, handshake first, the agreed model's counts) are fuzzed
// together with the decoders.
//
// Input: byte 0 bit 0 = the role (0 worker, which answers a hello with its helloAck as the
// session does; 1 coordinator), byte 1 = the size of the pieces the rest is delivered in (0: all
// at once), then the bytes the peer sends.
//
// Properties, besides "no crash, no ASan report": every error that reaches the end of the
// pipeline is a WireError; no message is delivered after an error; after an error the pipeline
// has sent the peer exactly one error message, with that error's code, and closed the channel.

/// The coordinator's hello in this harness; the seeds' helloAck answers it.
private let hello = Hello(
    sessionID: 1, signature: MessageInput.signature, coordinatorName: "c", extensions: [WireExtension(tag: 7, value: [1, 2, 3])])

private final class Recorder: ChannelInboundHandler {
    typealias InboundIn = WireMessage
    var messagesAfterError = 0
    var errors: [Error] = []

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if !errors.isEmpty { messagesAfterError += 1 }
        // A worker's session answers hello at once; the pipeline reads nothing else before.
        if case .hello(let hello) = unwrapInboundIn(data) {
            let ack = HelloAck(answering: hello, workerName: "w", blasKernel: "k", threadCount: 1)
            context.writeAndFlush(NIOAny(WireMessage.helloAck(ack)), promise: nil)
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        errors.append(error)
    }
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzPipeline(_ start: UnsafeRawPointer?, _ count: Int) -> CInt {
    guard let input = PipelineInput(UnsafeRawBufferPointer(start: start, count: count)) else { return -1 }
    let (role, piece, bytes) = (input.role, input.pieceSize, input.bytes)

    let channel = EmbeddedChannel()
    let recorder = Recorder()
    do {
        try WirePipeline.configure(channel, role: role, compression: .init(floatEncoding: .raw))
        try channel.pipeline.syncOperations.addHandler(recorder)
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 7070)).wait()
        if role == .coordinator { try channel.writeAndFlush(WireMessage.hello(hello)).wait() }
    } catch {
        fuzzRequire(false, "setting up the pipeline failed: \(error)")
    }
    var sentBefore = 0
    if role == .coordinator { sentBefore = 1 }

    var offset = 0
    while offset < bytes.count, channel.isActive, recorder.errors.isEmpty {
        let end = min(bytes.count, offset + piece)
        _ = try? channel.writeInbound(ByteBuffer(bytes: UnsafeRawBufferPointer(rebasing: bytes[offset..<end])))
        offset = end
    }
    for error in recorder.errors {
        fuzzRequire(error is WireError, "a non-WireError reached the end of the pipeline: \(error)")
    }
    fuzzRequire(recorder.messagesAfterError == 0, "\(recorder.messagesAfterError) messages delivered after an error")
    let frames = sentFrames(channel)
    if let first = recorder.errors.first as? WireError {
        let reports = frames.dropFirst(sentBefore).filter { $0.type == .error }
        fuzzRequire(reports.count == 1, "\(reports.count) error messages sent for \(first)")
        if let report = reports.first, case .error(let sent)? = try? WireMessage.decode(type: .error, payload: report.payload, codec: PayloadCodec()) {
            fuzzRequire(sent.code == first.code, "sent \(sent.code) for \(first)")
        }
        fuzzRequire(!channel.isActive, "the channel is still open after \(first)")
    }
    _ = try? channel.finish(acceptAlreadyClosed: true)
    return 0
}
