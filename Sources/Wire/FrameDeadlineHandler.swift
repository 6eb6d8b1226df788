import NIOCore

/// Drops a peer that starts a frame and does not finish it: from the first byte of a frame
/// (even one byte of its header) the whole frame must arrive within ``WireDeadlines/frame``,
/// else a ``WireError/timeout(_:)`` is fired (``WireMessageHandler`` sends the peer an `error`
/// and closes). Between frames there is no deadline (an idle session is the session's business).
///
/// It sits first in the pipeline and only watches the bytes: it follows frame boundaries from
/// the length field (bytes 8-11 of each header) without checking anything else, which is the
/// ``FrameDecoder``'s job. ``WirePipeline`` installs it.
public final class FrameDeadlineHandler: ChannelInboundHandler {
    public typealias InboundIn = ByteBuffer
    public typealias InboundOut = ByteBuffer

    /// How long a frame may take.
    public let deadline: TimeAmount
    /// Bytes of the current header seen (0: between frames).
    private var headerBytes = 0
    private var length: UInt32 = 0
    private var payloadRemaining = 0
    private var frameReceived = 0
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
        let view = buffer.readableBytesView
        var index = view.startIndex
        var startedHere = false
        while index < view.endIndex {
            if headerBytes < FrameHeader.byteCount {
                if headerBytes == 0 {
                    startedHere = true
                    frameReceived = 0
                    length = 0
                }
                if headerBytes >= 8 { length = length << 8 | UInt32(view[index]) }
                headerBytes += 1
                frameReceived += 1
                index += 1
                if headerBytes == FrameHeader.byteCount {
                    payloadRemaining = Int(length)
                    if payloadRemaining == 0 { headerBytes = 0 }
                }
            } else {
                let take = min(payloadRemaining, view.endIndex - index)
                index += take
                frameReceived += take
                payloadRemaining -= take
                if payloadRemaining == 0 { headerBytes = 0 }
            }
        }
        if headerBytes == 0 {
            timer?.cancel()
            timer = nil
        } else if startedHere || timer == nil {
            // A new frame began in these bytes (the earlier ones are complete): its own deadline.
            timer?.cancel()
            timer = context.eventLoop.assumeIsolated().scheduleTask(in: deadline) { [self] in
                timer = nil
                expired = true
                let expected = headerBytes < FrameHeader.byteCount
                    ? "of a \(FrameHeader.byteCount)-byte header"
                    : "of \(FrameHeader.byteCount + Int(length))"
                context.fireErrorCaught(WireError.timeout(
                    "a frame started \(FrameSecurityHandler.seconds(deadline)) s ago is still incomplete (\(frameReceived) bytes \(expected) received); the deadline for a whole frame is \(FrameSecurityHandler.seconds(deadline)) s"))
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
