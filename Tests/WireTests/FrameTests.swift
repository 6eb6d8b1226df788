import NIOCore
import NIOEmbedded
import Testing
import Wire

@Suite("Frames")
struct FrameTests {
    @Test("the header's bytes are fixed: magic, version, type, flags, big-endian length")
    func goldenHeader() throws {
        var buffer = ByteBuffer()
        FrameHeader(type: .ping, payloadLength: 8).write(to: &buffer)
        #expect(Array(buffer.readableBytesView) == [0x42, 0x50, 0x57, 0x52, 0x06, 0x30, 0x00, 0x00, 0x00, 0x00, 0x00, 0x08])

        buffer.clear()
        FrameHeader(type: .gradient, payloadLength: 0x0102_0304).write(to: &buffer)
        #expect(Array(buffer.readableBytesView) == [0x42, 0x50, 0x57, 0x52, 0x06, 0x22, 0x00, 0x00, 0x01, 0x02, 0x03, 0x04])
    }

    @Test("a whole ping frame, through the encoder")
    func goldenPingFrame() throws {
        let bytes = try frameBytes(.ping(0x0102_0304_0506_0708))
        #expect(Array(bytes.readableBytesView) == [
            0x42, 0x50, 0x57, 0x52, 0x06, 0x30, 0x00, 0x00, 0x00, 0x00, 0x00, 0x08,
            0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08,
        ])
    }

    @Test("the frame decoder fed one byte at a time yields the same frames")
    func decoderOneByteAtATime() throws {
        var all = ByteBuffer()
        let messages = Samples.everyMessage(signature: Samples.smallSignature, datasetSamples: 3)
        for message in messages {
            var frame = try frameBytes(message)
            all.writeBuffer(&frame)
        }
        let channel = EmbeddedChannel(handler: ByteToMessageHandler(FrameDecoder()))
        var frames: [WireFrame] = []
        var index = all.readerIndex
        while index < all.writerIndex {
            try channel.writeInbound(all.getSlice(at: index, length: 1)!)
            while let frame = try channel.readInbound(as: WireFrame.self) { frames.append(frame) }
            index += 1
        }
        #expect(try channel.finish().isClean)
        #expect(frames.map(\.type) == messages.map(\.type))
        let codec = PayloadCodec()
        let decoded = try frames.map { try WireMessage.decode(type: $0.type, payload: $0.payload, codec: codec) }
        #expect(decoded == messages)
    }

    @Test("in a pipeline the encoder writes the same bytes as encode(data:out:), a large payload as a buffer of its own")
    func encoderHandlerBytes() throws {
        let channel = EmbeddedChannel(handler: FrameEncoder())
        let small = WireFrame(type: .pong, payload: ByteBuffer(repeating: 7, count: 8))
        let large = WireFrame(type: .gradient, payload: ByteBuffer(bytes: (0..<(FrameEncoder.separatePayloadBytes + 5)).map { UInt8(truncatingIfNeeded: $0) }))
        var expected = ByteBuffer()
        for frame in [small, large, small] {
            try channel.writeOutbound(frame)
            try FrameEncoder().encode(data: frame, out: &expected)
        }
        var buffers: [ByteBuffer] = []
        while let bytes = try channel.readOutbound(as: ByteBuffer.self) { buffers.append(bytes) }
        #expect(buffers.map(\.readableBytes) == [FrameHeader.byteCount + 8, FrameHeader.byteCount,
                                                FrameEncoder.separatePayloadBytes + 5, FrameHeader.byteCount + 8])
        var all = ByteBuffer()
        for var bytes in buffers { all.writeBuffer(&bytes) }
        #expect(all == expected)
        _ = try channel.finish()
    }

    @Test("the encoder refuses a payload over the limit of its type")
    func encoderRefusesOversizedFrame() throws {
        let limits = FrameLimits(maxPayloadBytes: 1024, maxControlPayloadBytes: 16)
        var out = ByteBuffer()
        #expect(throws: WireError.frameTooLarge(type: .pong, length: 17, limit: 16)) {
            try FrameEncoder(limits: limits).encode(data: WireFrame(type: .pong, payload: ByteBuffer(repeating: 0, count: 17)), out: &out)
        }
        #expect(out.readableBytes == 0)
    }

    // MARK: Rejections by the frame decoder alone

    private func decodeError(_ bytes: ByteBuffer, limits: FrameLimits = .default) -> WireError? {
        var buffer = bytes
        var decoder = FrameDecoder(limits: limits)
        do {
            while try decoder.decode(buffer: &buffer) != nil {}
            _ = try decoder.decodeLast(buffer: &buffer, seenEOF: true)
            return nil
        } catch {
            return error as? WireError
        }
    }

    @Test("a wrong magic is refused as soon as its first byte arrives")
    func wrongMagic() throws {
        #expect(decodeError(ByteBuffer(string: "GET / HTTP/1.1\r\n")) == .badMagic(found: Array("GET ".utf8)))
        var decoder = FrameDecoder()
        var one = ByteBuffer(bytes: [0x42, 0x51])
        #expect(throws: WireError.badMagic(found: [0x42, 0x51])) { try decoder.decode(buffer: &one) }
    }

    @Test("an unknown version, type or flag is refused")
    func unknownVersionTypeFlags() throws {
        #expect(decodeError(rawFrame(type: 0x30, version: 1, payload: Array(repeating: 0, count: 8))) == .unsupportedVersion(found: 1))
        #expect(decodeError(rawFrame(type: 0x55)) == .unknownMessageType(0x55))
        #expect(decodeError(rawFrame(type: 0x30, flags: 0x0002, payload: Array(repeating: 0, count: 8))) == .reservedFlags(2))
    }

    @Test("an error frame is read whatever its version, so a peer can always say why it refuses")
    func errorFrameOfAnotherVersion() throws {
        var bytes = try frameBytes(.error(ErrorReport(code: .unsupportedVersion, message: "I speak version 9")), version: 9)
        var decoder = FrameDecoder()
        let frame = try #require(try decoder.decode(buffer: &bytes))
        #expect(frame.version == 9)
        let message = try WireMessage.decode(type: frame.type, payload: frame.payload, codec: PayloadCodec())
        #expect(message == .error(ErrorReport(code: .unsupportedVersion, message: "I speak version 9")))
    }

    @Test("a malicious 4 GB length is refused from the header alone, before any payload")
    func maliciousLength() throws {
        var header = rawFrame(type: MessageType.parameters.rawValue, length: UInt32.max)
        var decoder = FrameDecoder()
        #expect(throws: WireError.frameTooLarge(type: .parameters, length: UInt64(UInt32.max), limit: FrameLimits.default.maxPayloadBytes)) {
            try decoder.decode(buffer: &header)
        }
        // A control frame has a much smaller limit.
        #expect(decodeError(rawFrame(type: MessageType.hello.rawValue, length: 1 << 20))?.code == .frameTooLarge)
    }

    @Test("a connection closed mid-frame is reported as truncated")
    func truncated() throws {
        let frame = try frameBytes(.ping(1))
        #expect(decodeError(frame.getSlice(at: 0, length: 7)!) == .truncatedFrame(received: 7, expected: 12))
        #expect(decodeError(frame.getSlice(at: 0, length: 15)!) == .truncatedFrame(received: 15, expected: 20))
        #expect(decodeError(frame) == nil)
    }
}
