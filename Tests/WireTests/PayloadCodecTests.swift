import NIOCore
import Testing
@testable import Wire

@Suite("Payload codec")
struct PayloadCodecTests {
    @Test("unshuffle inverts shuffle on every size, including odd tails", arguments: [0, 1, 2, 3, 15, 16, 17, 31, 33, 100, 1001, 4099])
    func shuffleInverse(count: Int) {
        var rng = SeededGenerator(seed: UInt64(count))
        let words = (0..<count).map { _ in UInt32.random(in: 0...UInt32.max, using: &rng) }
        var planes = [UInt8](repeating: 0, count: 4 * count)
        var back = [UInt32](repeating: 0, count: count)
        words.withUnsafeBytes { source in
            planes.withUnsafeMutableBytes { destination in
                ByteShuffle.shuffle(source.baseAddress ?? UnsafeRawPointer(bitPattern: 1)!, count: count, into: destination.baseAddress ?? UnsafeMutableRawPointer(bitPattern: 1)!)
            }
        }
        for (index, word) in words.enumerated() {
            for k in 0..<4 where planes[k * count + index] != UInt8(truncatingIfNeeded: word >> (8 * k)) {
                Issue.record("plane \(k) of value \(index) of \(count): \(planes[k * count + index]) instead of byte \(k) of \(word)")
            }
        }
        planes.withUnsafeBytes { source in
            back.withUnsafeMutableBytes { destination in
                ByteShuffle.unshuffle(source.baseAddress ?? UnsafeRawPointer(bitPattern: 1)!, count: count, into: destination.baseAddress ?? UnsafeMutableRawPointer(bitPattern: 1)!)
            }
        }
        #expect(back == words)
    }

    @Test("shuffle puts byte k of every float in plane k")
    func shuffleLayout() {
        let words: [UInt32] = [0x0403_0201, 0x1413_1211]
        var planes = [UInt8](repeating: 0, count: 8)
        words.withUnsafeBytes { source in
            planes.withUnsafeMutableBytes { ByteShuffle.shuffle(source.baseAddress!, count: 2, into: $0.baseAddress!) }
        }
        #expect(planes == [0x01, 0x11, 0x02, 0x12, 0x03, 0x13, 0x04, 0x14])
    }

    static let specialValues: [Float] = [
        0, -0, 1, -1, .infinity, -.infinity, .nan, Float(bitPattern: 0x7FC0_1234), Float(bitPattern: 0xFF80_0001),
        .leastNonzeroMagnitude, -.leastNormalMagnitude, .greatestFiniteMagnitude, 1e-3, -2.5e-7,
    ]

    @Test("floats round-trip bit for bit in every encoding", arguments: FloatEncoding.allCases, [0, 1, 7, 16, 17, 1001, 266_610])
    func bitExactRoundTrip(encoding: FloatEncoding, count: Int) throws {
        var values = gradientLikeValues(count: count, seed: UInt64(count) + 5)
        for (index, special) in Self.specialValues.enumerated() where index < count { values[(index * 7919) % count] = special }
        let codec = PayloadCodec(.init(floatEncoding: encoding, level: CompressionLevel(3)))
        var buffer = ByteBuffer()
        try codec.encodeFloats(values, into: &buffer)
        buffer.writeString("next")
        let decoded = try codec.decodeFloats(from: &buffer, expectedCount: count)
        #expect(decoded.map(\.bitPattern) == values.map(\.bitPattern))
        #expect(buffer.readString(length: buffer.readableBytes) == "next")
    }

    @Test("incompressible floats fall back to the raw encoding")
    func rawFallback() throws {
        var rng = SeededGenerator(seed: 3)
        let values = (0..<4096).map { _ in Float(bitPattern: UInt32.random(in: 0...UInt32.max, using: &rng)) }
        var buffer = ByteBuffer()
        try PayloadCodec().encodeFloats(values, into: &buffer)
        #expect(buffer.getInteger(at: 4, as: UInt8.self) == FloatEncoding.raw.rawValue)
        #expect(buffer.readableBytes == 9 + 4 * 4096)
        #expect(try PayloadCodec().decodeFloats(from: &buffer, expectedCount: nil).map(\.bitPattern) == values.map(\.bitPattern))
    }

    @Test("gradient-like floats compress, and better with the shuffle")
    func compressionPays() throws {
        let values = gradientLikeValues(count: 266_610)
        var plain = ByteBuffer(), shuffled = ByteBuffer()
        try PayloadCodec(.init(floatEncoding: .zstd)).encodeFloats(values, into: &plain)
        try PayloadCodec(.init(floatEncoding: .shuffledZstd)).encodeFloats(values, into: &shuffled)
        #expect(plain.readableBytes < 4 * values.count)
        #expect(shuffled.readableBytes < plain.readableBytes)
    }

    // MARK: Hostile payloads

    /// A float payload header followed by `data`.
    private func payload(count: UInt32, encoding: FloatEncoding, data: ByteBuffer) -> ByteBuffer {
        var buffer = ByteBuffer()
        buffer.writeInteger(count, endianness: .big)
        buffer.writeInteger(encoding.rawValue)
        buffer.writeInteger(UInt32(data.readableBytes), endianness: .big)
        var data = data
        buffer.writeBuffer(&data)
        return buffer
    }

    /// The zstd frame inside an encoded float payload.
    private func zstdFrame(of values: [Float], encoding: FloatEncoding = .zstd) throws -> ByteBuffer {
        var buffer = ByteBuffer()
        try PayloadCodec(.init(floatEncoding: encoding)).encodeFloats(values, into: &buffer)
        #expect(buffer.getInteger(at: 4, as: UInt8.self) == encoding.rawValue)
        return buffer.getSlice(at: 9, length: buffer.readableBytes - 9)!
    }

    @Test("a count over the decompressed-size limit is refused before allocating")
    func countOverLimit() throws {
        let limits = FrameLimits(maxDecompressedBytes: 1 << 20)
        var buffer = payload(count: UInt32.max, encoding: .zstd, data: try zstdFrame(of: [Float](repeating: 0, count: 100)))
        #expect(throws: WireError.decompressedSizeTooLarge("float payload", declared: 4 * UInt64(UInt32.max), limit: 1 << 20)) {
            try PayloadCodec().decodeFloats(from: &buffer, expectedCount: nil, limits: limits)
        }
    }

    @Test("a zstd frame declaring more than the limit is refused before allocating")
    func declaredSizeOverLimit() throws {
        let limits = FrameLimits(maxDecompressedBytes: 4000)
        // The count claims 1000 floats (within the limit); the frame declares 2000.
        var buffer = payload(count: 1000, encoding: .zstd, data: try zstdFrame(of: [Float](repeating: 0, count: 2000)))
        #expect(throws: WireError.decompressedSizeTooLarge("float payload", declared: 8000, limit: 4000)) {
            try PayloadCodec().decodeFloats(from: &buffer, expectedCount: nil, limits: limits)
        }
    }

    @Test("a zstd frame whose declared size differs from the count is refused", arguments: [FloatEncoding.zstd, .shuffledZstd])
    func declaredSizeMismatch(encoding: FloatEncoding) throws {
        var buffer = payload(count: 100, encoding: encoding, data: try zstdFrame(of: [Float](repeating: 1, count: 101), encoding: encoding))
        #expect(throws: WireError.decompressedSizeMismatch("float payload", declared: 404, expected: 400)) {
            try PayloadCodec().decodeFloats(from: &buffer, expectedCount: nil)
        }
    }

    @Test("corrupted compressed bytes are caught by zstd's checksum")
    func corruptedChecksum() throws {
        let values = gradientLikeValues(count: 5000)
        var frame = try zstdFrame(of: values)
        // The last four bytes of the frame are the checksum of the content.
        let last = frame.writerIndex - 1
        frame.setInteger(frame.getInteger(at: last, as: UInt8.self)! ^ 0x5A, at: last)
        var buffer = payload(count: 5000, encoding: .zstd, data: frame)
        let error = try #require(throws: WireError.self) { try PayloadCodec().decodeFloats(from: &buffer, expectedCount: 5000) }
        #expect(error.code == .compression)
        #expect(error.description.lowercased().contains("checksum"))
    }

    @Test("corruption anywhere in the compressed bytes is refused, never a trap")
    func corruptedAnywhere() throws {
        let values = gradientLikeValues(count: 5000)
        let frame = try zstdFrame(of: values, encoding: .shuffledZstd)
        var refused = 0
        for offset in stride(from: 0, to: frame.readableBytes, by: max(1, frame.readableBytes / 200)) {
            var corrupted = frame
            corrupted.setInteger(corrupted.getInteger(at: offset, as: UInt8.self)! ^ 0x10, at: offset)
            var buffer = payload(count: 5000, encoding: .shuffledZstd, data: corrupted)
            do {
                let decoded = try PayloadCodec().decodeFloats(from: &buffer, expectedCount: 5000)
                Issue.record("corruption at \(offset) went unnoticed; equal: \(decoded == values)")
            } catch is WireError {
                refused += 1
            }
        }
        #expect(refused > 0)
    }

    @Test("a zstd frame without a checksum, or with trailing bytes, is refused")
    func frameWithoutChecksumOrTrailing() throws {
        var frame = try zstdFrame(of: [Float](repeating: 2, count: 64))
        // Frame header descriptor byte follows the 4-byte magic; bit 2 is the checksum flag.
        let descriptorByte = frame.getInteger(at: 4, as: UInt8.self)!
        #expect(descriptorByte & 0x04 != 0)
        var noChecksum = frame
        noChecksum.setInteger(descriptorByte & ~0x04, at: 4)
        var buffer = payload(count: 64, encoding: .zstd, data: noChecksum)
        let error = try #require(throws: WireError.self) { try PayloadCodec().decodeFloats(from: &buffer, expectedCount: 64) }
        #expect(error.description.contains("no checksum"))

        frame.writeBytes([1, 2, 3])
        var trailing = payload(count: 64, encoding: .zstd, data: frame)
        let trailingError = try #require(throws: WireError.self) { try PayloadCodec().decodeFloats(from: &trailing, expectedCount: 64) }
        #expect(trailingError.description.contains("3 bytes after the zstd frame"))
    }

    @Test("a float payload of the wrong count is refused by the expected count")
    func expectedCount() throws {
        var buffer = ByteBuffer()
        try PayloadCodec().encodeFloats([1, 2, 3], into: &buffer)
        #expect(throws: WireError.shapeMismatch("float payload", expected: "4 floats", actual: "3 floats")) {
            try PayloadCodec().decodeFloats(from: &buffer, expectedCount: 4)
        }
    }

    @Test("compression levels are clamped to what libzstd accepts")
    func levels() {
        #expect(CompressionLevel(1000).rawValue == CompressionLevel(22).rawValue)
        #expect(CompressionLevel.fastest.rawValue == 1)
    }
}
