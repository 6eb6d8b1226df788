import CZstd
import NIOCore

/// How a float array is written inside a message (the encoding byte of a float payload).
public enum FloatEncoding: UInt8, Hashable, Sendable, CaseIterable {
    /// IEEE-754 binary32, little-endian, uncompressed.
    case raw = 0
    /// The little-endian bytes compressed by zstd as one frame with its checksum.
    case zstd = 1
    /// The bytes byte-shuffled (byte k of every float together, k = 0 least significant), then
    /// compressed by zstd as one frame with its checksum. On this model's gradients it is both
    /// smaller and faster than zstd alone.
    case shuffledZstd = 2
    /// A zero mask and the high byte (sign, seven exponent bits) of every non-zero float, each
    /// compressed by zstd; the three low bytes of every non-zero float stored as they are; a
    /// CRC-32C of the floats. The default: on this model's gradients it is smaller than
    /// ``shuffledZstd`` and several times faster, because zstd only sees a quarter of the bytes
    /// (the rest are close to random). Layout in docs/PROTOCOL.md and ``SplitFloats``.
    case splitZstd = 3
}

/// A zstd compression level, clamped to the range libzstd accepts (negative levels are zstd's
/// fast modes). The default is 1, the fastest regular level.
public struct CompressionLevel: Hashable, Sendable, CustomStringConvertible {
    public let rawValue: Int32

    public init(_ level: Int32) {
        rawValue = min(max(level, ZSTD_minCLevel()), ZSTD_maxCLevel())
    }

    /// Level 1.
    public static let fastest = CompressionLevel(1)
    /// zstd's own default (3).
    public static let balanced = CompressionLevel(3)

    public var description: String { "zstd level \(rawValue)" }
}

/// Compresses and decompresses the float arrays (parameters, gradients) and data sets that
/// messages carry. Start with ``encodeFloats(_:into:)`` and
/// ``decodeFloats(from:expectedCount:limits:what:)``; most code uses it only through
/// ``WireMessage/encode(into:codec:signature:)`` and
/// ``WireMessage/decode(type:payload:codec:limits:signature:)``.
///
/// It owns one zstd compression context and one decompression context (and a scratch buffer for
/// the byte shuffle), reused for every call and freed in `deinit`. It is not thread-safe: give
/// each channel or thread its own.
///
/// A float payload is written as:
///
/// ```
/// count      UInt32 BE   number of floats
/// encoding   UInt8       FloatEncoding raw value
/// byteLength UInt32 BE   bytes that follow
/// data       byteLength  raw little-endian floats, or one zstd frame
/// ```
///
/// Decoding checks, in order and before allocating anything: the count against the expected
/// count, `4 * count` against ``FrameLimits/maxDecompressedBytes``, `byteLength` against the
/// bytes left, then for zstd the frame header's declared content size (present, under the
/// limit, exactly `4 * count`), that the frame carries a checksum, and that the frame ends
/// exactly at `byteLength`. zstd verifies the checksum while decompressing.
public final class PayloadCodec {
    /// The choices a sender makes; a receiver decodes whatever encoding it is sent.
    public struct Configuration: Hashable, Sendable {
        /// How float arrays are encoded. Default ``FloatEncoding/splitZstd``.
        public var floatEncoding: FloatEncoding
        /// The zstd level for floats and data sets. Default ``CompressionLevel/fastest``.
        public var level: CompressionLevel

        public init(floatEncoding: FloatEncoding = .splitZstd, level: CompressionLevel = .fastest) {
            self.floatEncoding = floatEncoding
            self.level = level
        }
    }

    public let configuration: Configuration
    private let compressionContext: OpaquePointer
    private let decompressionContext: OpaquePointer
    private var scratch: UnsafeMutableRawBufferPointer

    public init(_ configuration: Configuration = Configuration()) {
        self.configuration = configuration
        guard let cctx = ZSTD_createCCtx(), let dctx = ZSTD_createDCtx() else {
            fatalError("out of memory: ZSTD_createCCtx/ZSTD_createDCtx returned NULL")
        }
        compressionContext = cctx
        decompressionContext = dctx
        scratch = UnsafeMutableRawBufferPointer.allocate(byteCount: 0, alignment: 64)
        // These cannot fail for in-range values; the level was clamped.
        _ = ZSTD_CCtx_setParameter(cctx, ZSTD_c_compressionLevel, configuration.level.rawValue)
        _ = ZSTD_CCtx_setParameter(cctx, ZSTD_c_checksumFlag, 1)
        _ = ZSTD_CCtx_setParameter(cctx, ZSTD_c_contentSizeFlag, 1)
    }

    deinit {
        ZSTD_freeCCtx(compressionContext)
        ZSTD_freeDCtx(decompressionContext)
        scratch.deallocate()
    }

    // MARK: Float payloads

    /// Appends `values` to `buffer` as a float payload in the configured encoding. When
    /// compression would not make the data smaller, the payload is written ``FloatEncoding/raw``.
    public func encodeFloats(_ values: [Float], into buffer: inout ByteBuffer) throws {
        try values.withUnsafeBufferPointer { try encodeFloats($0, into: &buffer) }
    }

    /// Appends `values` to `buffer` as a float payload in the configured encoding.
    public func encodeFloats(_ values: UnsafeBufferPointer<Float>, into buffer: inout ByteBuffer) throws {
        guard values.count <= Int(UInt32.max) / 4 else {
            throw WireError.encoding("\(values.count) floats do not fit in one payload")
        }
        let rawBytes = values.count * 4
        buffer.writeInteger(UInt32(values.count), endianness: .big)
        let encodingIndex = buffer.writerIndex
        buffer.writeMultipleIntegers(configuration.floatEncoding.rawValue, UInt32(0), endianness: .big)
        let dataStart = buffer.writerIndex

        var encoding = configuration.floatEncoding
        if encoding != .raw, let base = values.baseAddress {
            let written: Int
            switch encoding {
            case .raw, .zstd:
                written = try compress(UnsafeRawBufferPointer(start: base, count: rawBytes), into: &buffer)
            case .shuffledZstd:
                let planes = scratchBuffer(byteCount: rawBytes)
                ByteShuffle.shuffle(UnsafeRawPointer(base), count: values.count, into: planes.baseAddress!)
                written = try compress(UnsafeRawBufferPointer(planes), into: &buffer)
            case .splitZstd:
                written = try writeSplit(values, into: &buffer)
            }
            if written >= rawBytes {
                buffer.moveWriterIndex(to: dataStart)
                encoding = .raw
            }
        } else {
            encoding = .raw
        }
        if encoding == .raw {
            Self.writeLittleEndian(values, into: &buffer)
        }
        buffer.setInteger(encoding.rawValue, at: encodingIndex)
        buffer.setInteger(UInt32(buffer.writerIndex - dataStart), at: encodingIndex + 1, endianness: .big)
    }

    /// The encoding byte of a float payload whose floats are in a slot of the session's shared
    /// payload region (docs/PROTOCOL.md, "Shared memory"); its data is the slot's index (UInt32
    /// big-endian). Not a ``FloatEncoding``: a codec never chooses it, the session's handler does.
    static let sharedSlotEncoding: UInt8 = 4

    /// Appends a float payload of `count` floats that names slot `index` of the shared region.
    static func writeSharedSlot(count: Int, index: Int, into buffer: inout ByteBuffer) {
        buffer.writeInteger(UInt32(count), endianness: .big)
        buffer.writeInteger(sharedSlotEncoding)
        buffer.writeInteger(UInt32(4), endianness: .big)
        buffer.writeInteger(UInt32(index), endianness: .big)
    }

    /// Reads a float payload from the front of `buffer` and advances past it. `what` names the
    /// array in errors ("gradient of shard 3"); `expectedCount`, when known, is the only count
    /// accepted (checked first, before any allocation). Throws ``WireError`` on every violation
    /// listed in the type's documentation.
    public func decodeFloats(
        from buffer: inout ByteBuffer, expectedCount: Int?, limits: FrameLimits = .default, what: String = "float payload"
    ) throws -> [Float] {
        var reader = PayloadReader(buffer, type: nil)
        let values = try readFloats(&reader, expectedCount: expectedCount, limits: limits, what: what)
        buffer = reader.remaining
        return values
    }

    /// ``decodeFloats(from:expectedCount:limits:what:)`` on a message's reader.
    func readFloats(_ reader: inout PayloadReader, expectedCount: Int?, limits: FrameLimits, what: String) throws -> [Float] {
        try readFloatValues(&reader, expectedCount: expectedCount, limits: limits, what: what).array
    }

    /// The same checks as ``readFloats(_:expectedCount:limits:what:)``, but raw floats are
    /// kept as the payload's bytes (``WireFloats``), to be read in place.
    /// With `shared`, a payload may name a slot of that region's family instead of carrying
    /// the floats (encoding 4, ``sharedSlotEncoding``).
    func readFloatValues(_ reader: inout PayloadReader, expectedCount: Int?, limits: FrameLimits, what: String,
                         shared: (region: SharedPayloadRegion, family: SharedPayloadRegion.Family)? = nil) throws -> WireFloats {
        let type = reader.type
        let count = Int(try reader.readInteger(UInt32.self, "\(what) count"))
        let encodingByte = try reader.readInteger(UInt8.self, "\(what) encoding")
        let encoding = FloatEncoding(rawValue: encodingByte)
        guard encoding != nil || encodingByte == Self.sharedSlotEncoding else {
            throw WireError.malformedPayload(type, "unknown \(what) encoding \(encodingByte)")
        }
        let byteLength = Int(try reader.readInteger(UInt32.self, "\(what) byte length"))
        if let expectedCount, count != expectedCount {
            throw WireError.shapeMismatch(what, expected: "\(expectedCount) floats", actual: "\(count) floats")
        }
        if encodingByte == Self.sharedSlotEncoding {
            guard let shared else {
                throw WireError.malformedPayload(type, "\(what) names a shared-memory slot, but this session maps no shared region")
            }
            guard byteLength == 4 else {
                throw WireError.malformedPayload(type, "\(what): a shared-memory slot is named in 4 bytes, the payload has \(byteLength)")
            }
            var slot = PayloadReader(try reader.readSlice(length: 4, what), type: type)
            let index = Int(try slot.readInteger(UInt32.self, "\(what) slot"))
            do {
                return WireFloats(shared: try shared.region.lease(shared.family, index: index, count: count))
            } catch let error as SharedMemoryError {
                throw WireError.malformedPayload(type, "\(what): \(error)")
            }
        }
        guard let encoding else { throw WireError.malformedPayload(type, "unknown \(what) encoding \(encodingByte)") }
        let rawBytes = count * 4
        guard rawBytes <= limits.maxDecompressedBytes else {
            throw WireError.decompressedSizeTooLarge(what, declared: UInt64(rawBytes), limit: limits.maxDecompressedBytes)
        }
        let data = try reader.readSlice(length: byteLength, what)

        switch encoding {
        case .raw:
            guard byteLength == rawBytes else {
                throw WireError.malformedPayload(type, "\(what): \(count) raw floats need \(rawBytes) bytes, payload has \(byteLength)")
            }
            return WireFloats(littleEndianBytes: data)
        case .zstd:
            return WireFloats(try data.withUnsafeReadableBytes { source in
                try validateFrame(source, expectedSize: rawBytes, limit: limits.maxDecompressedBytes, what: what, type: type)
                return try [Float](unsafeUninitializedCapacity: count) { floats, initialized in
                    try decompress(source, into: UnsafeMutableRawBufferPointer(floats), what: what)
                    initialized = count
                }
            })
        case .shuffledZstd:
            return WireFloats(try data.withUnsafeReadableBytes { source in
                try validateFrame(source, expectedSize: rawBytes, limit: limits.maxDecompressedBytes, what: what, type: type)
                let planes = scratchBuffer(byteCount: rawBytes)
                try decompress(source, into: planes, what: what)
                return [Float](unsafeUninitializedCapacity: count) { floats, initialized in
                    if let destination = floats.baseAddress {
                        ByteShuffle.unshuffle(UnsafeRawPointer(planes.baseAddress!), count: count, into: destination)
                    }
                    initialized = count
                }
            })
        case .splitZstd:
            return WireFloats(try readSplit(data, count: count, limits: limits, what: what, type: type))
        }
    }

    /// Writes the data of a ``FloatEncoding/splitZstd`` payload (see docs/PROTOCOL.md):
    ///
    /// ```
    /// nonZero    UInt32 BE         floats whose bit pattern is not 0
    /// low        3 * nonZero       bytes 0, 1, 2 of each non-zero float, in order
    /// maskLength UInt32 BE, mask   zstd frame of the (count + 7) / 8 byte zero mask
    /// highLength UInt32 BE, high   zstd frame of byte 3 of each non-zero float
    /// crc        UInt32 BE         CRC-32C of the 4 * count little-endian float bytes
    /// ```
    ///
    /// Returns the bytes written.
    private func writeSplit(_ values: UnsafeBufferPointer<Float>, into buffer: inout ByteBuffer) throws -> Int {
        let count = values.count
        let start = buffer.writerIndex
        let maskBytes = (count + 7) / 8
        let work = scratchBuffer(byteCount: maskBytes + count)
        let mask = work.baseAddress!.assumingMemoryBound(to: UInt8.self)
        let high = mask + maskBytes
        buffer.writeInteger(UInt32(0), endianness: .big)
        var nonZero = 0
        buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: 3 * count + 1) { low in
            nonZero = SplitFloats.split(UnsafeRawPointer(values.baseAddress!), count: count, mask: mask, high: high,
                                        low: low.baseAddress!)
            return 3 * nonZero
        }
        buffer.setInteger(UInt32(nonZero), at: start, endianness: .big)
        for part in [UnsafeRawBufferPointer(start: mask, count: maskBytes), UnsafeRawBufferPointer(start: high, count: nonZero)] {
            let lengthIndex = buffer.writerIndex
            buffer.writeInteger(UInt32(0), endianness: .big)
            let length = try compress(part, into: &buffer)
            buffer.setInteger(UInt32(length), at: lengthIndex, endianness: .big)
        }
        buffer.writeInteger(SplitFloats.crc32c(UnsafeRawBufferPointer(values)), endianness: .big)
        return buffer.writerIndex - start
    }

    /// Reads the data of a ``FloatEncoding/splitZstd`` payload of `count` floats: every length
    /// is checked against the bytes left, both zstd frames as for ``FloatEncoding/zstd`` (the
    /// mask must declare `(count + 7) / 8` bytes, the high bytes `nonZero`), the mask must
    /// describe exactly `nonZero` non-zero floats, and the CRC-32C must match the result.
    private func readSplit(_ data: ByteBuffer, count: Int, limits: FrameLimits, what: String, type: MessageType?) throws -> [Float] {
        var reader = PayloadReader(data, type: type)
        let nonZero = Int(try reader.readInteger(UInt32.self, "\(what) non-zero count"))
        guard nonZero <= count else {
            throw WireError.malformedPayload(type, "\(what): \(nonZero) non-zero floats out of \(count)")
        }
        let low = try reader.readSlice(length: 3 * nonZero, "\(what) low bytes of \(nonZero) floats")
        let maskFrame = try reader.readSlice(length: Int(try reader.readInteger(UInt32.self, "\(what) mask length")), "\(what) mask")
        let highFrame = try reader.readSlice(length: Int(try reader.readInteger(UInt32.self, "\(what) high bytes length")),
                                             "\(what) high bytes")
        let crc = try reader.readInteger(UInt32.self, "\(what) CRC-32C")
        try reader.finish()

        let maskBytes = (count + 7) / 8
        let work = scratchBuffer(byteCount: maskBytes + nonZero)
        let mask = UnsafeMutableRawBufferPointer(rebasing: work[0..<maskBytes])
        let high = UnsafeMutableRawBufferPointer(rebasing: work[maskBytes...])
        try maskFrame.withUnsafeReadableBytes { source in
            try validateFrame(source, expectedSize: maskBytes, limit: limits.maxDecompressedBytes, what: "\(what) mask", type: type)
            try decompress(source, into: mask, what: "\(what) mask")
        }
        guard let described = SplitFloats.nonZeroCount(mask: UnsafeRawBufferPointer(mask), count: count) else {
            throw WireError.malformedPayload(type, "\(what): the zero mask has bits set beyond its \(count) floats")
        }
        guard described == nonZero else {
            throw WireError.malformedPayload(type, "\(what): the zero mask leaves \(described) non-zero floats, the payload carries \(nonZero)")
        }
        try highFrame.withUnsafeReadableBytes { source in
            try validateFrame(source, expectedSize: nonZero, limit: limits.maxDecompressedBytes, what: "\(what) high bytes", type: type)
            try decompress(source, into: high, what: "\(what) high bytes")
        }
        let values = low.withUnsafeReadableBytes { lowBytes in
            [Float](unsafeUninitializedCapacity: count) { floats, initialized in
                if let destination = floats.baseAddress {
                    SplitFloats.join(mask: UnsafeRawBufferPointer(mask), high: UnsafeRawBufferPointer(high), low: lowBytes,
                                     count: count, into: UnsafeMutableRawPointer(destination))
                }
                initialized = count
            }
        }
        let actual = values.withUnsafeBytes { SplitFloats.crc32c($0) }
        guard actual == crc else {
            throw WireError.checksumMismatch(what, expected: crc, actual: actual)
        }
        return values
    }

    // MARK: Byte payloads (data sets)

    /// Compresses the concatenation of `parts` as one zstd frame (declared size, checksum)
    /// appended to `buffer`; returns the bytes written.
    @discardableResult
    func compress(parts: [UnsafeRawBufferPointer], into buffer: inout ByteBuffer) throws -> Int {
        let total = parts.reduce(0) { $0 + $1.count }
        let cctx = compressionContext
        try check(ZSTD_CCtx_reset(cctx, ZSTD_reset_session_only), "reset")
        try check(ZSTD_CCtx_setPledgedSrcSize(cctx, UInt64(total)), "setting the source size")
        let bound = ZSTD_compressBound(total)
        return try buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: bound) { destination in
            var output = ZSTD_outBuffer(dst: destination.baseAddress, size: destination.count, pos: 0)
            for part in parts where part.count > 0 {
                var input = ZSTD_inBuffer(src: part.baseAddress, size: part.count, pos: 0)
                while input.pos < input.size {
                    try check(ZSTD_compressStream2(cctx, &output, &input, ZSTD_e_continue), "compression")
                }
            }
            var empty = ZSTD_inBuffer(src: nil, size: 0, pos: 0)
            while try check(ZSTD_compressStream2(cctx, &output, &empty, ZSTD_e_end), "compression") != 0 {}
            return output.pos
        }
    }

    /// Decompresses one zstd frame that must declare exactly `expectedSize` bytes (at most
    /// `limit`), checked before the result is allocated.
    func decompressBytes(
        _ source: UnsafeRawBufferPointer, expectedSize: Int, limit: Int, what: String, type: MessageType?
    ) throws -> [UInt8] {
        try validateFrame(source, expectedSize: expectedSize, limit: limit, what: what, type: type)
        return try [UInt8](unsafeUninitializedCapacity: expectedSize) { bytes, initialized in
            try decompress(source, into: UnsafeMutableRawBufferPointer(bytes), what: what)
            initialized = expectedSize
        }
    }

    // MARK: zstd

    /// Compresses `source` as one frame appended to `buffer`; returns the bytes written.
    private func compress(_ source: UnsafeRawBufferPointer, into buffer: inout ByteBuffer) throws -> Int {
        let bound = ZSTD_compressBound(source.count)
        return try buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: bound) { destination in
            try check(
                ZSTD_compress2(compressionContext, destination.baseAddress, destination.count, source.baseAddress, source.count),
                "compression")
        }
    }

    /// The checks made on a zstd frame before anything is allocated for its contents.
    private func validateFrame(
        _ source: UnsafeRawBufferPointer, expectedSize: Int, limit: Int, what: String, type: MessageType?
    ) throws {
        var header = ZSTD_frameHeader()
        let result = ZSTD_getFrameHeader(&header, source.baseAddress, source.count)
        try check(result, "reading the frame header of \(what)")
        guard result == 0 else {
            throw WireError.malformedPayload(type, "\(what): zstd frame header cut short (\(source.count) bytes)")
        }
        guard header.frameType == ZSTD_frame else {
            throw WireError.malformedPayload(type, "\(what): a skippable zstd frame instead of data")
        }
        let declared = header.frameContentSize
        guard declared != zstdContentSizeUnknown else {
            throw WireError.malformedPayload(type, "\(what): the zstd frame does not declare its decompressed size")
        }
        guard declared <= UInt64(limit) else {
            throw WireError.decompressedSizeTooLarge(what, declared: declared, limit: limit)
        }
        guard declared == UInt64(expectedSize) else {
            throw WireError.decompressedSizeMismatch(what, declared: declared, expected: expectedSize)
        }
        guard header.checksumFlag != 0 else {
            throw WireError.malformedPayload(type, "\(what): the zstd frame carries no checksum")
        }
        let frameSize = try check(ZSTD_findFrameCompressedSize(source.baseAddress, source.count), "reading the frame of \(what)")
        guard frameSize == source.count else {
            throw WireError.malformedPayload(type, "\(what): \(source.count - frameSize) bytes after the zstd frame")
        }
    }

    /// Decompresses a validated frame into exactly `destination.count` bytes.
    private func decompress(_ source: UnsafeRawBufferPointer, into destination: UnsafeMutableRawBufferPointer, what: String) throws {
        var placeholder: UInt8 = 0
        let produced = try withUnsafeMutablePointer(to: &placeholder) { fallback in
            try check(
                ZSTD_decompressDCtx(
                    decompressionContext, destination.baseAddress ?? UnsafeMutableRawPointer(fallback), destination.count,
                    source.baseAddress, source.count),
                "decompression of \(what)")
        }
        guard produced == destination.count else {
            throw WireError.decompressedSizeMismatch(what, declared: UInt64(produced), expected: destination.count)
        }
    }

    @discardableResult
    private func check(_ result: Int, _ operation: @autoclosure () -> String) throws -> Int {
        if ZSTD_isError(result) != 0 {
            throw WireError.zstd(
                operation: operation(), code: Int(ZSTD_getErrorCode(result).rawValue),
                name: String(cString: ZSTD_getErrorName(result)))
        }
        return result
    }

    // MARK: Helpers

    private func scratchBuffer(byteCount: Int) -> UnsafeMutableRawBufferPointer {
        if scratch.count < byteCount {
            scratch.deallocate()
            scratch = UnsafeMutableRawBufferPointer.allocate(byteCount: byteCount, alignment: 64)
        }
        return UnsafeMutableRawBufferPointer(rebasing: scratch[0..<byteCount])
    }

    private static func writeLittleEndian(_ values: UnsafeBufferPointer<Float>, into buffer: inout ByteBuffer) {
        #if _endian(little)
        buffer.writeBytes(UnsafeRawBufferPointer(values))
        #else
        for value in values { buffer.writeInteger(value.bitPattern, endianness: .little) }
        #endif
    }

    static func readLittleEndian(count: Int, from data: inout ByteBuffer) -> [Float] {
        #if _endian(little)
        return data.withUnsafeReadableBytes { bytes in
            [Float](unsafeUninitializedCapacity: count) { floats, initialized in
                UnsafeMutableRawBufferPointer(floats).copyMemory(from: UnsafeRawBufferPointer(rebasing: bytes[0..<(4 * count)]))
                initialized = count
            }
        }
        #else
        return (0..<count).map { _ in Float(bitPattern: data.readInteger(endianness: .little, as: UInt32.self)!) }
        #endif
    }
}

@available(*, unavailable)
extension PayloadCodec: Sendable {}

/// `ZSTD_CONTENTSIZE_UNKNOWN`, a macro Swift does not import.
private let zstdContentSizeUnknown: UInt64 = .max
