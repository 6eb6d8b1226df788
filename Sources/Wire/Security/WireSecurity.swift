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
