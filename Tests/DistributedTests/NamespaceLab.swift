import Foundation
import TestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// A private network of Linux network namespaces for tests that need real interfaces: a
/// "switch" namespace holding a bridge, and hosts joined to it by veth pairs (`eth0` in host N,
/// `pN` on the bridge), addressed 10.231.0.(N+1)/24. Nothing is created in the test's own
/// namespace, so the lab neither sees nor disturbs the machine's network, and two labs never
/// clash (their namespace names carry the process id and a random tag).
///
/// Needs root and iproute2. `make(hosts:)` says why when it cannot build the lab; `destroy()`
/// (also run by `deinit`) deletes every namespace made, which deletes their interfaces.
final class NamespaceLab: @unchecked Sendable {
    let ip: String
    let tag: String
    let hostCount: Int
    private let lock = NSLock()
    private var namespaces: [String] = []

    /// Where iproute2's `ip` is, if anywhere.
    static let ipExecutable: String? = ["/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"]
        .first { FileManager.default.isExecutableFile(atPath: $0) }

    var switchNamespace: String { "\(tag)-sw" }
    func namespace(_ host: Int) -> String { "\(tag)-h\(host)" }
    func address(_ host: Int) -> String { "10.231.0.\(host + 1)" }
    /// The bridge port of `host`: set it down to unplug the host's cable.
    func switchPort(_ host: Int) -> String { "p\(host)" }

    /// Why a lab cannot be made here.
    struct Unavailable: Error, CustomStringConvertible { var description: String }

    private init(ip: String, hosts: Int) {
        self.ip = ip
        hostCount = hosts
        tag = "bpt\(getpid() % 100_000)x\(UInt16.random(in: 0...UInt16.max))"
    }

    /// Builds the lab, or throws `Unavailable` with the reason (not root, no `ip`, EPERM, ...).
    static func make(hosts: Int) throws -> NamespaceLab {
        guard geteuid() == 0 else {
            throw Unavailable(description: "network namespaces need root (euid \(geteuid()))")
        }
        guard let ip = ipExecutable else {
            throw Unavailable(description: "iproute2's ip is not installed (apt-get install iproute2; .ci/deps does)")
        }
        let lab = NamespaceLab(ip: ip, hosts: hosts)
        do {
            try lab.addNamespace(lab.switchNamespace)
        } catch {
            throw Unavailable(description: "cannot create a network namespace here: \(error)")
        }
        do {
            let sw = lab.switchNamespace
            try lab.run(["-n", sw, "link", "add", "br0", "type", "bridge"])
            try lab.run(["-n", sw, "link", "set", "br0", "up"])
            for host in 0..<hosts {
                let ns = lab.namespace(host)
                try lab.addNamespace(ns)
                try lab.run(["-n", ns, "link", "set", "lo", "up"])
                try lab.run(["-n", sw, "link", "add", lab.switchPort(host), "type", "veth", "peer", "name", "eth0", "netns", ns])
                try lab.run(["-n", sw, "link", "set", lab.switchPort(host), "master", "br0", "up"])
                try lab.run(["-n", ns, "addr", "add", lab.address(host) + "/24", "dev", "eth0"])
                try lab.run(["-n", ns, "link", "set", "eth0", "up"])
            }
        } catch {
            lab.destroy()
            throw Unavailable(description: "cannot join namespaces with veth pairs and a bridge here: \(error)")
        }
        print("[DistributedTests] namespace lab \(lab.tag): \(hosts) hosts on a bridge, 10.231.0.1-\(hosts)")
        return lab
    }

    /// Builds the lab, or prints the reason and ends the test as skipped (cancelled), never passed.
    static func makeOrSkip(hosts: Int) throws -> NamespaceLab {
        do {
            return try make(hosts: hosts)
        } catch let unavailable as Unavailable {
            print("[DistributedTests] SKIPPED: \(unavailable)")
            try Test.cancel("skipped: \(unavailable)")
        }
    }

    private func addNamespace(_ name: String) throws {
        try run(["netns", "add", name])
        lock.withLock { namespaces.append(name) }
    }

    /// Plugs `host`'s cable in or out (its bridge port up or down).
    func setLink(host: Int, up: Bool) throws {
        try run(["-n", switchNamespace, "link", "set", switchPort(host), up ? "up" : "down"])
    }

    /// The bytes `host`'s eth0 has received.
    func receivedBytes(host: Int) throws -> Int {
        let text = try run(["netns", "exec", namespace(host), "cat", "/sys/class/net/eth0/statistics/rx_bytes"])
        return Int(text.trimmingCharacters(in: .whitespacesAndNewlines)) ?? -1
    }

    /// `ip` + arguments that run `command` inside `host`'s namespace.
    func exec(host: Int, _ command: [String]) -> (String, [String]) {
        (ip, ["netns", "exec", namespace(host)] + command)
    }

    /// A worker in `host`'s namespace listening on its address and `port` (no secret: `--insecure`).
    func startWorker(host: Int, port: Int, executable: String) throws -> BackgroundWorker {
        let (launcher, prefix) = exec(host: host, [])
        return try BackgroundWorker(executable: executable, listen: "\(address(host)):\(port)",
                                    arguments: ["--insecure"], launcher: [launcher] + prefix)
    }

    /// Runs `ip arguments` to its end; throws with its stderr when it fails. Returns its stdout.
    @discardableResult
    func run(_ arguments: [String]) throws -> String {
        let (process, out, err) = try startProcess(ip, arguments)
        let outData = out.readDataToEndOfFile()
        let errData = err.readDataToEndOfFile()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            let message = String(decoding: errData, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
            throw Unavailable(description: "`ip \(arguments.joined(separator: " "))` exited \(process.terminationStatus): \(message)")
        }
        return String(decoding: outData, as: UTF8.self)
    }

    /// Deletes every namespace made (their interfaces go with them). Safe to call twice.
    func destroy() {
        let names = lock.withLock { () -> [String] in
            defer { namespaces.removeAll() }
            return namespaces
        }
        for name in names.reversed() {
            do { try run(["netns", "del", name]) } catch { print("[DistributedTests] cleanup: \(error)") }
        }
    }

    deinit { destroy() }
}

/// Loopback `--local 2` runs of the tiny options, made once per argument list and shared by the
/// tests that compare a run elsewhere (namespaces, ssh) against loopback.
actor ReferenceRuns {
    static let shared = ReferenceRuns()
    private var runs: [[String]: Task<String, Error>] = [:]

    /// The `model_sha256` of `coordinator --local 2` with the tiny options and `arguments`.
    func digest(_ arguments: [String]) async throws -> String {
        if let task = runs[arguments] { return try await task.value }
        let task = Task<String, Error> {
            let directory = try temporaryDirectory("reference")
            defer { try? FileManager.default.removeItem(at: directory) }
            let metrics = directory.appendingPathComponent("run.jsonl").path
            let outcome = try await TinyRun.coordinator(["--local", "2"] + arguments + ["--metrics", metrics])
            try #require(outcome.status == 0 && !outcome.timedOut, "the loopback reference run failed: \(outcome)")
            return try MetricsFile(path: metrics).modelDigest
        }
        runs[arguments] = task
        return try await task.value
    }
}

/// A TCP port nobody listens on now (the kernel's choice; free again when this returns).
func freePort() -> Int {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    defer { close(fd) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    address.sin_port = 0
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    _ = withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) } }
    _ = withUnsafeMutablePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
    }
    return Int(UInt16(bigEndian: address.sin_port))
}

/// Processes whose command line contains every one of `needles` (read from /proc).
func processes(matching needles: [String]) -> [(pid: Int32, commandLine: String)] {
    guard let entries = try? FileManager.default.contentsOfDirectory(atPath: "/proc") else { return [] }
    return entries.compactMap { entry -> (Int32, String)? in
        guard let pid = Int32(entry), pid != getpid(),
              let data = FileManager.default.contents(atPath: "/proc/\(entry)/cmdline"), !data.isEmpty else { return nil }
        let line = String(decoding: data.map { $0 == 0 ? UInt8(ascii: " ") : $0 }, as: UTF8.self)
        return needles.allSatisfy { line.contains($0) } ? (pid, line) : nil
    }
}
