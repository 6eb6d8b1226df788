import CCryptoBoringSSL
import Crypto
import NIOCore

/// Seals or opens the frames of one direction: AES-256-GCM, the 64-bit sequence number of the
/// frame in that direction as the nonce (4 zero bytes, then the number big-endian), and the
/// 12-byte frame header (with the sealed flag and the sealed length) as associated data. The
/// sequence number is never sent: a replayed, reordered or dropped frame is opened with the
/// wrong nonce and fails, like a modified one. ``FrameSecurityHandler`` keeps one per direction;
/// it is public for benchmarks (`engine-bench --only aead`).
///
/// The cipher is BoringSSL's `EVP_AEAD` interface (keyed once per direction), which reads the
/// payload where it lies in its `ByteBuffer` and writes the ciphertext and the tag straight into
/// the new one: one pass over a frame's bytes, through BoringSSL's AVX2 VAES kernel on CPUs that
/// have it. swift-crypto's `AES.GCM` runs the same BoringSSL code (the tests open with one what the
/// other sealed) but goes through `Data` values, three to four extra copies of each megabyte
/// (docs/SECURITY.md, BENCHMARKS.md).
///
/// `CCryptoBoringSSL` is swift-crypto's internal copy of BoringSSL, not one of its products: it is
/// importable because `Crypto` depends on it on Linux (on Apple platforms swift-crypto uses
/// CryptoKit and does not build it), and any swift-crypto release may rename or change it.
public struct FrameCipher {
    private let context: GCMContext
    /// The sequence number of the next frame.
    public private(set) var sequence: UInt64 = 0

    /// A cipher for one direction of one connection, starting at sequence number 0.
    public init(key: SymmetricKey) {
        precondition(key.bitCount == 256, "FrameCipher needs a 256-bit key, got \(key.bitCount) bits")
        context = key.withUnsafeBytes { GCMContext(key: $0) }
    }

    /// The 12-byte nonce of the current sequence number.
    private var nonce: [UInt8] {
        var bytes = [UInt8](repeating: 0, count: 12)
        for i in 0..<8 { bytes[4 + i] = UInt8(truncatingIfNeeded: sequence >> (56 - 8 * i)) }
        return bytes
    }

    private static func associatedData(_ frame: WireFrame, sealedLength: Int) -> [UInt8] {
        var header = ByteBuffer()
        FrameHeader(version: frame.version, type: frame.type, flags: frame.flags.union(.sealed),
                    payloadLength: UInt32(truncatingIfNeeded: sealedLength)).write(to: &header)
        return Array(header.readableBytesView)
    }

    /// The sealed form of `frame` (flag set, ciphertext and tag as payload); advances the sequence.
    public mutating func seal(_ frame: WireFrame, allocator: ByteBufferAllocator) throws -> WireFrame {
        guard sequence < .max else { throw WireError.authenticationFailed("the sequence numbers of this connection are exhausted; reconnect") }
        let length = frame.payload.readableBytes
        let sealedLength = length + FrameFlags.sealOverhead
        guard sealedLength <= Int(UInt32.max) else {
            throw WireError.frameTooLarge(type: frame.type, length: UInt64(sealedLength), limit: Int(UInt32.max))
        }
        let associated = Self.associatedData(frame, sealedLength: sealedLength)
        var payload = allocator.buffer(capacity: sealedLength)
        _ = try nonce.withUnsafeBytes { nonce in
            try payload.writeWithUnsafeMutableBytes(minimumWritableBytes: sealedLength) { output in
                try frame.payload.withUnsafeReadableBytes { plaintext in
                    try context.seal(plaintext, nonce: nonce, associated: associated,
                                     into: UnsafeMutableRawBufferPointer(rebasing: output[..<sealedLength]))
                }
                return sealedLength
            }
        }
        sequence += 1
        return WireFrame(version: frame.version, type: frame.type, flags: frame.flags.union(.sealed), payload: payload)
    }

    /// The plaintext form of a sealed `frame`, or `authenticationFailed`; advances the sequence.
    public mutating func open(_ frame: WireFrame, allocator: ByteBufferAllocator) throws -> WireFrame {
        let length = frame.payload.readableBytes
        let failure = WireError.authenticationFailed(
            "\(frame.type) frame \(sequence) from the peer failed its integrity check (modified, replayed, reordered or dropped frames are refused)")
        guard frame.flags.contains(.sealed), length >= FrameFlags.sealOverhead else { throw failure }
        let associated = Self.associatedData(frame, sealedLength: length)
        let plaintextLength = length - FrameFlags.sealOverhead
        var payload = allocator.buffer(capacity: plaintextLength)
        let authentic = nonce.withUnsafeBytes { nonce in
            var authentic = false
            payload.writeWithUnsafeMutableBytes(minimumWritableBytes: plaintextLength) { output in
                authentic = frame.payload.withUnsafeReadableBytes { sealed in
                    context.open(sealed, nonce: nonce, associated: associated,
                                 into: UnsafeMutableRawBufferPointer(rebasing: output[..<plaintextLength]))
                }
                return authentic ? plaintextLength : 0
            }
            return authentic
        }
        guard authentic else { throw failure }
        sequence += 1
        var flags = frame.flags
        flags.remove(.sealed)
        return WireFrame(version: frame.version, type: frame.type, flags: flags, payload: payload)
    }
}

/// One key's AES-256-GCM context in BoringSSL (`EVP_AEAD_CTX`, 16-byte tags), keyed once; each
/// frame passes only its nonce. On the heap, so that its address never changes; one direction of
/// one connection uses it, on that connection's event loop.
private final class GCMContext {
    private let context: UnsafeMutablePointer<EVP_AEAD_CTX>

    init(key: UnsafeRawBufferPointer) {
        context = .allocate(capacity: 1)
        let keyed = CCryptoBoringSSL_EVP_AEAD_CTX_init(
            context, CCryptoBoringSSL_EVP_aead_aes_256_gcm(),
            key.baseAddress!.assumingMemoryBound(to: UInt8.self), key.count, FrameFlags.sealOverhead, nil)
        precondition(keyed == 1, "BoringSSL refused an AES-256-GCM key")
    }

    deinit {
        CCryptoBoringSSL_EVP_AEAD_CTX_cleanup(context)
        context.deallocate()
    }

    /// Writes the ciphertext of `plaintext` and then the 16-byte tag into `output`
    /// (`plaintext.count + 16` bytes).
    func seal(_ plaintext: UnsafeRawBufferPointer, nonce: UnsafeRawBufferPointer, associated: [UInt8],
              into output: UnsafeMutableRawBufferPointer) throws {
        precondition(output.count == plaintext.count + FrameFlags.sealOverhead)
        let out = output.baseAddress!.assumingMemoryBound(to: UInt8.self)
        var tagLength = 0
        let sealed = associated.withUnsafeBufferPointer { associated in
            CCryptoBoringSSL_EVP_AEAD_CTX_seal_scatter(
                context, out, out + plaintext.count, &tagLength, FrameFlags.sealOverhead,
                nonce.baseAddress!.assumingMemoryBound(to: UInt8.self), nonce.count,
                plaintext.baseAddress?.assumingMemoryBound(to: UInt8.self), plaintext.count,
                nil, 0, associated.baseAddress, associated.count)
        }
        guard sealed == 1, tagLength == FrameFlags.sealOverhead else {
            CCryptoBoringSSL_ERR_clear_error()
            throw WireError.authenticationFailed("BoringSSL could not seal a frame")
        }
    }

    /// Checks the tag that ends `sealed` and writes the plaintext into `output`
    /// (`sealed.count - 16` bytes); false when the frame is not authentic (the output is then
    /// zeroed and must be dropped).
    func open(_ sealed: UnsafeRawBufferPointer, nonce: UnsafeRawBufferPointer, associated: [UInt8],
              into output: UnsafeMutableRawBufferPointer) -> Bool {
        let length = sealed.count - FrameFlags.sealOverhead
        precondition(length >= 0 && output.count == length)
        let input = sealed.baseAddress!.assumingMemoryBound(to: UInt8.self)
        let opened = associated.withUnsafeBufferPointer { associated in
            CCryptoBoringSSL_EVP_AEAD_CTX_open_gather(
                context, output.baseAddress?.assumingMemoryBound(to: UInt8.self),
                nonce.baseAddress!.assumingMemoryBound(to: UInt8.self), nonce.count,
                input, length, input + length, FrameFlags.sealOverhead,
                associated.baseAddress, associated.count)
        }
        if opened != 1 { CCryptoBoringSSL_ERR_clear_error() }
        return opened == 1
    }
}
