/// Why an IDX file or a data set built from IDX files could not be loaded.
///
/// Every description names the file (or directory) concerned, the problem, and what to do about
/// it, so that it can be shown to the user as is. Use ``code`` to tell the problems apart in code.
public struct IDXError: Error, CustomStringConvertible, Sendable {
    /// The kind of problem, for code that reacts to some of them differently.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        private let name: String
        private init(_ name: String) { self.name = name }
        public var description: String { name }

        public static let fileMissing = Code("fileMissing")
        public static let notReadable = Code("notReadable")
        public static let tooLarge = Code("tooLarge")
        public static let badMagic = Code("badMagic")
        public static let unsupportedType = Code("unsupportedType")
        public static let wrongRank = Code("wrongRank")
        public static let zeroDimension = Code("zeroDimension")
        public static let truncated = Code("truncated")
        public static let trailingData = Code("trailingData")
        public static let corruptGzip = Code("corruptGzip")
        public static let countMismatch = Code("countMismatch")
        public static let invalidShape = Code("invalidShape")
        public static let labelOutOfRange = Code("labelOutOfRange")
        public static let invalidClassCount = Code("invalidClassCount")
    }

    private enum Problem: Sendable {
        case fileMissing(what: String, hint: String)
        case notReadable(reason: String, errno: Int32?)
        case tooLarge(bytes: String, limit: Int)
        case badMagic(firstBytes: [UInt8])
        case unsupportedType(code: UInt8)
        case wrongRank(expected: Int, found: Int)
        case zeroDimension(dimensions: [Int])
        case truncatedHeader(needed: Int, found: Int, decompressed: Bool)
        case truncatedData(dimensions: [Int], declared: Int, found: Int, decompressed: Bool)
        case trailingData(dimensions: [Int], declared: Int, found: Int, decompressed: Bool)
        case truncatedGzip(decompressedSoFar: Int)
        case trailingAfterGzip(bytes: Int)
        case zlib(code: Int32, message: String?)
        case countMismatch(images: Int, labelsPath: String, labels: Int)
        case invalidShape(detail: String)
        case labelOutOfRange(sample: Int, label: Int, classCount: Int)
        case invalidClassCount(Int)
    }

    /// The file or directory the problem is about.
    public let path: String
    private let problem: Problem

    private init(_ path: String, _ problem: Problem) {
        self.path = path
        self.problem = problem
    }

    /// The kind of problem.
    public var code: Code {
        switch problem {
        case .fileMissing: .fileMissing
        case .notReadable: .notReadable
        case .tooLarge: .tooLarge
        case .badMagic: .badMagic
        case .unsupportedType: .unsupportedType
        case .wrongRank: .wrongRank
        case .zeroDimension: .zeroDimension
        case .truncatedHeader, .truncatedData, .truncatedGzip: .truncated
        case .trailingData, .trailingAfterGzip: .trailingData
        case .zlib: .corruptGzip
        case .countMismatch: .countMismatch
        case .invalidShape: .invalidShape
        case .labelOutOfRange: .labelOutOfRange
        case .invalidClassCount: .invalidClassCount
        }
    }

    private static let checkCopy =
        "re-download the file or check the copy (sha256sum -c --ignore-missing SHA256SUMS)"

    public var description: String {
        "\(path): " + explanation
    }

    private var explanation: String {
        switch problem {
        case let .fileMissing(what, hint):
            return "\(what); \(hint)"
        case let .notReadable(reason, errno):
            let code = errno.map { " (errno \($0))" } ?? ""
            return "cannot read the file: \(reason)\(code); check that it is a readable regular file"
        case let .tooLarge(bytes, limit):
            return "too large: \(bytes), more than the limit of \(limit) bytes; "
                + "this is not an MNIST-sized IDX file (raise maximumBytes if it is meant to be this big)"
        case let .badMagic(firstBytes):
            let hex = firstBytes.map { String($0, radix: 16).leftPadded(to: 2) }.joined(separator: " ")
            return "not an IDX file: it starts with bytes \(hex), not with two zero bytes "
                + "(IDX) or 1f 8b (gzip); check that the path names an IDX file"
        case let .unsupportedType(code):
            return "unsupported IDX element type 0x\(String(code, radix: 16).leftPadded(to: 2)) "
                + "(\(Self.typeName(code))); only 0x08 (unsigned byte) is supported, as used by MNIST"
        case let .wrongRank(expected, found):
            return "wrong number of dimensions: expected \(expected) "
                + "(\(expected == 3 ? "images: count x rows x columns" : expected == 1 ? "labels: count" : "dimensions")), "
                + "found \(found); check that images and labels files are not swapped"
        case let .zeroDimension(dimensions):
            let declared = dimensions.isEmpty ? "no dimensions" : "dimensions \(Self.shape(dimensions))"
            return "empty data set: the header declares \(declared); there must be at least one "
                + "dimension and every dimension must be at least 1"
        case let .truncatedHeader(needed, found, decompressed):
            return "truncated: the IDX header needs \(needed) bytes but the file holds "
                + "\(found)\(decompressed ? " after decompression" : ""); \(Self.checkCopy)"
        case let .truncatedData(dimensions, declared, found, decompressed):
            return "truncated: header declares \(Self.shape(dimensions)) = \(declared) bytes of data "
                + "but the file holds \(found)\(decompressed ? " after decompression" : ""); \(Self.checkCopy)"
        case let .trailingData(dimensions, declared, found, decompressed):
            return "trailing data: header declares \(Self.shape(dimensions)) = \(declared) bytes of data "
                + "but the file holds \(found)\(decompressed ? " after decompression" : "") "
                + "(\(found - declared) extra); \(Self.checkCopy)"
        case let .truncatedGzip(decompressedSoFar):
            return "truncated gzip stream: the compressed data ends before the end of the stream "
                + "(after \(decompressedSoFar) decompressed bytes); \(Self.checkCopy)"
        case let .trailingAfterGzip(bytes):
            return "trailing data: \(bytes) bytes after the end of the gzip stream that are not "
                + "another gzip member; \(Self.checkCopy)"
        case let .zlib(code, message):
            return "corrupt gzip stream: zlib inflate failed with \(Self.zlibName(code)) (\(code))"
                + (message.map { ": \($0)" } ?? "") + "; \(Self.checkCopy)"
        case let .countMismatch(images, labelsPath, labels):
            return "image count does not match label count: \(path) holds \(images) images but "
                + "\(labelsPath) holds \(labels) labels; check that the two files belong to the same "
                + "set (train with train, t10k with t10k)"
        case let .invalidShape(detail):
            return "invalid data set: \(detail)"
        case let .labelOutOfRange(sample, label, classCount):
            return "label out of range: sample \(sample) has label \(label) but the data set has "
                + "\(classCount) classes (0..<\(classCount)); check the labels file or the class count"
        case let .invalidClassCount(count):
            return "invalid class count \(count): it must be between 1 and 256 for byte labels"
        }
    }

    private static func shape(_ dimensions: [Int]) -> String {
        dimensions.map(String.init).joined(separator: "x")
    }

    private static func typeName(_ code: UInt8) -> String {
        switch code {
        case 0x08: "unsigned byte"
        case 0x09: "signed byte"
        case 0x0B: "16-bit integer"
        case 0x0C: "32-bit integer"
        case 0x0D: "32-bit float"
        case 0x0E: "64-bit float"
        default: "not an IDX type"
        }
    }

    /// zlib's own names for its return codes.
    private static func zlibName(_ code: Int32) -> String {
        switch code {
        case 0: "Z_OK"
        case 1: "Z_STREAM_END"
        case 2: "Z_NEED_DICT"
        case -1: "Z_ERRNO"
        case -2: "Z_STREAM_ERROR"
        case -3: "Z_DATA_ERROR"
        case -4: "Z_MEM_ERROR"
        case -5: "Z_BUF_ERROR"
        case -6: "Z_VERSION_ERROR"
        default: "unknown zlib code"
        }
    }
}

// MARK: - Factories

extension IDXError {
    /// No file at `path`.
    public static func fileMissing(_ path: String) -> IDXError {
        IDXError(path, .fileMissing(
            what: "no such file",
            hint: "check the path (the repository ships MNIST in data/mnist)"))
    }

    /// A data-set directory lacks one of the files it should hold, or does not exist.
    public static func dataSetFileMissing(directory: String, missing: String, hint: String) -> IDXError {
        IDXError(directory, .fileMissing(what: missing, hint: hint))
    }

    /// The file exists but cannot be opened or read; `errno` is the system's code if there is one.
    public static func notReadable(_ path: String, reason: String, errno: Int32? = nil) -> IDXError {
        IDXError(path, .notReadable(reason: reason, errno: errno))
    }

    /// The file, its decompressed contents or its declared data exceed `limit` bytes.
    public static func tooLarge(_ path: String, what: String, limit: Int) -> IDXError {
        IDXError(path, .tooLarge(bytes: what, limit: limit))
    }

    /// The file starts with neither the IDX magic nor the gzip magic.
    public static func badMagic(_ path: String, firstBytes: [UInt8]) -> IDXError {
        IDXError(path, .badMagic(firstBytes: Array(firstBytes.prefix(4))))
    }

    /// The IDX element type is not 0x08 (unsigned byte).
    public static func unsupportedType(_ path: String, code: UInt8) -> IDXError {
        IDXError(path, .unsupportedType(code: code))
    }

    /// The file has `found` dimensions where `expected` were required.
    public static func wrongRank(_ path: String, expected: Int, found: Int) -> IDXError {
        IDXError(path, .wrongRank(expected: expected, found: found))
    }

    /// A dimension is zero (or there are no dimensions).
    public static func zeroDimension(_ path: String, dimensions: [Int]) -> IDXError {
        IDXError(path, .zeroDimension(dimensions: dimensions))
    }

    /// The file ends inside the IDX header.
    public static func truncatedHeader(_ path: String, needed: Int, found: Int, decompressed: Bool) -> IDXError {
        IDXError(path, .truncatedHeader(needed: needed, found: found, decompressed: decompressed))
    }

    /// The file holds fewer data bytes than its header declares.
    public static func truncatedData(
        _ path: String, dimensions: [Int], declared: Int, found: Int, decompressed: Bool
    ) -> IDXError {
        IDXError(path, .truncatedData(
            dimensions: dimensions, declared: declared, found: found, decompressed: decompressed))
    }

    /// The file holds more data bytes than its header declares.
    public static func trailingData(
        _ path: String, dimensions: [Int], declared: Int, found: Int, decompressed: Bool
    ) -> IDXError {
        IDXError(path, .trailingData(
            dimensions: dimensions, declared: declared, found: found, decompressed: decompressed))
    }

    /// The gzip stream ends before its end-of-stream marker and trailer.
    public static func truncatedGzip(_ path: String, decompressedSoFar: Int) -> IDXError {
        IDXError(path, .truncatedGzip(decompressedSoFar: decompressedSoFar))
    }

    /// Bytes follow the gzip stream that are not another gzip member.
    public static func trailingAfterGzip(_ path: String, bytes: Int) -> IDXError {
        IDXError(path, .trailingAfterGzip(bytes: bytes))
    }

    /// zlib reported an error; `code` is zlib's raw return code, `message` its `msg` text.
    public static func zlib(_ path: String, code: Int32, message: String?) -> IDXError {
        IDXError(path, .zlib(code: code, message: message))
    }

    /// The images file and the labels file hold different numbers of samples.
    public static func countMismatch(
        imagesPath: String, images: Int, labelsPath: String, labels: Int
    ) -> IDXError {
        IDXError(imagesPath, .countMismatch(images: images, labelsPath: labelsPath, labels: labels))
    }

    /// Pixels, labels and sizes given to build a data set do not agree.
    public static func invalidShape(_ source: String, detail: String) -> IDXError {
        IDXError(source, .invalidShape(detail: detail))
    }

    /// A label is not below the class count.
    public static func labelOutOfRange(_ path: String, sample: Int, label: Int, classCount: Int) -> IDXError {
        IDXError(path, .labelOutOfRange(sample: sample, label: label, classCount: classCount))
    }

    /// The requested class count is outside 1...256.
    public static func invalidClassCount(_ path: String, _ count: Int) -> IDXError {
        IDXError(path, .invalidClassCount(count))
    }
}

extension String {
    fileprivate func leftPadded(to width: Int) -> String {
        count >= width ? self : String(repeating: "0", count: width - count) + self
    }
}
