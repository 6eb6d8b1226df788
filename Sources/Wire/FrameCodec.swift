import NIOCore

/// Cuts a byte stream into ``WireFrame``s, refusing anything that is not a valid frame header
/// before it waits for (and so buffers) the payload.
///
/// Use it through `ByteToMessageHandler(FrameDecoder(limits:))`, or let
/// `ChannelPipeline.SynchronousOperations.addWireHandlers(role:limits:compression:)` install it.
/// It is a two-state machine:
///
/// - `waitingForHeader`: as soon as up to four bytes are there, they must be the magic (so a
///   stray HTTP request is refused at once); once all 12 are there, the version, the type, the
///   flags and the length are checked, the length against ``FrameLimits/maxPayload(for:)``.
///   Nothing is allocated from the declared length: a malicious 4 GB length is refused as soon as
///   its header is complete.
/// - `waitingForPayload`: returns "need more data" until the whole payload is buffered, then
///   hands out a slice of it (no copy).
///
/// When the connection ends in the middle of a frame, `decodeLast` throws
/// ``WireError/truncatedFrame(received:expected:)``.
public struct FrameDecoder: NIOSingleStepByteToMessageDecoder {
    public typealias InboundOut = WireFrame

    private enum State {
        case waitingForHeader
        case waitingForPayload(FrameHeader)
    }

    private var state: State = .waitingForHeader
    /// The limits frames are checked against.
    public let limits: FrameLimits

    public init(limits: FrameLimits = .default) {
        self.limits = limits
    }

    public mutating func decode(buffer: inout ByteBuffer) throws -> WireFrame? {
        switch state {
        case .waitingForHeader:
            guard let header = try Self.readHeader(from: &buffer, limits: limits) else { return nil }
            state = .waitingForPayload(header)
            return try decode(buffer: &buffer)
        case .waitingForPayload(let header):
            guard let payload = buffer.readSlice(length: Int(header.payloadLength)) else { return nil }
            state = .waitingForHeader
            return WireFrame(version: header.version, type: header.type, flags: header.flags, payload: payload)
        }
    }

    /// Whether to move the buffered bytes of an incomplete frame to the front of their buffer
    /// (NIO asks when the decoder needs more data). Not when the rest of the frame fits behind
    /// them already: then the move would only copy them. That is how a payload arrives through
    /// ``FrameReadSizer``: its first piece in a buffer with room for the rest, after a gap.
    /// Otherwise NIO's own rule (at least 2 KB to gain, or more than half the buffer).
    public func shouldReclaimBytes(buffer: ByteBuffer) -> Bool {
        let missing: Int
        switch state {
        case .waitingForHeader: missing = FrameHeader.byteCount - buffer.readableBytes
        case .waitingForPayload(let header): missing = Int(header.payloadLength) - buffer.readableBytes
        }
        if buffer.writableBytes >= missing { return false }
        return buffer.readerIndex >= 2048
            || (buffer.storageCapacity > 1024 && buffer.storageCapacity - buffer.readerIndex < buffer.readerIndex)
    }

    public mutating func decodeLast(buffer: inout ByteBuffer, seenEOF: Bool) throws -> WireFrame? {
        if let frame = try decode(buffer: &buffer) { return frame }
        switch state {
        case .waitingForHeader:
            if buffer.readableBytes > 0 {
                throw WireError.truncatedFrame(received: buffer.readableBytes, expected: FrameHeader.byteCount)
            }
        case .waitingForPayload(let header):
            throw WireError.truncatedFrame(
                received: FrameHeader.byteCount + buffer.readableBytes,
                expected: FrameHeader.byteCount + Int(header.payloadLength))
        }
        return nil
    }

    /// Reads and validates a header; `nil` when fewer than 12 bytes are buffered (after checking
    /// the magic bytes that are there).
    static func readHeader(from buffer: inout ByteBuffer, limits: FrameLimits) throws -> FrameHeader? {
        let available = min(buffer.readableBytes, 4)
        if available > 0, let prefix = buffer.getBytes(at: buffer.readerIndex, length: available) {
            for (index, byte) in prefix.enumerated() where byte != UInt8(truncatingIfNeeded: WireProtocol.magic >> (24 - 8 * index)) {
                throw WireError.badMagic(found: prefix)
            }
        }
        guard buffer.readableBytes >= FrameHeader.byteCount,
              let (_, version, rawType, rawFlags, length) = buffer.getMultipleIntegers(
                at: buffer.readerIndex, endianness: .big, as: (UInt32, UInt8, UInt8, UInt16, UInt32).self)
        else { return nil }

        guard let type = MessageType(rawValue: rawType) else { throw WireError.unknownMessageType(rawType) }
        // An error frame's layout is frozen, so it is read whatever the version: a peer refusing
        // our version can still tell us so.
        guard version == WireProtocol.version || type == .error else {
            throw WireError.unsupportedVersion(found: version)
        }
        let flags = FrameFlags(rawValue: rawFlags)
        guard FrameFlags.known.isSuperset(of: flags) else { throw WireError.reservedFlags(rawFlags) }
        let limit = limits.maxPayload(for: type, flags: flags)
        guard UInt64(length) <= UInt64(limit) else {
            throw WireError.frameTooLarge(type: type, length: UInt64(length), limit: limit)
        }
        buffer.moveReaderIndex(forwardBy: FrameHeader.byteCount)
        return FrameHeader(version: version, type: type, flags: flags, payloadLength: length)
    }
}

/// Writes ``WireFrame``s as header plus payload. In a pipeline it is a handler of its own
/// (`addHandler(FrameEncoder())`): a frame whose payload is at least ``separatePayloadBytes``
/// goes to the socket as two buffers, header and payload, of one vectored write, so a megabyte
/// of parameters or gradients is not copied once more to put twelve bytes in front of it; a
/// smaller frame is written as one buffer. ``encode(data:out:)`` writes a frame into one buffer.
///
/// A frame whose payload is over the limit for its type is refused with
/// ``WireError/frameTooLarge(type:length:limit:)`` (the write fails and the error goes down the
/// pipeline; nothing is sent), since the peer would refuse it anyway.
public final class FrameEncoder: ChannelOutboundHandler, Sendable {
    public typealias OutboundIn = WireFrame
    public typealias OutboundOut = ByteBuffer

    public let limits: FrameLimits

    /// Payloads from this size on are not copied behind their header.
    public static let separatePayloadBytes = 1 << 16

    public init(limits: FrameLimits = .default) {
        self.limits = limits
    }

    /// Appends `frame`, header and payload, to `out`.
    public func encode(data frame: WireFrame, out: inout ByteBuffer) throws {
        let length = try checkedLength(frame)
        out.reserveCapacity(minimumWritableBytes: FrameHeader.byteCount + length)
        frame.header.write(to: &out)
        var payload = frame.payload
        out.writeBuffer(&payload)
    }

    public func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        let frame = unwrapOutboundIn(data)
        do {
            _ = try checkedLength(frame)
        } catch {
            promise?.fail(error)
            context.fireErrorCaught(error)
            return
        }
        let length = frame.payload.readableBytes
        if length < Self.separatePayloadBytes {
            var out = context.channel.allocator.buffer(capacity: FrameHeader.byteCount + length)
            frame.header.write(to: &out)
            var payload = frame.payload
            out.writeBuffer(&payload)
            context.write(wrapOutboundOut(out), promise: promise)
            return
        }
        var header = context.channel.allocator.buffer(capacity: FrameHeader.byteCount)
        frame.header.write(to: &header)
        context.write(wrapOutboundOut(header), promise: nil)
        context.write(wrapOutboundOut(frame.payload), promise: promise)
    }

    private func checkedLength(_ frame: WireFrame) throws -> Int {
        let length = frame.payload.readableBytes
        let limit = limits.maxPayload(for: frame.type, flags: frame.flags)
        guard length <= limit else {
            throw WireError.frameTooLarge(type: frame.type, length: UInt64(length), limit: limit)
        }
        return length
    }
}
