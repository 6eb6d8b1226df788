import Crypto
import Foundation
import NIOCore
import Testing
@testable import Wire

/// `FrameCipher` seals with BoringSSL's `EVP_AEAD`; these tests check it against swift-crypto's
/// `AES.GCM` (the same BoringSSL underneath, through another API: they check the construction)
/// and against fixed frames sealed by another library (OpenSSL, through Python's `cryptography`).
@Suite("FrameCipher")
struct FrameCipherTests {
    let key = SymmetricKey(size: .bits256)
    let allocator = ByteBufferAllocator()

    private func frame(_ bytes: [UInt8], type: MessageType = .gradient) -> WireFrame {
        WireFrame(type: type, payload: ByteBuffer(bytes: bytes))
    }

    private func nonce(_ sequence: UInt64) throws -> AES.GCM.Nonce {
        try AES.GCM.Nonce(data: [0, 0, 0, 0] + withUnsafeBytes(of: sequence.bigEndian, Array.init))
    }

    private func header(_ frame: WireFrame) -> [UInt8] {
        var header = ByteBuffer()
        FrameHeader(version: frame.version, type: frame.type, flags: frame.flags,
                    payloadLength: UInt32(frame.payload.readableBytes)).write(to: &header)
        return Array(header.readableBytesView)
    }

    private static func randomBytes(_ count: Int) -> [UInt8] {
        var generator = SystemRandomNumberGenerator()
        return (0..<count).map { _ in UInt8.random(in: 0...255, using: &generator) }
    }

    @Test("what it seals, swift-crypto opens, frame after frame", arguments: [0, 1, 15, 16, 17, 1000, 1 << 20])
    func sealsLikeSwiftCrypto(size: Int) throws {
        var sealer = FrameCipher(key: key)
        for sequence in UInt64(0)..<3 {
            let plaintext = Self.randomBytes(size)
            let sealed = try sealer.seal(frame(plaintext), allocator: allocator)
            #expect(sealed.flags.contains(.sealed))
            #expect(sealed.payload.readableBytes == size + FrameFlags.sealOverhead)
            let bytes = Array(sealed.payload.readableBytesView)
            let box = try AES.GCM.SealedBox(nonce: nonce(sequence), ciphertext: bytes.dropLast(16), tag: bytes.suffix(16))
            let opened = try AES.GCM.open(box, using: key, authenticating: header(sealed))
            #expect(Array(opened) == plaintext)
        }
        #expect(sealer.sequence == 3)
    }

    @Test("what swift-crypto seals, it opens; a wrong tag, nonce or header is refused", arguments: [0, 1, 33, 1 << 20])
    func opensLikeSwiftCrypto(size: Int) throws {
        let plaintext = Self.randomBytes(size)
        let sealedHeaderFrame = WireFrame(type: .parameters, flags: .sealed,
                                          payload: ByteBuffer(repeating: 0, count: size + FrameFlags.sealOverhead))
        let box = try AES.GCM.seal(plaintext, using: key, nonce: nonce(0), authenticating: header(sealedHeaderFrame))
        let sealed = WireFrame(type: .parameters, flags: .sealed, payload: ByteBuffer(bytes: Array(box.ciphertext) + Array(box.tag)))

        var opener = FrameCipher(key: key)
        let opened = try opener.open(sealed, allocator: allocator)
        #expect(Array(opened.payload.readableBytesView) == plaintext)
        #expect(!opened.flags.contains(.sealed))
        #expect(opened.type == .parameters)

        // The same frame again (a replay: the opener is at sequence 1 now) is refused.
        #expect(throws: WireError.self) { try opener.open(sealed, allocator: allocator) }

        // A flipped bit of the tag, or a relabelled header, is refused by a fresh opener.
        var tampered = Array(sealed.payload.readableBytesView)
        tampered[tampered.count - 1] ^= 1
        var fresh = FrameCipher(key: key)
        #expect(throws: WireError.self) {
            try fresh.open(WireFrame(type: .parameters, flags: .sealed, payload: ByteBuffer(bytes: tampered)), allocator: allocator)
        }
        var relabelled = FrameCipher(key: key)
        #expect(throws: WireError.self) {
            try relabelled.open(WireFrame(type: .gradient, flags: .sealed, payload: sealed.payload), allocator: allocator)
        }
        // A failed open does not advance the sequence: the genuine frame still opens.
        #expect(relabelled.sequence == 0)
        #expect(Array(try relabelled.open(sealed, allocator: allocator).payload.readableBytesView) == plaintext)
    }

    /// Key 00 01 ... 1f, payload 00 01 ... 13 at sequence numbers 0 and 1, an empty one at 2, as
    /// version-2 gradient frames. Expected bytes from `AESGCM(key).encrypt(nonce, payload, header)`
    /// in Python's `cryptography` 48.0.0 (OpenSSL 4.0.0): nonce 4 zero bytes + the sequence number
    /// big-endian, header 42505752 02 22 0001 and the sealed length.
    @Test("seals the same bytes as OpenSSL, frame after frame, and opens them")
    func knownAnswers() throws {
        let key = SymmetricKey(data: (0..<32).map { UInt8($0) })
        let payload = (0..<20).map { UInt8($0) }
        let expected: [(plaintext: [UInt8], sealed: String)] = [
            (payload, "0ebdb7ddb12985ba00a1a33e14219f96c2524440d2b9545a833630ce95de076d8b8bedca"),
            (payload, "15d7bdff40f1361906275b32e0ab34f8058e0e4729f43b363be518ddde5c62575a345ad3"),
            ([], "c48a376f5bb8aa0615791b93d00f7d42"),
        ]
        var sealer = FrameCipher(key: key)
        var opener = FrameCipher(key: key)
        for (plaintext, hex) in expected {
            let sealed = try sealer.seal(WireFrame(version: 2, type: .gradient, payload: ByteBuffer(bytes: plaintext)),
                                         allocator: allocator)
            #expect(sealed.payload.readableBytesView.map { String(format: "%02x", $0) }.joined() == hex)
            #expect(Array(try opener.open(sealed, allocator: allocator).payload.readableBytesView) == plaintext)
        }
    }

    @Test("a frame shorter than a tag, or without the sealed flag, is refused")
    func malformed() throws {
        var opener = FrameCipher(key: key)
        #expect(throws: WireError.self) {
            try opener.open(WireFrame(type: .gradient, flags: .sealed, payload: ByteBuffer(bytes: [1, 2, 3])), allocator: allocator)
        }
        var sealer = FrameCipher(key: key)
        let sealed = try sealer.seal(frame([9, 9, 9]), allocator: allocator)
        #expect(throws: WireError.self) {
            try opener.open(WireFrame(type: .gradient, payload: sealed.payload), allocator: allocator)
        }
    }
}
