import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// A process a test runs in the background and acts on while it runs: waits for a line of
/// its output, sends it signals, then waits for it to end.
final class LiveProcess: @unchecked Sendable {
    let process: Process
    let command: String
    private let started = Date()
    private let out: PipeDrain
    private let err: PipeDrain

    init(_ executable: String, _ arguments: [String], environment extra: [String: String] = [:],
         verb: String = "starting") throws {
        command = ([URL(fileURLWithPath: executable).lastPathComponent] + arguments).joined(separator: " ")
        print("[DistributedTests] \(verb): \(command)")
        let (process, o, e) = try startProcess(executable, arguments, environment: extra)
        self.process = process
        out = PipeDrain(o)
        err = PipeDrain(e)
    }

    var pid: Int32 { process.processIdentifier }
    var stdout: String { out.text }

    /// Waits until stdout contains `text`; returns whether it did within `timeout` seconds.
    func waitForOutput(_ text: String, timeout: Double = 120) async throws -> Bool {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if out.text.contains(text) { return true }
            if !process.isRunning { return out.text.contains(text) }
            try await Task.sleep(for: .milliseconds(20))
        }
        return false
    }

    /// Sends `signal` to `target` (default: this process) `delay` milliseconds after stdout first
    /// contains `text`, timed by a thread of its own: a test's tasks can wait seconds for a turn
    /// while other suites keep Swift's cooperative threads busy, and a signal that late may land
    /// after the run has ended. Returns when the signal was sent, or nil when the text did not
    /// appear within `timeout` seconds (or the process ended first).
    @discardableResult
    func signal(_ signal: Int32, to target: Int32? = nil, milliseconds delay: Int = 0, afterOutput text: String,
                timeout: Double = 120) async -> Date? {
        await self.signal(signal, to: target, milliseconds: delay, timeout: timeout) { $0.contains(text) }
    }

    /// `signal(_:to:milliseconds:afterOutput:timeout:)` once `ready` holds for stdout so far
    /// (checked by the same thread, for conditions that depend on what the process printed first).
    @discardableResult
    func signal(_ signal: Int32, to target: Int32? = nil, milliseconds delay: Int = 0, timeout: Double = 120,
                when ready: @escaping @Sendable (String) -> Bool) async -> Date? {
        await withCheckedContinuation { (continuation: CheckedContinuation<Date?, Never>) in
            Thread { [self] in
                let deadline = Date().addingTimeInterval(timeout)
                while Date() < deadline && process.isRunning {
                    if ready(out.text) {
                        if delay > 0 { usleep(useconds_t(delay * 1000)) }
                        kill(target ?? pid, signal)
                        return continuation.resume(returning: Date())
                    }
                    usleep(2000)
                }
                continuation.resume(returning: nil)
            }.start()
        }
    }

    /// Waits for the process to end (killing it after `timeout` seconds) and returns what it left.
    func finish(timeout: Double = 120) async throws -> ProcessOutcome {
        let deadline = Date().addingTimeInterval(timeout)
        while process.isRunning && Date() < deadline { try await Task.sleep(for: .milliseconds(20)) }
        let timedOut = process.isRunning
        if timedOut {
            // SIGTERM first: a coordinator stops its local workers.
            stopProcess(process)
        }
        process.waitUntilExit()
        let drainDeadline = Date().addingTimeInterval(5)
        while !(out.isFinished && err.isFinished) && Date() < drainDeadline {
            try await Task.sleep(for: .milliseconds(10))
        }
        let outcome = ProcessOutcome(command: command, status: process.terminationStatus, timedOut: timedOut,
                                     stdout: out.text, stderr: err.text, seconds: Date().timeIntervalSince(started))
        print("[DistributedTests] `\(command)` exited \(outcome.status) in \(String(format: "%.2f", outcome.seconds))s"
              + (timedOut ? " (KILLED after \(Int(timeout))s)" : ""))
        return outcome
    }

    deinit {
        if process.isRunning { kill(pid, SIGKILL) }
    }
}

/// Whether process `pid` still exists (and is not a zombie).
func processExists(_ pid: Int32) -> Bool {
    guard kill(pid, 0) == 0 else { return false }
    let status = (try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8)) ?? ""
    // The state follows the command name in parentheses: Z is a zombie.
    guard let close = status.lastIndex(of: ")") else { return false }
    return !status[status.index(after: close)...].trimmingCharacters(in: .whitespaces).hasPrefix("Z")
}
