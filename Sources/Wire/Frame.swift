import NIOCore

/// Constants of the coordinator-worker protocol. The full specification is docs/PROTOCOL.md.
public enum WireProtocol {
    /// The protocol version this build speaks, byte 4 of every frame header. Version 2 added
    /// the authentication frames and sealed (encrypted and authenticated) frames; version 3,
    /// tasks ahead (a worker may be sent the next step's training tasks before that step's
    /// parameters, which a version-2 worker refuses); version 4, each layer's weights by input
    /// in the flat parameter and gradient arrays (by output before: a version-3 peer would
    /// read them transposed); version 5, the CRC-32C in place of zlib's CRC-32 at the end of
    /// a split float payload (a version-4 peer would refuse every such payload); version 6, the
    /// shard count of a gradient (a sum over several shards of the tree, added by the worker).
    public static let version: UInt8 = 6
    /// The first four bytes of every frame: ASCII "BPWR", read as a big-endian `UInt32`.
    public static let magic: UInt32 = 0x4250_5752
    /// The default TCP port a worker listens on.
    public static let defaultPort = 7070
}

/// The kind of a frame's payload, byte 5 of the header. Each case names the
/// ``WireMessage`` case it carries and who may send it.
public enum MessageType: UInt8, Sendable, CaseIterable, CustomStringConvertible {
    case hello = 0x01
    case helloAck = 0x02
    /// Coordinator → worker, first frame of an authenticated session: version, session id, nonce.
    /// Handled by ``FrameSecurityHandler``, never seen by the message layer.
    case authChallenge = 0x03
    /// Worker → coordinator: the worker's nonce and its proof that it knows the secret.
    case authResponse = 0x04
    /// Coordinator → worker: the coordinator's proof that it knows the secret.
    case authConfirm = 0x05
    case datasetOffer = 0x10
    case datasetStatus = 0x11
    case dataset = 0x12
    case parameters = 0x20
    case task = 0x21
    case gradient = 0x22
    case evaluation = 0x23
    case ping = 0x30
    case pong = 0x31
    case goodbye = 0x7E
    /// Frozen layout in every protocol version, so that a peer can always say why it refuses.
    case error = 0x7F

    /// Who may send this message.
    public var sender: Sender {
        switch self {
        case .hello, .datasetOffer, .dataset, .parameters, .task, .authChallenge, .authConfirm: return .coordinator
        case .helloAck, .authResponse, .datasetStatus, .gradient, .evaluation: return .worker
        case .ping, .pong, .goodbye, .error: return .either
        }
    }

    /// Whether frames of this type belong to the authentication handshake (handled by
    /// ``FrameSecurityHandler``, not by the message layer).
    public var isAuthentication: Bool {
        switch self {
        case .authChallenge, .authResponse, .authConfirm: return true
        default: return false
        }
    }

    /// Whether frames of this type may be large (data sets, float arrays, index lists) and are
    /// checked against ``FrameLimits/maxPayloadBytes`` rather than
    /// ``FrameLimits/maxControlPayloadBytes``.
    public var isBulk: Bool {
        switch self {
        case .dataset, .parameters, .task, .gradient: return true
        default: return false
        }
    }

    public var description: String {
        switch self {
        case .hello: return "hello"
        case .helloAck: return "helloAck"
        case .authChallenge: return "authChallenge"
        case .authResponse: return "authResponse"
        case .authConfirm: return "authConfirm"
        case .datasetOffer: return "datasetOffer"
        case .datasetStatus: return "datasetStatus"
        case .dataset: return "dataset"
        case .parameters: return "parameters"
        case .task: return "task"
        case .gradient: return "gradient"
        case .evaluation: return "evaluation"
        case .ping: return "ping"
        case .pong: return "pong"
        case .goodbye: return "goodbye"
        case .error: return "error"
        }
    }

    /// The side allowed to send a message type.
    public enum Sender: Sendable {
        case coordinator, worker, either
    }
}

/// Flag bits of a frame header (bytes 6-7, big-endian). Version 2 defines one,
/// ``FrameFlags/sealed``; a frame with any other bit set is refused with
/// ``WireError/reservedFlags(_:)``.
public struct FrameFlags: OptionSet, Hashable, Sendable {
    public let rawValue: UInt16
    public init(rawValue: UInt16) { self.rawValue = rawValue }

    /// The payload is sealed: AES-256-GCM ciphertext followed by its 16-byte tag, with the
    /// header as associated data (see ``FrameSecurityHandler`` and docs/PROTOCOL.md).
    public static let sealed = FrameFlags(rawValue: 0x0001)

    /// The bits this version understands.
    public static let known: FrameFlags = [.sealed]

    /// Bytes a sealed payload has beyond its plaintext (the AEAD tag).
    public static let sealOverhead = 16
}

/// The fixed 12-byte header in front of every payload.
///
/// ```
/// offset  size  field
///      0     4  magic "BPWR" = 42 50 57 52
///      4     1  protocol version (1)
///      5     1  message type (MessageType raw value)
///      6     2  flags, big-endian (bit 0: sealed; the others must be 0)
///      8     4  payload length in bytes, big-endian, not counting the header
/// ```
public struct FrameHeader: Hashable, Sendable {
    /// Bytes in a header.
    public static let byteCount = 12

    public var version: UInt8
    public var type: MessageType
    public var flags: FrameFlags
    public var payloadLength: UInt32

    public init(version: UInt8 = WireProtocol.version, type: MessageType, flags: FrameFlags = [], payloadLength: UInt32) {
        self.version = version
        self.type = type
        self.flags = flags
        self.payloadLength = payloadLength
    }

    /// Appends the 12 header bytes to `buffer`.
    public func write(to buffer: inout ByteBuffer) {
        buffer.writeMultipleIntegers(
            WireProtocol.magic, version, type.rawValue, flags.rawValue, payloadLength,
            endianness: .big)
    }
}

/// One frame: a header's type and flags plus its payload, which ``FrameDecoder`` produces and
/// ``FrameEncoder`` writes. The message layer (``WireMessage``) parses the payload.
public struct WireFrame: Sendable {
    /// The protocol version of the header. The decoder only produces frames of
    /// ``WireProtocol/version``, except ``MessageType/error`` frames, which are accepted from
    /// any version.
    public var version: UInt8
    public var type: MessageType
    public var flags: FrameFlags
    public var payload: ByteBuffer

    public init(version: UInt8 = WireProtocol.version, type: MessageType, flags: FrameFlags = [], payload: ByteBuffer) {
        self.version = version
        self.type = type
        self.flags = flags
        self.payload = payload
    }

    /// The header this frame is written with.
    public var header: FrameHeader {
        FrameHeader(version: version, type: type, flags: flags, payloadLength: UInt32(truncatingIfNeeded: payload.readableBytes))
    }
}

/// Size limits that protect a process from its peer. Every length read from the network is
/// compared with one of these before anything is allocated for it.
///
/// The defaults fit MNIST (a 47 MB training set of `UInt8` pixels, a 784-300-100-10 network of
/// 266,610 parameters) with room to spare; both sides should use the same limits.
public struct FrameLimits: Hashable, Sendable {
    /// The largest payload of a bulk frame (data set, parameters, task, gradient). Default 128 MiB.
    public var maxPayloadBytes: Int
    /// The largest payload of any other frame (hello, status, results, ping, error...). Default 64 KiB.
    public var maxControlPayloadBytes: Int
    /// The largest size any compressed payload may decompress to. Default 256 MiB.
    public var maxDecompressedBytes: Int
    /// The most sample indices in one task. Default 1,048,576.
    public var maxTaskSamples: Int

    public init(
        maxPayloadBytes: Int = 128 << 20,
        maxControlPayloadBytes: Int = 64 << 10,
        maxDecompressedBytes: Int = 256 << 20,
        maxTaskSamples: Int = 1 << 20
    ) {
        self.maxPayloadBytes = max(0, min(maxPayloadBytes, Int(UInt32.max)))
        self.maxControlPayloadBytes = max(0, min(maxControlPayloadBytes, self.maxPayloadBytes))
        self.maxDecompressedBytes = max(0, maxDecompressedBytes)
        self.maxTaskSamples = max(0, maxTaskSamples)
    }

    /// The limits described above.
    public static let `default` = FrameLimits()

    /// The largest payload allowed for frames of `type`.
    public func maxPayload(for type: MessageType) -> Int {
        type.isBulk ? maxPayloadBytes : maxControlPayloadBytes
    }

    /// The largest payload allowed on the wire for frames of `type` with `flags`: a sealed
    /// payload carries its plaintext plus ``FrameFlags/sealOverhead`` bytes of tag.
    public func maxPayload(for type: MessageType, flags: FrameFlags) -> Int {
        maxPayload(for: type) + (flags.contains(.sealed) ? FrameFlags.sealOverhead : 0)
    }
}
