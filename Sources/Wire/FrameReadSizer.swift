import NIOCore
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Reads each frame from the socket in two reads, its header and then its whole payload, so
/// that a payload reaches the ``FrameDecoder`` as one buffer of its own, which the decoder
/// hands on without copying it.
///
/// Left to NIO, a 1 MB gradient or parameter frame came in however the kernel had it when the
/// reader woke: a first read with the header and some of the payload, then more, each appended
/// to the decoder's buffer, which was then copied into one (profiled in the coordinator: that
/// merging copy was 8% of its CPU, on the cores the workers compute on). Here:
///
/// - the channel reads one buffer per wake-up (`maxMessagesPerRead` 1), and each buffer offers
///   exactly as many bytes as complete the part now arriving: the 12 bytes of a header, then
///   the payload (at most ``maximumRead`` at a time);
/// - once a header announces a payload of ``wholePayloadBytes`` or more, the socket's receive
///   low-water mark (`SO_RCVLOWAT`) is raised to the payload's length, so the reader is woken
///   once, when all of it is there, not for every segment; it is lowered again after. The
///   kernel still wakes the reader when the peer closes, and for a peer that stops half-way the
///   frame's deadline (``FrameDeadlineHandler``) still runs.
///
/// After an error frame (``LingerOnClose``) reads go back to plain 64 KB buffers and the mark to
/// 1 byte, for the drain. It sits next to the socket; ``WirePipeline`` installs it and its
/// receive allocator. On a channel without a socket (`EmbeddedChannel`) it only follows the
/// frames.
public final class FrameReadSizer: ChannelDuplexHandler {
    public typealias InboundIn = ByteBuffer
    public typealias InboundOut = ByteBuffer
    public typealias OutboundIn = ByteBuffer
    public typealias OutboundOut = ByteBuffer

    /// The largest read; a longer payload takes several (and the decoder joins them).
    public static let maximumRead = 1 << 21
    /// Payloads from this length on are read in one piece, once all there (smaller ones almost
    /// always are, since the peer writes a frame at once).
    public static let wholePayloadBytes = 1 << 16
    /// Read size once the frames are no longer followed (draining after an error frame).
    static let drainRead = 1 << 16

    private var boundaries = FrameBoundaries()
    private let nextRead = NextReadSize()
    /// The receive low-water mark now set on the socket.
    private var lowWater = 1
    private var draining = false

    public init() {}

    /// The allocator that sizes this channel's reads; `WirePipeline` sets it on the channel.
    var receiveAllocator: RecvByteBufferAllocator { FrameSizedReceiveAllocator(next: nextRead) }

    public func handlerAdded(context: ChannelHandlerContext) {
        guard let options = context.channel.syncOptions else { return }
        try? options.setOption(.recvAllocator, value: receiveAllocator)
        try? options.setOption(.maxMessagesPerRead, value: 1)
    }

    public func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if !draining {
            _ = boundaries.consume(unwrapInboundIn(data).readableBytesView)
            let remaining = boundaries.bytesToNextBoundary
            nextRead.bytes = min(remaining, Self.maximumRead)
            let inPayload = !boundaries.betweenFrames && boundaries.headerBytes == FrameHeader.byteCount
            setLowWater(inPayload && remaining >= Self.wholePayloadBytes ? nextRead.bytes : 1, context: context)
        }
        context.fireChannelRead(data)
    }

    public func triggerUserOutboundEvent(context: ChannelHandlerContext, event: Any, promise: EventLoopPromise<Void>?) {
        if event is LingerOnClose {
            draining = true
            nextRead.bytes = Self.drainRead
            setLowWater(1, context: context)
        }
        context.triggerUserOutboundEvent(event, promise: promise)
    }

    private func setLowWater(_ bytes: Int, context: ChannelHandlerContext) {
        guard bytes != lowWater, let options = context.channel.syncOptions else { return }
        lowWater = bytes
        try? options.setOption(ChannelOptions.Types.SocketOption(level: SocketOptionLevel(SOL_SOCKET), name: SocketOptionName(SO_RCVLOWAT)),
                               value: SocketOptionValue(bytes))
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
