import Crypto
import Foundation
import NIOCore
import Training
import Wire

/// Speed of the frame protection on a 1 MB payload (about one gradient or parameter frame):
/// the wire's `FrameCipher` (AES-256-GCM, with its buffer copies) and the two AEADs of
/// swift-crypto on their own, to choose between them.
enum AEADBenchmark {
    static func run(repetitions: Int) {
        let size = 1 << 20
        var rng = SeededGenerator(seed: 3)
        let bytes = (0..<size).map { _ in UInt8.random(in: 0...255, using: &rng) }
        let key = SymmetricKey(size: .bits256)
        let header = [UInt8](repeating: 7, count: 12)
        let mb = Double(size) / 1e6

        let gcmNonce = AES.GCM.Nonce()
        var gcmBox = try! AES.GCM.seal(bytes, using: key, nonce: gcmNonce, authenticating: header)
        let gcmSeal = median(repetitions) { gcmBox = try! AES.GCM.seal(bytes, using: key, nonce: gcmNonce, authenticating: header) }
        let gcmOpen = median(repetitions) { keep(try! AES.GCM.open(gcmBox, using: key, authenticating: header).count) }

        let chachaNonce = ChaChaPoly.Nonce()
        var chachaBox = try! ChaChaPoly.seal(bytes, using: key, nonce: chachaNonce, authenticating: header)
        let chachaSeal = median(repetitions) { chachaBox = try! ChaChaPoly.seal(bytes, using: key, nonce: chachaNonce, authenticating: header) }
        let chachaOpen = median(repetitions) { keep(try! ChaChaPoly.open(chachaBox, using: key, authenticating: header).count) }

        let allocator = ByteBufferAllocator()
        let frame = WireFrame(type: .gradient, payload: allocator.buffer(bytes: bytes))
        var sealer = FrameCipher(key: key)
        var opener = FrameCipher(key: key)
        var sealed = frame
        let frameSeal = median(repetitions) { sealed = try! sealer.seal(frame, allocator: allocator) }
        // Opening needs the matching sequence number: a fresh pair, sealing and opening in lockstep.
        var pairedSealer = FrameCipher(key: key)
        let pair = median(repetitions) {
            let s = try! pairedSealer.seal(frame, allocator: allocator)
            keep(try! opener.open(s, allocator: allocator).payload.readableBytes)
        }
        keep(sealed.payload.readableBytes)
        print(String(format: "aead: 1 MiB, AES-256-GCM (swift-crypto): seal %.0f MB/s, open %.0f MB/s", mb / gcmSeal, mb / gcmOpen))
        print(String(format: "aead: 1 MiB, ChaCha20-Poly1305 (swift-crypto): seal %.0f MB/s, open %.0f MB/s", mb / chachaSeal, mb / chachaOpen))
        print(String(format: "aead: 1 MiB, FrameCipher (AES-256-GCM + buffer copies): seal %.0f MB/s (%.3f ms), seal+open %.3f ms",
                     mb / frameSeal, frameSeal * 1e3, pair * 1e3))
    }

    private static func keep(_ value: Int) {
        if value == -1 { print("") }
    }
}
