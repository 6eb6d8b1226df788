import NIOCore

/// Drops a peer that starts a frame and does not finish it: from the first byte of a frame
/// (even one byte of its header) the whole frame must arrive within ``WireDeadlines/frame``,
/// else a ``WireError/timeout(_:)`` is fired (``WireMessageHandler`` sends the peer an `error`
/// and closes). Between frames there is no deadline (an idle session is the session's business).
///
/// It sits near the socket and only watches the bytes: it follows frame boundaries from the
/// length field (bytes 8-11 of each header, `FrameBoundaries`) without checking anything else,
/// which is the ``FrameDecoder``'s job. ``WirePipeline`` installs it.
public final class FrameDeadlineHandler: ChannelInboundHandler {
    public typealias InboundIn = ByteBuffer
    public typealias InboundOut = ByteBuffer

    /// How long a frame may take.
    public let deadline: TimeAmount
    private var boundaries = FrameBoundaries()
    private var timer: Scheduled<Void>?
    private var expired = false

    public init(deadline: TimeAmount = WireDeadlines.default.frame) {
        self.deadline = deadline
    }

    public func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if !expired { track(unwrapInboundIn(data), context: context) }
        context.fireChannelRead(data)
    }

    private func track(_ buffer: ByteBuffer, context: ChannelHandlerContext) {
        let startedHere = boundaries.consume(buffer.readableBytesView)
        if boundaries.betweenFrames {
            timer?.cancel()
            timer = nil
        } else if startedHere || timer == nil {
            // A new frame began in these bytes (the earlier ones are complete): its own deadline.
            timer?.cancel()
            timer = context.eventLoop.assumeIsolated().scheduleTask(in: deadline) { [self] in
                timer = nil
                expired = true
                let b = boundaries
                let expected = b.headerBytes < FrameHeader.byteCount
                    ? "of a \(FrameHeader.byteCount)-byte header"
                    : "of \(FrameHeader.byteCount + Int(b.length))"
                context.fireErrorCaught(WireError.timeout(
                    "a frame started \(FrameSecurityHandler.seconds(deadline)) s ago is still incomplete (\(b.frameReceived) bytes \(expected) received); the deadline for a whole frame is \(FrameSecurityHandler.seconds(deadline)) s"))
            }
        }
    }

    public func channelInactive(context: ChannelHandlerContext) {
        timer?.cancel()
        timer = nil
        context.fireChannelInactive()
    }

    public func handlerRemoved(context: ChannelHandlerContext) {
        timer?.cancel()
        timer = nil
    }
}

@available(*, unavailable)
extension FrameDeadlineHandler: Sendable {}
