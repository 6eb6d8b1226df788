import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// A worker drops a peer that does not speak the protocol and keeps serving.
@Suite("Worker against a hostile client", .oneProcessTestAtATime)
struct HostileClientTests {
    /// 100 bytes of garbage: not the "BPWR" magic from the first byte on.
    static let garbage = (0..<100).map { UInt8(truncatingIfNeeded: $0 &* 37 &+ 11) }

    /// `bytes` as text, each byte outside printable ASCII shown as a dot.
    static func printable(_ bytes: [UInt8]) -> String {
        String(decoding: bytes.map { (32...126).contains($0) ? $0 : UInt8(ascii: ".") }, as: UTF8.self)
    }

    @Test("a worker closes a connection that sends 100 bytes of garbage, then serves a real coordinator")
    func garbageThenRealSession() async throws {
        let (_, workerPath) = try Products.require()
        let worker = try BackgroundWorker(executable: workerPath)
        defer { worker.stop() }

        print("[DistributedTests] sending 100 bytes of garbage to 127.0.0.1:\(worker.port)")
        let result = try RawConnection.sendAndAwaitClose(port: worker.port, bytes: Self.garbage, timeout: 5)
        print("[DistributedTests] worker answered \(result.received.count) byte(s), then "
              + "\(result.closed ? "closed the connection" : "kept it open") after \(String(format: "%.2f", result.seconds))s")
        #expect(result.closed, "the worker did not close the connection within 5 s (\(result.detail))")
        // docs/PROTOCOL.md, "Violations": one `error` frame naming the problem, then the close.
        let reply = Self.printable(result.received)
        print("[DistributedTests] the worker's answer: \(reply)")
        #expect(result.received.starts(with: Array("BPWR".utf8)), "the answer is not a frame: \(reply)")
        #expect(reply.localizedCaseInsensitiveContains("magic"), "the answer does not name the wrong magic: \(reply)")
        #expect(worker.process.isRunning, "the worker exited after the garbage:\n\(worker.stderr)")

        let outcome = try await TinyRun.coordinator(["--workers", "127.0.0.1:\(worker.port)", "--max-steps", "1"])
        #expect(outcome.status == 0 && !outcome.timedOut, "\(outcome)\n--- worker stderr ---\n\(worker.stderr)")
        #expect(outcome.stdout.contains("test error "), "\(outcome)")
    }
}

extension HostileClientTests {
    @Test("a worker drops a connection that sends nothing, within its 10 s hello deadline, then serves a coordinator")
    func silentClientDoesNotBlockTheWorker() async throws {
        let (_, workerPath) = try Products.require()
        let worker = try BackgroundWorker(executable: workerPath)
        defer { worker.stop() }
        print("[DistributedTests] connecting to 127.0.0.1:\(worker.port) and sending nothing")
        let result = try RawConnection.sendAndAwaitClose(port: worker.port, bytes: [], timeout: 20)
        print("[DistributedTests] silent connection \(result.closed ? "closed" : "still open") after \(String(format: "%.1f", result.seconds))s")
        #expect(result.closed, "the worker kept a silent connection open (\(result.detail))")
        #expect(result.seconds >= 9 && result.seconds < 15, "closed after \(result.seconds)s; the deadline is 10 s")
        let outcome = try await TinyRun.coordinator(["--workers", "127.0.0.1:\(worker.port)", "--max-steps", "1"])
        #expect(outcome.status == 0 && !outcome.timedOut, "\(outcome)\n--- worker stderr ---\n\(worker.stderr)")
    }
}

extension HostileClientTests {
    /// A refused peer that was still writing used to get a reset (the worker closed its socket
    /// with the peer's bytes unread), and an NIO peer then closed on its failed write without
    /// reading the refusal: the coordinator said "connection reset" instead of why.
    @Test("a client that keeps writing after its error still reads the refusal, and the connection ends with a FIN, not a reset")
    func refusalReachesAWritingClient() async throws {
        let (_, workerPath) = try Products.require()
        let worker = try BackgroundWorker(executable: workerPath)
        defer { worker.stop() }
        let result = try RawConnection.sendAndAwaitClose(port: worker.port, bytes: Self.garbage, thenWriting: 16 << 20, timeout: 10)
        let reply = Self.printable(result.received)
        print("[DistributedTests] writing client: \(result.detail) after \(String(format: "%.2f", result.seconds)) s; answer: \(reply)")
        #expect(result.closed, "the worker did not close the connection (\(result.detail))")
        #expect(reply.localizedCaseInsensitiveContains("magic"), "the refusal did not arrive: \(reply)")
        #expect(result.detail == RawConnection.orderlyClose, "the connection ended with \(result.detail), not an orderly close after all the junk was read")
        #expect(worker.process.isRunning, "the worker exited:\n\(worker.stderr)")
        let outcome = try await TinyRun.coordinator(["--workers", "127.0.0.1:\(worker.port)", "--max-steps", "1"])
        #expect(outcome.status == 0 && !outcome.timedOut, "\(outcome)\n--- worker stderr ---\n\(worker.stderr)")
    }
}

/// A plain POSIX TCP client, for bytes no well-behaved peer would send.
enum RawConnection {
    struct Result {
        var closed: Bool
        var received: [UInt8]
        var seconds: Double
        var detail: String
    }

    /// How `Result.detail` names an orderly close (the peer's FIN).
    static let orderlyClose = "recv returned 0 (orderly close)"

    /// Connects to 127.0.0.1:`port`, sends `bytes`, and reads until the peer closes (recv
    /// returns 0 or fails with a reset) or `timeout` seconds pass. `afterReply`, if any, is
    /// sent once the peer's first answer (a frame header at least) has arrived. `thenWriting`
    /// bytes of junk follow `bytes` before anything is read; a send that fails is named in
    /// `Result.detail`.
    static func sendAndAwaitClose(port: Int, bytes: [UInt8], afterReply: [UInt8] = [], thenWriting junk: Int = 0,
                                  timeout: Double) throws -> Result {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        try #require(fd >= 0, "socket() failed: errno \(errno)")
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        try #require(connected == 0, "connect to 127.0.0.1:\(port) failed: errno \(errno)")
        let started = Date()
        let sent = bytes.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
        try #require(sent == bytes.count, "send returned \(sent), errno \(errno)")

        var received: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        // The junk, all of it, before reading anything: a peer that resets the connection
        // instead of reading makes a send fail.
        var junkLeft = junk
        var junkFailure: String?
        let chunk = [UInt8](repeating: UInt8(ascii: "x"), count: 64 << 10)
        while junkLeft > 0 {
            let n = chunk.withUnsafeBytes { send(fd, $0.baseAddress, min($0.count, junkLeft), Int32(MSG_NOSIGNAL)) }
            if n > 0 { junkLeft -= n; continue }
            if n < 0 && errno == EINTR { continue }
            junkFailure = "sending the junk failed with \(junk - junkLeft) of \(junk) bytes sent: errno \(errno)"
            break
        }
        let deadline = started.addingTimeInterval(timeout)
        while Date() < deadline {
            var poller = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            let ready = poll(&poller, 1, 100)
            if ready < 0 && errno != EINTR {
                return Result(closed: false, received: received, seconds: Date().timeIntervalSince(started), detail: "poll failed: errno \(errno)")
            }
            if ready <= 0 { continue }
            let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n > 0 {
                let first = received.count < 12
                received += buffer[0..<n]
                if first, received.count >= 12, !afterReply.isEmpty {
                    let sent = afterReply.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
                    try #require(sent == afterReply.count, "send returned \(sent), errno \(errno)")
                }
                continue
            }
            if n < 0 && errno == EINTR { continue }
            var detail = n == 0 ? orderlyClose : "recv failed: errno \(errno)"
            if let junkFailure { detail += "; " + junkFailure }
            return Result(closed: true, received: received, seconds: Date().timeIntervalSince(started), detail: detail)
        }
        return Result(closed: false, received: received, seconds: timeout, detail: "no close after \(timeout)s")
    }
}
