import COpenSSL
import Crypto
import NIOCore

/// Seals or opens the frames of one direction: AES-256-GCM, the 64-bit sequence number of the
/// frame in that direction as the nonce (4 zero bytes, then the number big-endian), and the
/// 12-byte frame header (with the sealed flag and the sealed length) as associated data. The
/// sequence number is never sent: a replayed, reordered or dropped frame is opened with the
/// wrong nonce and fails, like a modified one. ``FrameSecurityHandler`` keeps one per direction;
/// it is public for benchmarks (`engine-bench --only aead`).
///
/// The cipher is OpenSSL's (libcrypto's EVP interface, keyed once per direction), which reads
/// the payload where it lies in its `ByteBuffer` and writes straight into the new one: a frame
/// costs one pass over its bytes. swift-crypto's `AES.GCM` computes the same thing (the tests
/// open with one what the other sealed) but goes through `Data` values, three to four extra
/// copies of each megabyte (docs/SECURITY.md, BENCHMARKS.md).
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
        try nonce.withUnsafeBytes { nonce in
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

/// One key's AES-256-GCM contexts in libcrypto (one to seal, one to open), keyed once; each
/// frame sets only its nonce. Not thread-safe: one direction of one connection uses it, on
/// that connection's event loop.
private final class GCMContext {
    private let sealing: OpaquePointer
    private let opening: OpaquePointer

    init(key: UnsafeRawBufferPointer) {
        func make(encrypting: Bool) -> OpaquePointer {
            guard let context = EVP_CIPHER_CTX_new() else { fatalError("libcrypto could not allocate a cipher context (out of memory)") }
            let keyed = EVP_CipherInit_ex(context, EVP_aes_256_gcm(), nil,
                                          key.baseAddress!.assumingMemoryBound(to: UInt8.self), nil, encrypting ? 1 : 0)
            precondition(keyed == 1, "libcrypto refused an AES-256-GCM key")
            return context
        }
        sealing = make(encrypting: true)
        opening = make(encrypting: false)
    }

    deinit {
        EVP_CIPHER_CTX_free(sealing)
        EVP_CIPHER_CTX_free(opening)
    }

    /// Writes the ciphertext of `plaintext` and then the 16-byte tag into `output`
    /// (`plaintext.count + 16` bytes).
    func seal(_ plaintext: UnsafeRawBufferPointer, nonce: UnsafeRawBufferPointer, associated: [UInt8],
              into output: UnsafeMutableRawBufferPointer) throws {
        precondition(output.count == plaintext.count + FrameFlags.sealOverhead)
        var written: Int32 = 0
        var ok = EVP_EncryptInit_ex(sealing, nil, nil, nil, nonce.baseAddress!.assumingMemoryBound(to: UInt8.self)) == 1
        ok = ok && associated.withUnsafeBufferPointer {
            EVP_EncryptUpdate(sealing, nil, &written, $0.baseAddress, Int32($0.count)) == 1
        }
        let out = output.baseAddress!.assumingMemoryBound(to: UInt8.self)
        var done = 0
        var rest = plaintext
        while ok, !rest.isEmpty {
            // EVP takes an `int` length: long payloads go in pieces (GCM is a stream).
            let piece = min(rest.count, 1 << 30)
            ok = EVP_EncryptUpdate(sealing, out + done, &written, rest.baseAddress!.assumingMemoryBound(to: UInt8.self), Int32(piece)) == 1
            done += Int(written)
            rest = UnsafeRawBufferPointer(rebasing: rest[piece...])
        }
        ok = ok && EVP_EncryptFinal_ex(sealing, out + done, &written) == 1
        ok = ok && done + Int(written) == plaintext.count
        ok = ok && EVP_CIPHER_CTX_ctrl(sealing, EVP_CTRL_GCM_GET_TAG, Int32(FrameFlags.sealOverhead), out + plaintext.count) == 1
        guard ok else {
            ERR_clear_error()
            throw WireError.authenticationFailed("libcrypto could not seal a frame")
        }
    }

    /// Checks the tag that ends `sealed` and writes the plaintext into `output`
    /// (`sealed.count - 16` bytes); false when the frame is not authentic (the output is then
    /// garbage and must be dropped).
    func open(_ sealed: UnsafeRawBufferPointer, nonce: UnsafeRawBufferPointer, associated: [UInt8],
              into output: UnsafeMutableRawBufferPointer) -> Bool {
        let length = sealed.count - FrameFlags.sealOverhead
        precondition(length >= 0 && output.count == length)
        let input = sealed.baseAddress!.assumingMemoryBound(to: UInt8.self)
        let out = output.baseAddress?.assumingMemoryBound(to: UInt8.self)
        var written: Int32 = 0
        var ok = EVP_DecryptInit_ex(opening, nil, nil, nil, nonce.baseAddress!.assumingMemoryBound(to: UInt8.self)) == 1
        ok = ok && associated.withUnsafeBufferPointer {
            EVP_DecryptUpdate(opening, nil, &written, $0.baseAddress, Int32($0.count)) == 1
        }
        var done = 0
        while ok, done < length {
            let piece = min(length - done, 1 << 30)
            ok = EVP_DecryptUpdate(opening, out! + done, &written, input + done, Int32(piece)) == 1
            done += Int(written)
            if written != piece { ok = false }
        }
        var tag = [UInt8](UnsafeRawBufferPointer(rebasing: sealed[length...]))
        ok = ok && EVP_CIPHER_CTX_ctrl(opening, EVP_CTRL_GCM_SET_TAG, Int32(FrameFlags.sealOverhead), &tag) == 1
        // The final call checks the tag; nothing was output by it (GCM is a stream cipher).
        var scratch = [UInt8](repeating: 0, count: 16)
        ok = ok && EVP_DecryptFinal_ex(opening, &scratch, &written) == 1
        if !ok { ERR_clear_error() }
        return ok
    }
}
