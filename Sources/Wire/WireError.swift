/// Why a frame, a message or a compressed payload was refused.
///
/// Every check in `Wire` that fails throws a `WireError`; none of them traps. The error's
/// ``code`` is what goes to the peer in an ``WireMessage/error(_:)`` message (so both sides of a
/// refused connection see the same category) and ``description`` says, in one sentence, what was
/// wrong, with the numbers involved. Compare errors by ``code`` when the details do not matter:
///
/// ```swift
/// do { ... } catch let error as WireError where error.code == .frameTooLarge { ... }
/// ```
public struct WireError: Error, Hashable, Sendable, CustomStringConvertible {
    private enum Base: Hashable, Sendable {
        case badMagic(found: [UInt8])
        case unsupportedVersion(found: UInt8)
        case unknownMessageType(UInt8)
        case reservedFlags(UInt16)
        case frameTooLarge(type: MessageType, length: UInt64, limit: Int)
        case truncatedFrame(received: Int, expected: Int)
        case malformedPayload(type: MessageType?, reason: String)
        case decompressedSizeTooLarge(what: String, declared: UInt64, limit: Int)
        case decompressedSizeMismatch(what: String, declared: UInt64, expected: Int)
        case zstd(operation: String, code: Int, name: String)
        case checksumMismatch(what: String, expected: UInt32, actual: UInt32)
        case shapeMismatch(what: String, expected: String, actual: String)
        case digestMismatch(expected: String, actual: String)
        case unexpectedMessage(type: MessageType, reason: String)
        case handshakeMismatch(String)
        case invalidModel(String)
        case encoding(String)
        case peer(code: UInt16, message: String)
        case authenticationFailed(String)
        case timeout(String)
    }

    private let base: Base

    private init(_ base: Base) { self.base = base }

    // MARK: Framing

    /// The first bytes of a frame were not the protocol's magic `BPWR`. `found` holds the bytes
    /// seen (up to four); the connection is probably not speaking this protocol at all.
    public static func badMagic(found: [UInt8]) -> WireError { WireError(.badMagic(found: found)) }

    /// A frame carried a protocol version this build does not speak.
    public static func unsupportedVersion(found: UInt8) -> WireError {
        WireError(.unsupportedVersion(found: found))
    }

    /// A frame carried a message type byte that no message uses.
    public static func unknownMessageType(_ raw: UInt8) -> WireError { WireError(.unknownMessageType(raw)) }

    /// A frame set flag bits that are reserved in this protocol version.
    public static func reservedFlags(_ flags: UInt16) -> WireError { WireError(.reservedFlags(flags)) }

    /// A frame declared (or, when sending, would need) a payload longer than the limit for its type.
    public static func frameTooLarge(type: MessageType, length: UInt64, limit: Int) -> WireError {
        WireError(.frameTooLarge(type: type, length: length, limit: limit))
    }

    /// The connection ended in the middle of a frame: `received` of `expected` bytes had arrived
    /// (counting the 12-byte header).
    public static func truncatedFrame(received: Int, expected: Int) -> WireError {
        WireError(.truncatedFrame(received: received, expected: expected))
    }

    // MARK: Messages

    /// A payload that does not parse as its message type: a field cut short, a count larger than
    /// the bytes left, trailing bytes, an unknown enumeration value, a field out of range.
    /// `type` is `nil` for a float payload decoded on its own.
    public static func malformedPayload(_ type: MessageType?, _ reason: String) -> WireError {
        WireError(.malformedPayload(type: type, reason: reason))
    }

    /// A compressed payload would decompress to more bytes than allowed; refused before allocating.
    public static func decompressedSizeTooLarge(_ what: String, declared: UInt64, limit: Int) -> WireError {
        WireError(.decompressedSizeTooLarge(what: what, declared: declared, limit: limit))
    }

    /// A compressed payload's declared (zstd frame header) or actual size differs from the size
    /// its message implies.
    public static func decompressedSizeMismatch(_ what: String, declared: UInt64, expected: Int) -> WireError {
        WireError(.decompressedSizeMismatch(what: what, declared: declared, expected: expected))
    }

    /// libzstd reported an error; `code` is its `ZSTD_ErrorCode` and `name` its
    /// `ZSTD_getErrorName` text (for example "Restored data doesn't match checksum").
    public static func zstd(operation: String, code: Int, name: String) -> WireError {
        WireError(.zstd(operation: operation, code: code, name: name))
    }

    /// A payload whose own CRC-32C does not match the bytes it decoded to (sent with the
    /// ``ErrorCode/compression`` code, like zstd's own checksum failures).
    public static func checksumMismatch(_ what: String, expected: UInt32, actual: UInt32) -> WireError {
        WireError(.checksumMismatch(what: what, expected: expected, actual: actual))
    }

    /// A tensor, list or data set whose size does not match what the session agreed on.
    public static func shapeMismatch(_ what: String, expected: String, actual: String) -> WireError {
        WireError(.shapeMismatch(what: what, expected: expected, actual: actual))
    }

    /// A data set whose SHA-256 is not the one announced for it.
    public static func digestMismatch(expected: String, actual: String) -> WireError {
        WireError(.digestMismatch(expected: expected, actual: actual))
    }

    // MARK: Session

    /// A well-formed message that is not allowed here: wrong direction, or out of order.
    public static func unexpectedMessage(_ type: MessageType, _ reason: String) -> WireError {
        WireError(.unexpectedMessage(type: type, reason: reason))
    }

    /// The two sides of a handshake disagree (protocol version, model, session).
    public static func handshakeMismatch(_ reason: String) -> WireError { WireError(.handshakeMismatch(reason)) }

    /// A model description that no worker could train (empty layers, unsupported scalar, too big).
    public static func invalidModel(_ reason: String) -> WireError { WireError(.invalidModel(reason)) }

    /// A message this side was asked to send cannot be represented (a count over `UInt32`, a
    /// string over its limit). This is a bug in the caller, reported instead of trapping.
    public static func encoding(_ reason: String) -> WireError { WireError(.encoding(reason)) }

    /// The peer could not be authenticated, or a sealed frame failed its integrity check
    /// (modified, replayed, reordered, dropped or unsealed). `reason` never contains key material.
    public static func authenticationFailed(_ reason: String) -> WireError { WireError(.authenticationFailed(reason)) }

    /// A frame, or the authentication handshake, did not complete within its deadline.
    public static func timeout(_ reason: String) -> WireError { WireError(.timeout(reason)) }

    /// The peer sent an ``WireMessage/error(_:)`` message with this code and text.
    public static func peer(code: ErrorCode, message: String) -> WireError {
        WireError(.peer(code: code.rawValue, message: message))
    }

    // MARK: Reading an error

    /// The category sent to the peer in an ``WireMessage/error(_:)`` message.
    public var code: ErrorCode {
        switch base {
        case .badMagic: return .badMagic
        case .unsupportedVersion: return .unsupportedVersion
        case .unknownMessageType: return .unknownMessageType
        case .reservedFlags: return .reservedFlags
        case .frameTooLarge: return .frameTooLarge
        case .truncatedFrame: return .truncatedFrame
        case .malformedPayload: return .malformedPayload
        case .decompressedSizeTooLarge: return .decompressedSizeTooLarge
        case .decompressedSizeMismatch: return .decompressedSizeMismatch
        case .zstd, .checksumMismatch: return .compression
        case .shapeMismatch: return .shapeMismatch
        case .digestMismatch: return .digestMismatch
        case .unexpectedMessage: return .unexpectedMessage
        case .handshakeMismatch: return .handshakeMismatch
        case .invalidModel: return .invalidModel
        case .encoding: return .internalError
        case .peer(let code, _): return ErrorCode(rawValue: code)
        case .authenticationFailed: return .authenticationFailed
        case .timeout: return .timeout
        }
    }

    public var description: String {
        switch base {
        case .badMagic(let found):
            let hex = found.map { byte in hexByte(byte) }.joined(separator: " ")
            return "bad magic: expected 42 50 57 52 (\"BPWR\"), received \(hex); the peer does not speak this protocol"
        case .unsupportedVersion(let found):
            return "unsupported protocol version \(found): this side speaks version \(WireProtocol.version)"
        case .unknownMessageType(let raw):
            return "unknown message type 0x\(hexByte(raw))"
        case .reservedFlags(let flags):
            return "reserved frame flags set: 0x\(String(flags, radix: 16)) (version \(WireProtocol.version) defines only 0x1, sealed)"
        case .frameTooLarge(let type, let length, let limit):
            return "\(type) frame of \(length) payload bytes is over the limit of \(limit) bytes for that type"
        case .truncatedFrame(let received, let expected):
            return "connection closed in the middle of a frame: \(received) of \(expected) bytes received"
        case .malformedPayload(let type, let reason):
            return "malformed \(type.map { "\($0) " } ?? "")payload: \(reason)"
        case .decompressedSizeTooLarge(let what, let declared, let limit):
            return "\(what) would decompress to \(declared) bytes, over the limit of \(limit) bytes"
        case .decompressedSizeMismatch(let what, let declared, let expected):
            return "\(what) declares \(declared) decompressed bytes but must have exactly \(expected)"
        case .zstd(let operation, let code, let name):
            return "zstd \(operation) failed: \(name) (ZSTD_ErrorCode \(code))"
        case .checksumMismatch(let what, let expected, let actual):
            return "\(what): CRC-32C mismatch: the payload carries \(String(expected, radix: 16)), its decoded floats have \(String(actual, radix: 16))"
        case .shapeMismatch(let what, let expected, let actual):
            return "\(what): expected \(expected), got \(actual)"
        case .digestMismatch(let expected, let actual):
            return "data set SHA-256 mismatch: announced \(expected), received bytes hash to \(actual)"
        case .unexpectedMessage(let type, let reason):
            return "unexpected \(type) message: \(reason)"
        case .handshakeMismatch(let reason):
            return "handshake refused: \(reason)"
        case .invalidModel(let reason):
            return "invalid model: \(reason)"
        case .encoding(let reason):
            return "cannot encode message: \(reason)"
        case .peer(let code, let message):
            return "peer reported error \(ErrorCode(rawValue: code)): \(message)"
        case .authenticationFailed(let reason):
            return "authentication failed: \(reason)"
        case .timeout(let reason):
            return "timeout: \(reason)"
        }
    }
}

private func hexByte(_ byte: UInt8) -> String {
    let digits = Array("0123456789abcdef")
    return String([digits[Int(byte >> 4)], digits[Int(byte & 0xF)]])
}

/// The category of an error as carried on the wire in an ``WireMessage/error(_:)`` message.
///
/// A `UInt16`; codes this build does not know are kept and printed as numbers. Codes 1-99 are
/// protocol violations detected by `Wire` itself; 100 and up are for the coordinator and worker
/// (``ErrorCode/workerFailure``, ``ErrorCode/authenticationFailed``, ...).
public struct ErrorCode: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public let rawValue: UInt16
    public init(rawValue: UInt16) { self.rawValue = rawValue }

    public static let badMagic = ErrorCode(rawValue: 1)
    public static let unsupportedVersion = ErrorCode(rawValue: 2)
    public static let unknownMessageType = ErrorCode(rawValue: 3)
    public static let reservedFlags = ErrorCode(rawValue: 4)
    public static let frameTooLarge = ErrorCode(rawValue: 5)
    public static let truncatedFrame = ErrorCode(rawValue: 6)
    public static let malformedPayload = ErrorCode(rawValue: 7)
    public static let decompressedSizeTooLarge = ErrorCode(rawValue: 8)
    public static let decompressedSizeMismatch = ErrorCode(rawValue: 9)
    public static let compression = ErrorCode(rawValue: 10)
    public static let shapeMismatch = ErrorCode(rawValue: 11)
    public static let digestMismatch = ErrorCode(rawValue: 12)
    public static let unexpectedMessage = ErrorCode(rawValue: 13)
    public static let handshakeMismatch = ErrorCode(rawValue: 14)
    public static let invalidModel = ErrorCode(rawValue: 15)
    public static let internalError = ErrorCode(rawValue: 16)
    /// A frame, or the authentication handshake, that did not complete within its deadline.
    public static let timeout = ErrorCode(rawValue: 17)

    /// The worker could not carry out a task (for example an index beyond its data set).
    public static let workerFailure = ErrorCode(rawValue: 100)
    /// The peer failed authentication, or a sealed frame failed its integrity check.
    public static let authenticationFailed = ErrorCode(rawValue: 101)
    /// The sender is shutting down.
    public static let shuttingDown = ErrorCode(rawValue: 102)

    public var description: String {
        let names: [UInt16: String] = [
            1: "badMagic", 2: "unsupportedVersion", 3: "unknownMessageType", 4: "reservedFlags",
            5: "frameTooLarge", 6: "truncatedFrame", 7: "malformedPayload",
            8: "decompressedSizeTooLarge", 9: "decompressedSizeMismatch", 10: "compression",
            11: "shapeMismatch", 12: "digestMismatch", 13: "unexpectedMessage",
            14: "handshakeMismatch", 15: "invalidModel", 16: "internalError", 17: "timeout",
            100: "workerFailure", 101: "authenticationFailed", 102: "shuttingDown",
        ]
        return names[rawValue].map { "\($0)(\(rawValue))" } ?? "code \(rawValue)"
    }
}
