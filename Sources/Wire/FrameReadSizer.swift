import NIOCore

/// Sizes each socket read of a wire channel to the part of a frame that is arriving: the 12
/// bytes of a header, then the rest of the payload (at most ``maximumRead`` at a time). A read
/// never takes bytes of the next frame, so a payload starts a buffer of its own, with room for
/// all of it: the decoder appends the payload's later pieces in place and hands the payload
/// on without copying it again.
///
/// Left to NIO's adaptive allocator, a 1 MB gradient or parameter frame came in reads that
/// mixed the end of one frame with the start of the next, and the decoder copied them into a
/// fresh, growing buffer (profiled in the coordinator: that copying was 8% of its CPU, on the
/// cores the workers compute on). The channel reads one buffer per wake-up
/// (`maxMessagesPerRead` 1): then NIO keeps no reference to the buffers it reads into, which
/// would make the decoder's in-place append copy the buffer first.
///
/// Tried and dropped: raising the socket's receive low-water mark (`SO_RCVLOWAT`) to a
/// payload's length, so the reader would wake once, when all of it was there. It saved another
/// 0.5 ms of the coordinator's CPU per step, but about one step in twenty stalled by 40-120 ms
/// (the kernel held the data back, apparently until a window update), which cost more than it
/// saved (BENCHMARKS.md, tenth session).
///
/// After an error frame (``LingerOnClose``) reads go back to plain 64 KB buffers for the
/// drain. It sits next to the socket (``WirePipeline`` installs it) and, when added, installs
/// its receive allocator on the channel. A peer's declared length cannot make it allocate more
/// than ``maximumRead`` per read. On a channel without a socket (`EmbeddedChannel`) it only
/// follows the frames.
public final class FrameReadSizer: ChannelDuplexHandler {
    public typealias InboundIn = ByteBuffer
    public typealias InboundOut = ByteBuffer
    public typealias OutboundIn = ByteBuffer
    public typealias OutboundOut = ByteBuffer

    /// The largest read; a longer payload takes several (and the decoder joins them).
    public static let maximumRead = 1 << 21
    /// Read size once the frames are no longer followed (draining after an error frame).
    static let drainRead = 1 << 16

    private var boundaries = FrameBoundaries()
    private let nextRead = NextReadSize()
    private var draining = false

    public init() {}

    /// The allocator that sizes this channel's reads; installed on the channel when the handler
    /// is added.
    var receiveAllocator: RecvByteBufferAllocator { FrameSizedReceiveAllocator(next: nextRead) }

    public func handlerAdded(context: ChannelHandlerContext) {
        guard let options = context.channel.syncOptions else { return }
        try? options.setOption(.recvAllocator, value: receiveAllocator)
        try? options.setOption(.maxMessagesPerRead, value: 1)
    }

    public func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if !draining {
            _ = boundaries.consume(unwrapInboundIn(data).readableBytesView)
            nextRead.bytes = min(boundaries.bytesToNextBoundary, Self.maximumRead)
        }
        context.fireChannelRead(data)
    }

    public func triggerUserOutboundEvent(context: ChannelHandlerContext, event: Any, promise: EventLoopPromise<Void>?) {
        if event is LingerOnClose {
            draining = true
            nextRead.bytes = Self.drainRead
        }
        context.triggerUserOutboundEvent(event, promise: promise)
    }
}

@available(*, unavailable)
extension FrameReadSizer: Sendable {}

/// How many bytes the next read of a wire channel should take: written by its
/// ``FrameReadSizer``, read by its ``FrameSizedReceiveAllocator``, both only on the channel's
/// event loop.
final class NextReadSize: @unchecked Sendable {
    var bytes = FrameHeader.byteCount
}

/// A receive allocator whose buffers offer exactly the bytes its ``FrameReadSizer`` asks for.
/// NIO rounds a buffer's capacity up to a power of two and reads into all of its writable
/// bytes, so the buffer starts with its reader and writer indices moved past the surplus.
struct FrameSizedReceiveAllocator: RecvByteBufferAllocator {
    let next: NextReadSize

    func buffer(allocator: ByteBufferAllocator) -> ByteBuffer {
        let wanted = max(1, next.bytes)
        var buffer = allocator.buffer(capacity: wanted)
        let surplus = buffer.capacity - wanted
        if surplus > 0 {
            buffer.moveWriterIndex(forwardBy: surplus)
            buffer.moveReaderIndex(forwardBy: surplus)
        }
        return buffer
    }

    /// Always "may grow": NIO then never reuses the last buffer, whose size was the last part's.
    mutating func record(actualReadBytes: Int) -> Bool { true }
}
