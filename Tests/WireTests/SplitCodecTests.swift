import NIOCore
import Testing
@testable import Wire

/// The split encoding (``FloatEncoding/splitZstd``): its layout byte by byte, round trips on
/// gradient-shaped data, and hostile payloads.
@Suite("Split float encoding")
struct SplitCodecTests {
    /// The parts of a split payload's data, to rebuild hostile variants from.
    struct Parts {
        var nonZero: UInt32
        var low: [UInt8]
        var mask: ByteBuffer
        var high: ByteBuffer
        var crc: UInt32

        /// The data bytes (after the float payload header) in protocol order.
        var data: ByteBuffer {
            var buffer = ByteBuffer()
            buffer.writeInteger(nonZero, endianness: .big)
            buffer.writeBytes(low)
            buffer.writeInteger(UInt32(mask.readableBytes), endianness: .big)
            buffer.writeImmutableBuffer(mask)
            buffer.writeInteger(UInt32(high.readableBytes), endianness: .big)
            buffer.writeImmutableBuffer(high)
            buffer.writeInteger(crc, endianness: .big)
            return buffer
        }
    }

    /// Splits `values` the way the codec does, without compressing (zstd frames made with
    /// `compress(parts:)`, which writes declared size and checksum like the codec).
    func parts(of values: [Float], mask maskOverride: [UInt8]? = nil, high highOverride: [UInt8]? = nil) throws -> Parts {
        let count = values.count
        var mask = [UInt8](repeating: 0, count: (count + 7) / 8)
        var high: [UInt8] = []
        var low: [UInt8] = []
        for (i, value) in values.enumerated() {
            let bits = value.bitPattern
            if bits == 0 {
                mask[i / 8] |= 1 << UInt8(i % 8)
            } else {
                high.append(UInt8(bits >> 24))
                low += [UInt8(truncatingIfNeeded: bits), UInt8(truncatingIfNeeded: bits >> 8), UInt8(truncatingIfNeeded: bits >> 16)]
            }
        }
        let codec = PayloadCodec()
        var maskFrame = ByteBuffer(), highFrame = ByteBuffer()
        try (maskOverride ?? mask).withUnsafeBytes { _ = try codec.compress(parts: [$0], into: &maskFrame) }
        try (highOverride ?? high).withUnsafeBytes { _ = try codec.compress(parts: [$0], into: &highFrame) }
        let crc = values.withUnsafeBytes { SplitFloats.crc32c($0) }
        return Parts(nonZero: UInt32(high.count), low: low, mask: maskFrame, high: highFrame, crc: crc)
    }

    func payload(count: Int, data: ByteBuffer) -> ByteBuffer {
        var buffer = ByteBuffer()
        buffer.writeInteger(UInt32(count), endianness: .big)
        buffer.writeInteger(FloatEncoding.splitZstd.rawValue)
        buffer.writeInteger(UInt32(data.readableBytes), endianness: .big)
        buffer.writeImmutableBuffer(data)
        return buffer
    }

    func decode(_ buffer: ByteBuffer, count: Int, limits: FrameLimits = .default) throws -> [Float] {
        var buffer = buffer
        return try PayloadCodec().decodeFloats(from: &buffer, expectedCount: count, limits: limits)
    }

    /// Gradient-shaped values: a first layer whose columns (pixels) are zero for every row, as
    /// black pixels make them, small normal values elsewhere, and the special values.
    static func gradientShaped(count: Int, seed: UInt64) -> [Float] {
        var values = gradientLikeValues(count: count, zeroFraction: 0.05, seed: seed)
        for i in values.indices where i % 784 < 90 || i % 784 > 700 { values[i] = 0 }
        let specials: [Float] = [.nan, -.nan, Float(bitPattern: 0x7FC0_1234), .infinity, -.infinity, -0.0,
                                 .leastNonzeroMagnitude, -.leastNonzeroMagnitude, Float(bitPattern: 0x0000_0001),
                                 Float(bitPattern: 0x007F_FFFF), .greatestFiniteMagnitude, Float(bitPattern: 0x0100_0000)]
        for (k, special) in specials.enumerated() where count > 0 { values[(k * 7_919 + 13) % count] = special }
        return values
    }

    // MARK: Layout and round trips

    @Test("the data is nonZero, low bytes, mask frame, high frame, CRC-32C, in that order")
    func layout() throws {
        let values: [Float] = [0, 1, 0, -2.5, 0, 0, 0, 0, 0, Float(bitPattern: 0x1234_5678)]
        var encoded = ByteBuffer()
        try PayloadCodec(.init(floatEncoding: .splitZstd)).encodeFloats(values, into: &encoded)
        // Ten floats are too few to compress: the sender falls back to raw, so check the
        // layout through the decoder of a hand-made payload and through the parts.
        #expect(encoded.getInteger(at: 4, as: UInt8.self) == FloatEncoding.raw.rawValue)
        let p = try parts(of: values)
        #expect(p.nonZero == 3)
        // 1.0 = 3F80_0000, -2.5 = C020_0000: the low bytes little-endian, the high byte apart.
        #expect(p.low == [0x00, 0x00, 0x80, 0x00, 0x00, 0x20, 0x78, 0x56, 0x34])
        #expect(try decode(payload(count: 10, data: p.data), count: 10).map(\.bitPattern) == values.map(\.bitPattern))
        var mask = [UInt8](repeating: 0, count: 2)
        var high = [UInt8](repeating: 0, count: 10)
        var low = [UInt8](repeating: 0, count: 31)
        let nonZero = values.withUnsafeBytes { source in
            SplitFloats.split(source.baseAddress!, count: 10, mask: &mask, high: &high, low: &low)
        }
        #expect(nonZero == 3)
        #expect(mask == [0b1111_0101, 0b0000_0001])
        #expect(Array(high[0..<3]) == [0x3F, 0xC0, 0x12])
        #expect(Array(low[0..<9]) == p.low)
    }

    @Test("gradient-shaped floats round-trip bit for bit (NaN payloads, infinities, denormals, -0, zeros, odd lengths)",
          arguments: [1, 2, 7, 8, 9, 63, 64, 65, 783, 785, 10_001, 266_610])
    func roundTrip(count: Int) throws {
        let values = Self.gradientShaped(count: count, seed: UInt64(count))
        for level in [CompressionLevel(-1), .fastest, .balanced] {
            let codec = PayloadCodec(.init(floatEncoding: .splitZstd, level: level))
            var buffer = ByteBuffer()
            try codec.encodeFloats(values, into: &buffer)
            buffer.writeString("next")
            let decoded = try codec.decodeFloats(from: &buffer, expectedCount: count)
            #expect(decoded.map(\.bitPattern) == values.map(\.bitPattern), "count \(count), \(level)")
            #expect(buffer.readString(length: buffer.readableBytes) == "next")
        }
        // Through the hand-made parts too (no raw fallback on small counts).
        let p = try parts(of: values)
        #expect(try decode(payload(count: count, data: p.data), count: count).map(\.bitPattern) == values.map(\.bitPattern))
    }

    @Test("all zeros and no zeros at all", arguments: [0, 1, 9, 4096])
    func extremes(count: Int) throws {
        for values in [[Float](repeating: 0, count: count), [Float](repeating: -0.0, count: count),
                       (0..<count).map { Float($0) + 0.5 }] {
            let p = try parts(of: values)
            #expect(try decode(payload(count: count, data: p.data), count: count).map(\.bitPattern) == values.map(\.bitPattern))
            var buffer = ByteBuffer()
            let codec = PayloadCodec(.init(floatEncoding: .splitZstd))
            try codec.encodeFloats(values, into: &buffer)
            #expect(try codec.decodeFloats(from: &buffer, expectedCount: count).map(\.bitPattern) == values.map(\.bitPattern))
        }
    }

    @Test("gradient-shaped floats compress better than with shuffle + zstd")
    func smallerThanShuffle() throws {
        let values = Self.gradientShaped(count: 266_610, seed: 9)
        var split = ByteBuffer(), shuffled = ByteBuffer()
        try PayloadCodec(.init(floatEncoding: .splitZstd)).encodeFloats(values, into: &split)
        try PayloadCodec(.init(floatEncoding: .shuffledZstd)).encodeFloats(values, into: &shuffled)
        #expect(split.getInteger(at: 4, as: UInt8.self) == FloatEncoding.splitZstd.rawValue)
        #expect(split.readableBytes < shuffled.readableBytes)
    }

    // MARK: Hostile payloads

    @Test("truncated at every length: refused with a WireError, never a trap")
    func truncated() throws {
        let values = Self.gradientShaped(count: 1000, seed: 4)
        let data = try parts(of: values).data
        for length in 0..<data.readableBytes {
            let cut = data.getSlice(at: 0, length: length)!
            #expect(throws: WireError.self, "cut to \(length) bytes") { try decode(payload(count: 1000, data: cut), count: 1000) }
        }
    }

    @Test("trailing bytes after the CRC are refused")
    func trailing() throws {
        var data = try parts(of: Self.gradientShaped(count: 1000, seed: 4)).data
        data.writeInteger(UInt8(0))
        let error = try #require(throws: WireError.self) { try decode(payload(count: 1000, data: data), count: 1000) }
        #expect(error.code == .malformedPayload)
    }

    @Test("a non-zero count above the float count is refused before reading further")
    func nonZeroOverCount() throws {
        var p = try parts(of: Self.gradientShaped(count: 100, seed: 1))
        p.nonZero = 101
        let error = try #require(throws: WireError.self) { try decode(payload(count: 100, data: p.data), count: 100) }
        #expect(error.code == .malformedPayload)
        #expect(error.description.contains("101 non-zero floats out of 100"))
    }

    @Test("a mask that disagrees with the non-zero count, or sets bits beyond the count, is refused")
    func maskMismatch() throws {
        let values = Self.gradientShaped(count: 100, seed: 1)
        let good = try parts(of: values)
        // One zero bit cleared: the mask now leaves one more non-zero float than the payload carries.
        var mask = [UInt8](repeating: 0, count: 13)
        for (i, v) in values.enumerated() where v.bitPattern == 0 { mask[i / 8] |= 1 << UInt8(i % 8) }
        var fewer = mask
        let firstZero = values.firstIndex { $0.bitPattern == 0 }!
        fewer[firstZero / 8] &= ~(1 << UInt8(firstZero % 8))
        let p1 = try parts(of: values, mask: fewer)
        let e1 = try #require(throws: WireError.self) { try decode(payload(count: 100, data: p1.data), count: 100) }
        #expect(e1.description.contains("leaves \(good.nonZero + 1) non-zero floats"))
        // A padding bit (float 100 of 100) set.
        var padded = mask
        padded[12] |= 1 << 4
        let p2 = try parts(of: values, mask: padded)
        let e2 = try #require(throws: WireError.self) { try decode(payload(count: 100, data: p2.data), count: 100) }
        #expect(e2.description.contains("beyond its 100 floats"))
    }

    @Test("frames declaring sizes over the limit or other than required are refused before allocating")
    func declaredSizes() throws {
        let values = Self.gradientShaped(count: 1000, seed: 2)
        let p = try parts(of: values)
        // A mask frame of 200 bytes for 1000 floats (125 needed).
        var bigMask = p
        bigMask.mask = try parts(of: [Float](repeating: 0, count: 1600)).mask
        #expect(throws: WireError.decompressedSizeMismatch("float payload mask", declared: 200, expected: 125)) {
            try decode(payload(count: 1000, data: bigMask.data), count: 1000)
        }
        // A high-bytes frame declaring more than the decompressed-size limit.
        var bigHigh = p
        bigHigh.high = try parts(of: [Float](repeating: 1, count: 5000)).high
        #expect(throws: WireError.decompressedSizeTooLarge("float payload high bytes", declared: 5000, limit: 4000)) {
            try decode(payload(count: 1000, data: bigHigh.data), count: 1000, limits: FrameLimits(maxDecompressedBytes: 4000))
        }
        // A high-bytes frame one byte short.
        let shortHigh = try parts(of: values, high: [UInt8](repeating: 0x3F, count: Int(p.nonZero) - 1))
        var mixed = p
        mixed.high = shortHigh.high
        #expect(throws: WireError.decompressedSizeMismatch("float payload high bytes", declared: UInt64(p.nonZero) - 1,
                                                           expected: Int(p.nonZero))) {
            try decode(payload(count: 1000, data: mixed.data), count: 1000)
        }
    }

    @Test("a changed low byte or CRC is caught by the CRC-32C (code compression)")
    func checksum() throws {
        let values = Self.gradientShaped(count: 1000, seed: 3)
        var p = try parts(of: values)
        p.low[17] ^= 0x01
        let e1 = try #require(throws: WireError.self) { try decode(payload(count: 1000, data: p.data), count: 1000) }
        #expect(e1.code == .compression)
        #expect(e1.description.contains("CRC-32C mismatch"))
        p.low[17] ^= 0x01
        p.crc ^= 0x8000_0000
        let e2 = try #require(throws: WireError.self) { try decode(payload(count: 1000, data: p.data), count: 1000) }
        #expect(e2.code == .compression)
    }

    @Test("corruption anywhere in a split payload is refused, never a trap")
    func corruptedAnywhere() throws {
        let values = Self.gradientShaped(count: 5000, seed: 5)
        let data = try parts(of: values).data
        for offset in stride(from: 0, to: data.readableBytes, by: max(1, data.readableBytes / 300)) {
            var corrupted = data
            corrupted.setInteger(corrupted.getInteger(at: offset, as: UInt8.self)! ^ 0x10, at: offset)
            #expect(throws: WireError.self, "corruption at \(offset)") { try decode(payload(count: 5000, data: corrupted), count: 5000) }
        }
    }
}
