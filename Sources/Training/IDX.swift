import CZlib

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// An array of unsigned bytes read from an IDX file, the format MNIST is published in.
///
/// Start with ``read(path:expectedRank:maximumBytes:)``; most code wants the data set built from
/// an images file and a labels file instead: see ``LabeledDataSet`` and ``MNIST``.
///
/// The format: two zero bytes, an element type (only `0x08`, unsigned byte, is accepted), the
/// number of dimensions, one big-endian `UInt32` per dimension, then the elements in row-major
/// order. Files may be gzip-compressed; compression is recognised by the gzip magic bytes
/// `1f 8b`, not by the file name.
public struct IDXArray: Sendable, Equatable {
    /// The sizes of the dimensions, outermost first (for MNIST images: count, rows, columns).
    public let dimensions: [Int]
    /// The elements, row-major; `elements.count` is the product of ``dimensions``.
    public let elements: [UInt8]

    /// The default limit on a file's size, decompressed: 1 GiB, far above MNIST's 47 MB.
    public static let defaultMaximumBytes = 1 << 30

    /// Reads and validates the IDX file at `path`, raw or gzip-compressed.
    ///
    /// - Parameters:
    ///   - expectedRank: the number of dimensions required (3 for images, 1 for labels), or `nil`
    ///     to accept any.
    ///   - maximumBytes: the largest file, decompressed, that will be read into memory.
    /// - Throws: ``IDXError``, whose description names `path` and the problem.
    public static func read(
        path: String, expectedRank: Int? = nil, maximumBytes: Int = defaultMaximumBytes
    ) throws(IDXError) -> IDXArray {
        let contents = try FileContents.read(path: path, maximumBytes: maximumBytes)
        return try IDXArray(decoding: consume contents, source: path,
                            expectedRank: expectedRank, maximumBytes: maximumBytes)
    }

    /// Decodes the bytes of an IDX file held in memory, raw or gzip-compressed.
    ///
    /// `source` names where the bytes came from; it starts every error description.
    public init(
        decoding bytes: consuming [UInt8], source: String, expectedRank: Int? = nil,
        maximumBytes: Int = defaultMaximumBytes
    ) throws(IDXError) {
        let decompressed = GzipInflater.isGzip(bytes)
        if decompressed {
            bytes = try GzipInflater.inflate(bytes, source: source, maximumBytes: maximumBytes)
        }
        self = try IDXArray(parsing: consume bytes, source: source, expectedRank: expectedRank,
                            decompressed: decompressed, maximumBytes: maximumBytes)
    }

    /// Parses an uncompressed IDX image. Takes `bytes` by value so that the header can be dropped
    /// in place, without a second copy of the data.
    private init(
        parsing bytes: consuming [UInt8], source: String, expectedRank: Int?, decompressed: Bool,
        maximumBytes: Int
    ) throws(IDXError) {
        guard bytes.count >= 4 else {
            if bytes.count >= 1, bytes[0] != 0 {
                throw .badMagic(source, firstBytes: bytes)
            }
            throw .truncatedHeader(source, needed: 4, found: bytes.count, decompressed: decompressed)
        }
        guard bytes[0] == 0, bytes[1] == 0 else {
            throw .badMagic(source, firstBytes: Array(bytes.prefix(4)))
        }
        guard bytes[2] == 0x08 else {
            throw .unsupportedType(source, code: bytes[2])
        }
        let rank = Int(bytes[3])
        if let expectedRank, rank != expectedRank {
            throw .wrongRank(source, expected: expectedRank, found: rank)
        }
        guard rank > 0 else {
            throw .zeroDimension(source, dimensions: [])
        }
        let headerSize = 4 + 4 * rank
        guard bytes.count >= headerSize else {
            throw .truncatedHeader(source, needed: headerSize, found: bytes.count,
                                   decompressed: decompressed)
        }
        var dimensions: [Int] = []
        dimensions.reserveCapacity(rank)
        for axis in 0..<rank {
            let offset = 4 + 4 * axis
            var size = 0
            for byte in bytes[offset..<offset + 4] {
                size = size << 8 | Int(byte)
            }
            dimensions.append(size)
        }
        guard !dimensions.contains(0) else {
            throw .zeroDimension(source, dimensions: dimensions)
        }
        // Each size is below 2^32 but their product can overflow: check before trusting it.
        var declared = 1
        for size in dimensions {
            let (product, overflow) = declared.multipliedReportingOverflow(by: size)
            guard !overflow else {
                let shape = dimensions.map(String.init).joined(separator: "x")
                throw .tooLarge(source, what: "the header declares \(shape) elements", limit: maximumBytes)
            }
            declared = product
        }
        let found = bytes.count - headerSize
        guard found >= declared else {
            throw .truncatedData(source, dimensions: dimensions, declared: declared, found: found,
                                 decompressed: decompressed)
        }
        guard found == declared else {
            throw .trailingData(source, dimensions: dimensions, declared: declared, found: found,
                                decompressed: decompressed)
        }
        bytes.removeFirst(headerSize)
        self.dimensions = dimensions
        self.elements = bytes
    }
}

// MARK: - Reading files

/// Reads a whole regular file into a byte array, with an upper bound on its size.
enum FileContents {
    static func read(path: String, maximumBytes: Int) throws(IDXError) -> [UInt8] {
        let descriptor = open(path, O_RDONLY)
        guard descriptor >= 0 else {
            let code = errno
            if code == ENOENT {
                throw .fileMissing(path)
            }
            throw .notReadable(path, reason: systemMessage(code), errno: code)
        }
        defer { close(descriptor) }

        var status = stat()
        guard fstat(descriptor, &status) == 0 else {
            let code = errno
            throw .notReadable(path, reason: systemMessage(code), errno: code)
        }
        guard (status.st_mode & S_IFMT) == S_IFREG else {
            let kind = (status.st_mode & S_IFMT) == S_IFDIR ? "it is a directory" : "it is not a regular file"
            throw .notReadable(path, reason: kind)
        }
        let expected = Int(status.st_size)
        guard expected <= maximumBytes else {
            throw .tooLarge(path, what: "the file holds \(expected) bytes", limit: maximumBytes)
        }

        // Read into a buffer one byte larger than the file so that growth while reading is seen.
        var buffer = [UInt8](repeating: 0, count: expected + 1)
        var filled = 0
        while true {
            if filled == buffer.count {
                guard buffer.count <= maximumBytes else {
                    throw .tooLarge(path, what: "the file holds more than \(maximumBytes) bytes",
                                    limit: maximumBytes)
                }
                buffer.append(contentsOf: repeatElement(0, count: min(buffer.count, maximumBytes + 1 - buffer.count)))
            }
            let count = buffer.withUnsafeMutableBytes { raw in
                systemRead(descriptor, raw.baseAddress! + filled, raw.count - filled)
            }
            if count < 0 {
                let code = errno
                if code == EINTR { continue }
                throw .notReadable(path, reason: systemMessage(code), errno: code)
            }
            if count == 0 { break }
            filled += count
        }
        buffer.removeLast(buffer.count - filled)
        return buffer
    }

    static func systemMessage(_ code: Int32) -> String {
        guard let text = strerror(code) else { return "error \(code)" }
        return String(cString: text)
    }
}

/// `read(2)`, named apart from `FileContents.read`.
private func systemRead(_ descriptor: Int32, _ buffer: UnsafeMutableRawPointer, _ count: Int) -> Int {
    read(descriptor, buffer, count)
}

// MARK: - gzip

/// Decompresses a whole gzip file held in memory with zlib's `inflate`.
///
/// Owns one `z_stream`, kept at a stable heap address and freed in `deinit`. Not thread-safe.
final class GzipInflater {
    private let stream: UnsafeMutablePointer<z_stream>

    static func isGzip(_ bytes: [UInt8]) -> Bool {
        bytes.count >= 2 && bytes[0] == 0x1f && bytes[1] == 0x8b
    }

    private init(source: String) throws(IDXError) {
        stream = .allocate(capacity: 1)
        stream.initialize(to: z_stream())
        // windowBits 15 + 32: the largest window, with automatic detection of a gzip or zlib header.
        let status = inflateInit2_(stream, 15 + 32, zlibVersion(), Int32(MemoryLayout<z_stream>.size))
        guard status == Z_OK else {
            let message = stream.pointee.msg.map { String(cString: $0) }
            stream.deinitialize(count: 1)
            stream.deallocate()
            throw .zlib(source, code: status, message: message)
        }
    }

    deinit {
        inflateEnd(stream)
        stream.deinitialize(count: 1)
        stream.deallocate()
    }

    /// Decompresses `input`, one or more concatenated gzip members, to at most `maximumBytes`.
    static func inflate(_ input: [UInt8], source: String, maximumBytes: Int) throws(IDXError) -> [UInt8] {
        let inflater = try GzipInflater(source: source)
        return try inflater.run(input, source: source, maximumBytes: maximumBytes)
    }

    private func run(_ input: [UInt8], source: String, maximumBytes: Int) throws(IDXError) -> [UInt8] {
        // The gzip trailer ends with the size of the (last member's) data modulo 2^32: a hint for
        // the first allocation, one byte larger so that the end of the stream is reached without
        // growing. A wrong hint costs only reallocations.
        var hint = 0
        if input.count >= 18 {
            for byte in input[(input.count - 4)...].reversed() { hint = hint << 8 | Int(byte) }
        }
        // Deflate cannot expand data more than about 1032 times: a hostile hint allocates no more.
        let initial = min(max(hint, 4096), 1032 * input.count, maximumBytes) + 1
        var output = [UInt8](repeating: 0, count: initial)
        var produced = 0
        var consumed = 0

        while true {
            if produced == output.count {
                guard output.count <= maximumBytes else {
                    throw .tooLarge(source, what: "the gzip stream decompresses to more than \(maximumBytes) bytes",
                                    limit: maximumBytes)
                }
                let growth = min(output.count, maximumBytes + 1 - output.count)
                output.append(contentsOf: repeatElement(0, count: growth))
            }
            // avail_in and avail_out are 32-bit: feed at most 1 GiB at a time.
            let inputChunk = min(input.count - consumed, 1 << 30)
            let outputChunk = min(output.count - produced, 1 << 30)
            let status: Int32 = input.withUnsafeBufferPointer { inBuffer in
                output.withUnsafeMutableBufferPointer { outBuffer in
                    stream.pointee.next_in = UnsafeMutablePointer(mutating: inBuffer.baseAddress! + consumed)
                    stream.pointee.avail_in = UInt32(inputChunk)
                    stream.pointee.next_out = outBuffer.baseAddress! + produced
                    stream.pointee.avail_out = UInt32(outputChunk)
                    let status = CZlib.inflate(stream, Z_NO_FLUSH)
                    stream.pointee.next_in = nil
                    stream.pointee.next_out = nil
                    return status
                }
            }
            consumed += inputChunk - Int(stream.pointee.avail_in)
            produced += outputChunk - Int(stream.pointee.avail_out)

            switch status {
            case Z_STREAM_END:
                if consumed == input.count {
                    output.removeLast(output.count - produced)
                    return output
                }
                // gzip allows several members one after another; anything else is an error.
                let rest = input.count - consumed
                guard rest >= 2, input[consumed] == 0x1f, input[consumed + 1] == 0x8b else {
                    throw .trailingAfterGzip(source, bytes: rest)
                }
                let reset = inflateReset(stream)
                guard reset == Z_OK else {
                    throw .zlib(source, code: reset, message: message)
                }
            case Z_OK:
                continue
            case Z_BUF_ERROR where consumed == input.count:
                // No progress possible and no input left: the stream stops before its end.
                throw .truncatedGzip(source, decompressedSoFar: produced)
            case Z_BUF_ERROR where produced == output.count:
                continue
            default:
                throw .zlib(source, code: status, message: message)
            }
        }
    }

    private var message: String? {
        stream.pointee.msg.map { String(cString: $0) }
    }
}

@available(*, unavailable)
extension GzipInflater: Sendable {}
