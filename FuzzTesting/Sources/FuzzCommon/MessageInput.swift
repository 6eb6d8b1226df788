import NIOCore
import Wire

/// How the message harness reads its input (and how its seeds are written, see
/// `Tests/WireTests/FuzzSeedCorpusTests.swift`):
///
/// ```
/// byte 0   message type (MessageType raw value; any other value: the input is skipped)
/// byte 1   options: bit 0 = decode with the session's model signature (parameter and
///          gradient counts checked against it), bit 1 = tight limits (small decompressed size
///          and task size, so the limit checks are reached by short inputs)
/// rest     the payload, as it follows a frame header
/// ```
public struct MessageInput {
    public var type: MessageType
    public var signature: ModelSignature?
    public var limits: FrameLimits
    public var payload: ByteBuffer

    /// The model the seeds' parameters and gradients are encoded for (46 parameters).
    public static let signature = ModelSignature(layerSizes: [8, 4, 2])

    /// Limits small enough that a few bytes can declare more than they allow.
    public static let tightLimits = FrameLimits(
        maxPayloadBytes: 1 << 16, maxControlPayloadBytes: 1 << 12, maxDecompressedBytes: 1 << 12, maxTaskSamples: 64)

    public static let withSignature: UInt8 = 1 << 0
    public static let withTightLimits: UInt8 = 1 << 1

    public init?(_ bytes: UnsafeRawBufferPointer) {
        guard bytes.count >= 2, let type = MessageType(rawValue: bytes[0]) else { return nil }
        self.type = type
        signature = bytes[1] & Self.withSignature != 0 ? Self.signature : nil
        limits = bytes[1] & Self.withTightLimits != 0 ? Self.tightLimits : .default
        payload = ByteBuffer(bytes: UnsafeRawBufferPointer(rebasing: bytes[2...]))
    }
}
