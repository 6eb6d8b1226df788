import Crypto
import Foundation

/// The secret a coordinator and its workers share, read from a file (never from the command
/// line). Both executables find it with ``SharedSecret/resolve(option:environment:)``; give it
/// to the pipeline as ``WireSecurity/sharedSecret(_:)``.
///
/// The file's bytes are the secret, except that trailing `\n` and `\r` bytes are removed (so
/// `openssl rand -hex 32 > FILE` and `head -c 32 /dev/urandom > FILE` both work, and a file
/// written with or without a final newline gives the same secret). It must hold at least
/// ``minimumByteCount`` bytes after that, at most 64 KiB, be a regular file, and be accessible
/// to its owner only (mode 600 or 400).
public struct SharedSecret: Sendable {
    /// The fewest secret bytes accepted.
    public static let minimumByteCount = 16
    /// The environment variable that names the secret file.
    public static let environmentVariable = "BACKPROP_SECRET_FILE"
    /// The name of the systemd credential (`LoadCredential=backprop-secret:/etc/...`), looked
    /// for in `$CREDENTIALS_DIRECTORY`.
    public static let credentialName = "backprop-secret"

    /// The secret's bytes (only ever used as HKDF input key material).
    private let bytes: [UInt8]
    /// The secret as a key (`SymmetricKey` is not `Sendable`, so it is made when needed).
    var key: SymmetricKey { SymmetricKey(data: bytes) }
    /// The absolute path it was read from.
    public let path: String

    /// Makes a secret from bytes directly (tests; programs use ``load(path:)``).
    public init(bytes: [UInt8], path: String = "(in memory)") throws {
        guard bytes.count >= Self.minimumByteCount else {
            throw SecretError("the secret in \(path) has \(bytes.count) bytes; at least \(Self.minimumByteCount) are needed (make one with `head -c 32 /dev/urandom > FILE && chmod 600 FILE`)")
        }
        self.bytes = bytes
        self.path = path
    }

    /// Reads the secret file at `path`, refusing a missing, unreadable, too short, or
    /// group/other-accessible file with a message that says what to do.
    public static func load(path: String) throws -> SharedSecret {
        let absolute = URL(fileURLWithPath: path).standardizedFileURL.path
        var info = stat()
        guard stat(absolute, &info) == 0 else {
            throw SecretError("cannot read the secret file \(absolute): \(String(cString: strerror(errno))) (give an existing file with --secret-file FILE or \(environmentVariable)=FILE)")
        }
        guard (info.st_mode & mode_t(S_IFMT)) == mode_t(S_IFREG) else {
            throw SecretError("the secret file \(absolute) is not a regular file")
        }
        let permissions = info.st_mode & 0o777
        // Others: never. The group may read (a Kubernetes Secret volume with an fsGroup gives
        // 0440 owned by root and the pod's group), not write.
        guard permissions & 0o027 == 0 else {
            throw SecretError("the secret file \(absolute) is accessible to others or writable by its group (mode \(String(permissions, radix: 8))); anyone who can read it can join the training: run `chmod 600 \(absolute)` (or 640 to share it with a group)")
        }
        guard info.st_size <= 64 << 10 else {
            throw SecretError("the secret file \(absolute) has \(info.st_size) bytes; a secret is at most 64 KiB (32 random bytes are enough)")
        }
        guard let handle = FileHandle(forReadingAtPath: absolute) else {
            throw SecretError("cannot open the secret file \(absolute) for reading: \(String(cString: strerror(errno))) (does this user own it?)")
        }
        defer { try? handle.close() }
        var bytes = [UInt8]((try? handle.readToEnd()) ?? Data())
        while let last = bytes.last, last == UInt8(ascii: "\n") || last == UInt8(ascii: "\r") { bytes.removeLast() }
        return try SharedSecret(bytes: bytes, path: absolute)
    }

    /// Where a process finds its secret, in this order: `option` (the `--secret-file` value),
    /// `BACKPROP_SECRET_FILE`, then `$CREDENTIALS_DIRECTORY/backprop-secret` if that file exists
    /// (systemd's `LoadCredential=`). `nil` when none is given: the process runs without
    /// authentication. A source that is given but unusable is an error, never ignored.
    public static func resolve(option: String?, environment: [String: String] = ProcessInfo.processInfo.environment) throws -> SharedSecret? {
        if let option { return try load(path: option) }
        if let path = environment[environmentVariable], !path.isEmpty { return try load(path: path) }
        if let directory = environment["CREDENTIALS_DIRECTORY"], !directory.isEmpty {
            let path = URL(fileURLWithPath: directory).appendingPathComponent(credentialName).path
            if FileManager.default.fileExists(atPath: path) { return try load(path: path) }
        }
        return nil
    }
}

/// A secret file that cannot be used; the description says why and what to do.
public struct SecretError: Error, CustomStringConvertible, LocalizedError {
    public let description: String
    public var errorDescription: String? { description }
    init(_ description: String) { self.description = description }
}

/// Whether a listen host is a loopback address (127.0.0.0/8, ::1, localhost), which only
/// processes on the same machine can reach.
public func isLoopbackHost(_ host: String) -> Bool {
    var h = host.lowercased()
    if h.hasPrefix("[") && h.hasSuffix("]") { h = String(h.dropFirst().dropLast()) }
    if h == "localhost" || h == "::1" || h == "0:0:0:0:0:0:0:1" { return true }
    let parts = h.split(separator: ".", omittingEmptySubsequences: false)
    guard parts.count == 4, parts.allSatisfy({ UInt8($0) != nil }) else { return false }
    return parts[0] == "127"
}
