import Crypto
import Foundation
import NIOCore

/// How a pipeline protects its frames: not at all (loopback and trusted networks only), or
/// with a shared secret (mutual authentication, then every frame sealed). Give it to
/// ``WirePipeline/configure(_:role:limits:compression:security:deadlines:)``.
public struct WireSecurity: Sendable {
    /// The secret, when the session is authenticated.
    public let secret: SharedSecret?

    /// No authentication, no encryption: frames travel as plain bytes. An authenticating
    /// peer is refused with a message saying that this side lacks the secret.
    public static let none = WireSecurity(secret: nil)

    /// Mutual challenge-response authentication with `secret` before anything else, then every
    /// frame sealed with AES-256-GCM under per-direction keys and sequence numbers.
    public static func sharedSecret(_ secret: SharedSecret) -> WireSecurity { WireSecurity(secret: secret) }

    /// Whether the pipeline authenticates its peer.
    public var isAuthenticated: Bool { secret != nil }
}

/// How long a peer may take (configuration as a type, so tests can shorten it).
public struct WireDeadlines: Hashable, Sendable {
    /// A frame that has started to arrive (even one byte of its header) must be complete
    /// within this time, or the peer gets a `timeout` error and is dropped. Default 30 s: a
    /// 47 MB data set frame needs at least ~13 Mbit/s; raise it for slower links.
    public var frame: TimeAmount
    /// The authentication handshake must be complete within this time after the connection
    /// opens (only with a secret). Default 10 s.
    public var authentication: TimeAmount

    public init(frame: TimeAmount = .seconds(30), authentication: TimeAmount = .seconds(10)) {
        self.frame = frame
        self.authentication = authentication
    }

    /// The defaults above.
    public static let `default` = WireDeadlines()
}

/// The cryptography of the handshake and of sealed frames; docs/PROTOCOL.md ("Authentication")
/// and docs/SECURITY.md describe it.
enum AuthenticationHandshake {
    static let nonceByteCount = 32
    static let proofByteCount = 32
    /// authChallenge: version u8, session id u64, coordinator nonce.
    static let challengeByteCount = 1 + 8 + nonceByteCount
    /// authResponse: worker nonce, worker proof.
    static let responseByteCount = nonceByteCount + proofByteCount
    /// authConfirm: coordinator proof.
    static let confirmByteCount = proofByteCount

    /// Fresh random bytes from the system CSPRNG (BoringSSL's RAND_bytes through swift-crypto).
    static func nonce() -> [UInt8] {
        SymmetricKey(size: .bits256).withUnsafeBytes { Array($0) }
    }

    /// What both proofs are computed over: a label, the version, the session id and both nonces.
    static func transcript(version: UInt8, sessionID: UInt64, coordinatorNonce: [UInt8], workerNonce: [UInt8]) -> [UInt8] {
        var bytes = Array("BPWR auth".utf8)
        bytes.append(version)
        withUnsafeBytes(of: sessionID.bigEndian) { bytes.append(contentsOf: $0) }
        bytes += coordinatorNonce
        bytes += workerNonce
        return bytes
    }

    /// The key proofs are made with: HKDF-SHA256 of the secret (not the secret itself).
    static func proofKey(_ secret: SharedSecret) -> SymmetricKey {
        HKDF<SHA256>.deriveKey(inputKeyMaterial: secret.key, salt: Array("BPWR v2 handshake".utf8),
                               info: Array("proof key".utf8), outputByteCount: 32)
    }

    /// HMAC-SHA256 over the role's label and the transcript: the proof that `role` knows the secret.
    static func proof(by role: SessionRole, transcript: [UInt8], key: SymmetricKey) -> [UInt8] {
        Array(HMAC<SHA256>.authenticationCode(for: Array("proof by \(role)".utf8) + transcript, using: key))
    }

    /// Constant-time check of a proof said to come from `role`.
    static func verify(_ proof: [UInt8], by role: SessionRole, transcript: [UInt8], key: SymmetricKey) -> Bool {
        HMAC<SHA256>.isValidAuthenticationCode(proof, authenticating: Array("proof by \(role)".utf8) + transcript, using: key)
    }

    /// The two per-direction frame keys: HKDF-SHA256 of the secret, salted with both nonces,
    /// bound to the transcript and the direction.
    static func frameKeys(_ secret: SharedSecret, transcript: [UInt8], coordinatorNonce: [UInt8], workerNonce: [UInt8])
        -> (coordinatorToWorker: SymmetricKey, workerToCoordinator: SymmetricKey)
    {
        func key(_ direction: String) -> SymmetricKey {
            HKDF<SHA256>.deriveKey(inputKeyMaterial: secret.key, salt: coordinatorNonce + workerNonce,
                                   info: Array("BPWR v2 frames \(direction)".utf8) + transcript, outputByteCount: 32)
        }
        return (key("coordinator to worker"), key("worker to coordinator"))
    }
}

/// Seals or opens the frames of one direction: AES-256-GCM, the 64-bit sequence number of the
/// frame in that direction as the nonce (4 zero bytes, then the number big-endian), and the
/// 12-byte frame header (with the sealed flag and the sealed length) as associated data. The
/// sequence number is never sent: a replayed, reordered or dropped frame is opened with the
/// wrong nonce and fails, like a modified one. ``FrameSecurityHandler`` keeps one per direction;
/// it is public for benchmarks (`engine-bench --only aead`).
public struct FrameCipher {
    let key: SymmetricKey
    /// The sequence number of the next frame.
    public private(set) var sequence: UInt64 = 0

    /// A cipher for one direction of one connection, starting at sequence number 0.
    public init(key: SymmetricKey) { self.key = key }

    private func nonce() throws -> AES.GCM.Nonce {
        var bytes = [UInt8](repeating: 0, count: 12)
        withUnsafeBytes(of: sequence.bigEndian) { bytes.replaceSubrange(4..<12, with: $0) }
        return try AES.GCM.Nonce(data: bytes)
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
        let associated = Self.associatedData(frame, sealedLength: length + FrameFlags.sealOverhead)
        let nonce = try nonce()
        let box = try frame.payload.withUnsafeReadableBytes { plaintext in
            try AES.GCM.seal(plaintext, using: key, nonce: nonce, authenticating: associated)
        }
        var payload = allocator.buffer(capacity: length + FrameFlags.sealOverhead)
        box.ciphertext.withUnsafeBytes { _ = payload.writeBytes($0) }
        box.tag.withUnsafeBytes { _ = payload.writeBytes($0) }
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
        let nonce = try nonce()
        let plaintext: Data
        do {
            plaintext = try frame.payload.withUnsafeReadableBytes { sealed in
                let cut = sealed.count - FrameFlags.sealOverhead
                let box = try AES.GCM.SealedBox(nonce: nonce, ciphertext: UnsafeRawBufferPointer(rebasing: sealed[..<cut]),
                                                tag: UnsafeRawBufferPointer(rebasing: sealed[cut...]))
                return try AES.GCM.open(box, using: key, authenticating: associated)
            }
        } catch {
            throw failure
        }
        var payload = allocator.buffer(capacity: plaintext.count)
        plaintext.withUnsafeBytes { _ = payload.writeBytes($0) }
        sequence += 1
        var flags = frame.flags
        flags.remove(.sealed)
        return WireFrame(version: frame.version, type: frame.type, flags: flags, payload: payload)
    }
}
