import Engine
import Foundation
import Wire

/// The worker processes `coordinator --local N` starts on loopback, and stops again when the
/// coordinator ends (normally, on an error, or on SIGINT/SIGTERM; a worker started this way
/// also exits by itself if the coordinator is killed).
final class LocalWorkers: @unchecked Sendable {
    private let lock = NSLock()
    private var processes: [Process] = []
    private(set) var addresses: [String] = []

    /// Starts `count` workers with `threads` BLAS threads each and waits for their ports. With
    /// a `secret`, each worker gets its file's path in `BACKPROP_SECRET_FILE` (in its
    /// environment, never on its command line).
    init(count: Int, threads: Int, secret: SharedSecret? = nil) throws {
        let executable = Self.workerExecutable()
        guard FileManager.default.isExecutableFile(atPath: executable) else {
            throw CoordinatorError("cannot start local workers: no worker executable at \(executable) (build it with `swift build -c release`)")
        }
        for i in 0..<count {
            let process = Process()
            process.executableURL = URL(fileURLWithPath: executable)
            process.arguments = ["--listen", "127.0.0.1:0", "--threads", String(threads), "--exit-with-parent"]
            var environment = ProcessInfo.processInfo.environment
            environment.merge(BLASRuntime.childEnvironment(threads: threads)) { _, new in new }
            environment[SharedSecret.environmentVariable] = secret?.path
            process.environment = environment
            let output = Pipe()
            process.standardOutput = output
            try process.run()
            lock.withLock { processes.append(process) }
            guard let line = Self.readLine(output.fileHandleForReading),
                  let range = line.range(of: "listening on "),
                  let address = line[range.upperBound...].split(separator: " ").first else {
                stop()
                throw CoordinatorError("local worker \(i + 1) did not start (it printed no address); run \(executable) by hand to see why")
            }
            addresses.append(String(address))
        }
    }

    /// Stops every worker (SIGTERM, then SIGKILL after a second).
    func stop() {
        let running = lock.withLock { () -> [Process] in
            defer { processes.removeAll() }
            return processes
        }
        for p in running where p.isRunning { p.terminate() }
        let deadline = Date().addingTimeInterval(1)
        for p in running {
            while p.isRunning && Date() < deadline { usleep(10_000) }
            if p.isRunning { kill(p.processIdentifier, SIGKILL) }
        }
    }

    deinit { stop() }

    /// The `worker` executable next to this one.
    static func workerExecutable() -> String {
        let me = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe"))
            ?? CommandLine.arguments[0]
        return URL(fileURLWithPath: me).deletingLastPathComponent().appendingPathComponent("worker").path
    }

    private static func readLine(_ handle: FileHandle) -> String? {
        var bytes = [UInt8]()
        while true {
            guard let chunk = try? handle.read(upToCount: 1), let byte = chunk.first else {
                return bytes.isEmpty ? nil : String(decoding: bytes, as: UTF8.self)
            }
            if byte == UInt8(ascii: "\n") { return String(decoding: bytes, as: UTF8.self) }
            bytes.append(byte)
        }
    }
}

/// An error that ends the coordinator with a message saying what to do.
struct CoordinatorError: Error, CustomStringConvertible, LocalizedError {
    var errorDescription: String? { description }
    var description: String
    init(_ description: String) { self.description = description }
}
