import NIOCore
import Testing
import Wire

/// Hostile inputs of the kinds the fuzz harnesses (FuzzTesting/, docs/FUZZING.md) generate, each
/// with the exact error it must give: lying zstd frame headers, frames that are not data, sizes
/// at and over their limits, fields past their ranges. The cases that FrameTests, MessageTests
/// and PayloadCodecTests already cover are not repeated here. An input that makes a harness
/// crash is added here, as bytes, with the error it must give instead.
@Suite("Fuzz regressions")
struct FuzzRegressionTests {
    let codec = PayloadCodec()

    /// A parameters payload of step 1: `count`, `encoding`, then `data` as the float payload.
    private func parameters(count: UInt32, encoding: FloatEncoding, data: [UInt8]) -> ByteBuffer {
        var buffer = ByteBuffer()
        buffer.writeInteger(UInt64(1), endianness: .big)
        buffer.writeInteger(count, endianness: .big)
        buffer.writeInteger(encoding.rawValue)
        buffer.writeInteger(UInt32(data.count), endianness: .big)
        buffer.writeBytes(data)
        return buffer
    }

    /// The zstd frame the codec writes for `values`.
    private func zstdFrame(of values: [Float]) throws -> [UInt8] {
        var buffer = ByteBuffer()
        try PayloadCodec(.init(floatEncoding: .zstd)).encodeFloats(values, into: &buffer)
        #expect(buffer.getInteger(at: 4, as: UInt8.self) == FloatEncoding.zstd.rawValue)
        return Array(buffer.readableBytesView.dropFirst(9))
    }

    /// `frame` with its content-size field rewritten to `size`. The codec's frames for 64...16,447
    /// bytes have a single-segment header, no dictionary id and a 2-byte field holding size - 256.
    private func withDeclaredSize(_ frame: [UInt8], _ size: Int) throws -> [UInt8] {
        let descriptor = frame[4]
        try #require(descriptor >> 6 == 1 && descriptor & 0x20 != 0 && descriptor & 0x03 == 0, "header layout \(descriptor)")
        var patched = frame
        patched[5] = UInt8((size - 256) & 0xFF)
        patched[6] = UInt8((size - 256) >> 8)
        return patched
    }

    @Test("a zstd frame that declares the expected size but holds fewer bytes is refused by zstd")
    func frameLyingLarger() throws {
        // 100 floats compressed, declared as 101: every check before decompressing passes.
        let lying = try withDeclaredSize(try zstdFrame(of: (0..<100).map { Float($0 % 5) }), 404)
        let error = try #require(throws: WireError.self) {
            try WireMessage.decode(type: .parameters, payload: parameters(count: 101, encoding: .zstd, data: lying), codec: codec)
        }
        #expect(error.code == .compression)
        #expect(error.description.hasPrefix("zstd decompression of parameters of step 1 failed"))
    }

    @Test("a zstd frame that declares the expected size but holds more bytes is refused by zstd")
    func frameLyingSmaller() throws {
        let lying = try withDeclaredSize(try zstdFrame(of: (0..<100).map { Float($0 % 5) }), 396)
        let error = try #require(throws: WireError.self) {
            try WireMessage.decode(type: .parameters, payload: parameters(count: 99, encoding: .zstd, data: lying), codec: codec)
        }
        #expect(error.code == .compression)
        #expect(error.description.hasPrefix("zstd decompression of parameters of step 1 failed"))
    }

    @Test("a skippable zstd frame is not data")
    func skippableFrame() throws {
        // Magic 0x184D2A50 (little-endian), 4-byte size, that many bytes.
        let skippable: [UInt8] = [0x50, 0x2A, 0x4D, 0x18, 4, 0, 0, 0, 1, 2, 3, 4]
        #expect(throws: WireError.malformedPayload(.parameters, "parameters of step 1: a skippable zstd frame instead of data")) {
            try WireMessage.decode(type: .parameters, payload: parameters(count: 1, encoding: .shuffledZstd, data: skippable), codec: codec)
        }
    }

    @Test("a zstd frame that does not declare its size is refused before decompressing")
    func frameWithoutContentSize() throws {
        // Frame header: magic, descriptor 0x04 (checksum, no content size, not single-segment),
        // window byte; then one raw last block of 4 bytes and a (wrong, never read) checksum.
        let frame: [UInt8] = [0x28, 0xB5, 0x2F, 0xFD, 0x04, 0x00, 0x21, 0x00, 0x00, 1, 2, 3, 4, 0, 0, 0, 0]
        #expect(throws: WireError.malformedPayload(.parameters, "parameters of step 1: the zstd frame does not declare its decompressed size")) {
            try WireMessage.decode(type: .parameters, payload: parameters(count: 1, encoding: .zstd, data: frame), codec: codec)
        }
    }

    @Test("a zstd frame header cut short, or an empty one, is refused", arguments: [0, 1, 3, 4])
    func frameHeaderCutShort(length: Int) throws {
        let prefix = Array([UInt8]([0x28, 0xB5, 0x2F, 0xFD]).prefix(length))
        #expect(throws: WireError.malformedPayload(.parameters, "parameters of step 1: zstd frame header cut short (\(length) bytes)")) {
            try WireMessage.decode(type: .parameters, payload: parameters(count: 0, encoding: .zstd, data: prefix), codec: codec)
        }
    }

    @Test("a range task that ends beyond UInt32 is refused")
    func rangeBeyondUInt32() throws {
        var task = ByteBuffer()
        task.writeInteger(UInt64(7), endianness: .big)
        task.writeInteger(UInt32(0), endianness: .big)
        task.writeBytes([TaskKind.evaluate.rawValue, DatasetKind.test.rawValue, 2])
        task.writeMultipleIntegers(UInt32.max, UInt32(2), endianness: .big)
        #expect(throws: WireError.malformedPayload(.task, "range 4294967295..<4294967297 beyond UInt32")) {
            try WireMessage.decode(type: .task, payload: task, codec: codec)
        }
    }

    /// A hello payload: version 1, session 1, a float32 signature of `layers`, `name`, `extensions`.
    private func hello(layers: [UInt32], name: [UInt8] = [0x63], extensions: [UInt8] = [0]) -> ByteBuffer {
        var buffer = ByteBuffer()
        buffer.writeInteger(UInt8(1))
        buffer.writeInteger(UInt64(1), endianness: .big)
        buffer.writeInteger(ModelSignature.Scalar.float32.rawValue)
        buffer.writeInteger(UInt16(layers.count), endianness: .big)
        for size in layers { buffer.writeInteger(size, endianness: .big) }
        buffer.writeInteger(UInt16(name.count), endianness: .big)
        buffer.writeBytes(name)
        buffer.writeBytes(extensions)
        return buffer
    }

    @Test("a hello with fields over their limits or invalid UTF-8 is refused with the field named")
    func helloOverLimits() throws {
        func refusal(_ payload: ByteBuffer) -> WireError? {
            do {
                _ = try WireMessage.decode(type: .hello, payload: payload, codec: codec)
                return nil
            } catch {
                return error as? WireError
            }
        }
        #expect(refusal(hello(layers: Array(repeating: 1, count: 65))) == .malformedPayload(.hello, "65 layers, over the limit of 64"))
        #expect(refusal(hello(layers: [784, 1 << 24 + 1])) == .malformedPayload(.hello, "layer 1 has 16777217 neurons, over the limit of 16777216"))
        #expect(refusal(hello(layers: [2, 2], name: Array(repeating: 0x61, count: 1025)))
            == .malformedPayload(.hello, "coordinator name of 1025 bytes is over the limit of 1024"))
        #expect(refusal(hello(layers: [2, 2], name: [0xC3, 0x28])) == .malformedPayload(.hello, "coordinator name is not valid UTF-8"))
        #expect(refusal(hello(layers: [2, 2], extensions: [17])) == .malformedPayload(.hello, "17 extensions, over the limit of 16"))
        #expect(refusal(hello(layers: [2, 2], extensions: [1, 0, 9, 0x10, 0x01]))
            == .malformedPayload(.hello, "extension 9 of 4097 bytes, over the limit of 4096"))
        #expect(refusal(hello(layers: [2, 2], extensions: [1, 0, 9, 0x00, 0x08, 1, 2]))
            == .malformedPayload(.hello, "value of extension 9 needs 8 bytes, 2 remain"))
    }

    @Test("a control frame is accepted at its limit and refused one byte over it, from the header")
    func controlFrameAtLimit() throws {
        let limit = FrameLimits.default.maxControlPayloadBytes
        var decoder = FrameDecoder()
        var atLimit = rawFrame(type: MessageType.ping.rawValue, length: UInt32(limit))
        #expect(try decoder.decode(buffer: &atLimit) == nil)
        #expect(atLimit.readableBytes == 0)

        var decoder2 = FrameDecoder()
        var over = rawFrame(type: MessageType.ping.rawValue, length: UInt32(limit + 1))
        #expect(throws: WireError.frameTooLarge(type: .ping, length: UInt64(limit + 1), limit: limit)) {
            try decoder2.decode(buffer: &over)
        }
    }

    @Test("frames before a bad header are delivered, then the error; nothing after it is read")
    func goodFramesThenGarbage() throws {
        var stream = try frameBytes(.ping(1))
        var pong = try frameBytes(.pong(2))
        stream.writeBuffer(&pong)
        stream.writeBytes([0x42, 0x50, 0x57, 0x52, 0x01, 0x55, 0, 0, 0, 0, 0, 0])
        stream.writeBuffer(&pong)
        var decoder = FrameDecoder()
        var types: [MessageType] = []
        let error = try #require(throws: WireError.self) {
            while let frame = try decoder.decode(buffer: &stream) { types.append(frame.type) }
        }
        #expect(types == [.ping, .pong])
        #expect(error == .unknownMessageType(0x55))
    }
}
