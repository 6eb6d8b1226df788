import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Where the `coordinator` and `worker` executables of this build are, and the repository's
/// MNIST copy.
///
/// `swift test` (and `swift build --build-tests`) builds every target, executables included,
/// into the same products directory as the test bundle, so the executables are looked for next
/// to the running test binary first. Only if that fails are `Bundle.main`, `argv[0]` and the
/// package's default `.build/debug` tried.
enum Products {
    /// The package root (…/Tests/DistributedTests/Subprocess.swift, three levels up).
    static let packageRoot = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    /// The MNIST directory shipped with the repository.
    static var mnistDirectory: String { packageRoot.appendingPathComponent("data/mnist").path }

    /// Directories tried, in order, with what each one is.
    static var candidates: [(String, String)] {
        var list: [(String, String)] = []
        if let exe = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe") {
            list.append((URL(fileURLWithPath: exe).deletingLastPathComponent().path, "/proc/self/exe"))
        }
        // On Linux the bundle is the .xctest executable itself, on macOS a directory.
        let bundle = Bundle.main.bundleURL
        list.append((bundle.path, "Bundle.main"))
        list.append((bundle.deletingLastPathComponent().path, "Bundle.main's directory"))
        if let first = CommandLine.arguments.first {
            list.append((URL(fileURLWithPath: first).deletingLastPathComponent().path, "argv[0]"))
        }
        list.append((packageRoot.appendingPathComponent(".build/debug").path, "#filePath + .build/debug"))
        return list
    }

    /// The products directory holding both executables, or nil.
    static let directory: String? = {
        for (directory, source) in candidates {
            let fm = FileManager.default
            if fm.isExecutableFile(atPath: directory + "/coordinator"), fm.isExecutableFile(atPath: directory + "/worker") {
                print("[DistributedTests] executables in \(directory) (found from \(source))")
                return directory
            }
        }
        return nil
    }()

    /// The executables; records a failure naming every place tried when they are not there.
    static func require() throws -> (coordinator: String, worker: String) {
        let where_ = candidates.map { "\($0.0) (\($0.1))" }.joined(separator: ", ")
        let directory = try #require(
            directory,
            "no coordinator and worker executables found; tried \(where_). `swift test` builds them; run `swift build --build-tests` first if you run the test binary by hand.")
        return (directory + "/coordinator", directory + "/worker")
    }
}

/// What a finished (or killed) subprocess left behind.
struct ProcessOutcome: CustomStringConvertible {
    var command: String
    var status: Int32
    var timedOut: Bool
    var stdout: String
    var stderr: String
    var seconds: Double

    /// Stdout and stderr together, for messages that may go to either.
    var output: String { stdout + "\n" + stderr }

    var description: String {
        "`\(command)` exited \(status)\(timedOut ? " (killed after the timeout)" : "") in "
            + String(format: "%.2f", seconds) + "s\n--- stdout ---\n\(stdout)\n--- stderr ---\n\(stderr)"
    }
}

/// Reads a file handle to its end on a thread of its own (so that a full pipe never blocks
/// the child).
final class PipeDrain: @unchecked Sendable {
    private let lock = NSLock()
    private var data = Data()
    private var finished = false

    init(_ handle: FileHandle) {
        let thread = Thread { [self] in
            while true {
                let chunk = handle.availableData
                if chunk.isEmpty { break }
                lock.withLock { data.append(chunk) }
            }
            lock.withLock { finished = true }
        }
        thread.start()
    }

    var isFinished: Bool { lock.withLock { finished } }
    var text: String { lock.withLock { String(decoding: data, as: UTF8.self) } }
}

/// Runs `executable` with `arguments`, killing it after `timeout` seconds; prints the command
/// line first and a one-line summary after.
func runProcess(_ executable: String, _ arguments: [String], timeout: Double = 120,
                environment extra: [String: String] = [:]) async throws -> ProcessOutcome {
    try await LiveProcess(executable, arguments, environment: extra, verb: "running").finish(timeout: timeout)
}

/// Stops `process`: SIGTERM, then SIGKILL after 2 s; returns once it has ended.
func stopProcess(_ process: Process) {
    guard process.isRunning else { return }
    process.terminate()
    let deadline = Date().addingTimeInterval(2)
    while process.isRunning && Date() < deadline { usleep(10_000) }
    if process.isRunning { kill(process.processIdentifier, SIGKILL) }
    process.waitUntilExit()
}

/// Starts `executable` with `arguments`, the test's environment plus `extra`, standard input
/// from /dev/null, standard output and error piped, in the temporary directory.
func startProcess(_ executable: String, _ arguments: [String], environment extra: [String: String] = [:]) throws
    -> (process: Process, stdout: FileHandle, stderr: FileHandle)
{
    let process = Process()
    process.executableURL = URL(fileURLWithPath: executable)
    process.arguments = arguments
    process.currentDirectoryURL = FileManager.default.temporaryDirectory
    var environment = ProcessInfo.processInfo.environment
    environment.merge(extra) { _, new in new }
    process.environment = environment
    let out = Pipe(), err = Pipe()
    process.standardOutput = out
    process.standardError = err
    process.standardInput = FileHandle.nullDevice
    try process.run()
    return (process, out.fileHandleForReading, err.fileHandleForReading)
}

/// A `worker` process the test started itself; stopped when the value goes away.
final class BackgroundWorker: @unchecked Sendable {
    let process: Process
    /// The address the worker says it listens on (`host:port`).
    let address: String
    let port: Int
    private let stderrDrain: PipeDrain

    /// Starts `worker --listen LISTEN --threads 1 --exit-with-parent ARGUMENTS` (LISTEN by
    /// default 127.0.0.1:PORT; port 0: any free one), behind `launcher` when one is given (a
    /// command prefix such as `ip netns exec NS`, which must exec the worker, not fork it), and
    /// reads the address it prints.
    init(executable: String, port: Int = 0, environment extra: [String: String] = [:], timeout: Double = 30,
         listen: String? = nil, arguments more: [String] = [], launcher: [String] = []) throws {
        let arguments = ["--listen", listen ?? "127.0.0.1:\(port)", "--threads", "1", "--exit-with-parent"] + more
        let command = launcher + [executable] + arguments
        print("[DistributedTests] starting: \(command.map { URL(fileURLWithPath: $0).lastPathComponent }.joined(separator: " "))")
        let (process, out, err) = try startProcess(command[0], Array(command.dropFirst()), environment: extra)
        self.process = process
        stderrDrain = PipeDrain(err)
        let line = Self.firstLine(of: out, timeout: timeout)
        guard let line, let range = line.range(of: "listening on "),
              let address = line[range.upperBound...].split(separator: " ").first,
              let colon = address.lastIndex(of: ":"), let port = Int(address[address.index(after: colon)...]) else {
            process.terminate()
            process.waitUntilExit()
            throw WorkerStartFailure(line: (line ?? "(nothing)") + "; stderr: " + stderrDrain.text)
        }
        self.address = String(address)
        self.port = port
        // Keep draining stdout so the worker never blocks on a full pipe.
        _ = PipeDrain(out)
        print("[DistributedTests] worker listening on \(address)")
    }

    var stderr: String { stderrDrain.text }

    func stop() { stopProcess(process) }

    deinit { stop() }

    /// The first line `handle` delivers, or nil at its end or after `timeout` seconds.
    static func firstLine(of handle: FileHandle, timeout: Double) -> String? {
        let fd = handle.fileDescriptor
        var bytes: [UInt8] = []
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            var poller = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            let ready = poll(&poller, 1, 100)
            if ready <= 0 { continue }
            var byte: UInt8 = 0
            guard read(fd, &byte, 1) == 1 else { return nil }
            if byte == UInt8(ascii: "\n") { return String(decoding: bytes, as: UTF8.self) }
            bytes.append(byte)
        }
        return nil
    }
}

struct WorkerStartFailure: Error, CustomStringConvertible {
    var line: String
    var description: String { "the worker did not print its address; its first line: \(line)" }
}

