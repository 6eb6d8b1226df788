import Engine
import Foundation
import Training
import Wire

/// The worker processes `coordinator --local N` starts on loopback, and stops again when the
/// coordinator ends (normally, on an error, or on SIGINT/SIGTERM; a worker started this way
/// also exits by itself if the coordinator is killed). A worker that dies while the run goes
/// on is started again on the same port, where the coordinator's link finds it.
final class LocalWorkers: @unchecked Sendable {
    private let lock = NSLock()
    private var processes: [Process] = []
    private var stopping = false
    private var restarts: [Int] = []
    private(set) var addresses: [String] = []
    private let executable: String
    private let threads: Int
    /// The CPUs of each worker, if they are bound to CPUs of their own.
    private let cpus: [[Int]]?
    private let secret: SharedSecret?
    private let compression: CompressionPolicy
    /// Restarts of one worker after which it is left down (it keeps failing to start).
    static let maximumRestarts = 20

    /// Starts `count` workers with `threads` BLAS threads each and waits for their ports; with
    /// `cpus`, worker `i` runs on `cpus[i]` only (a worker started again keeps its CPUs). With
    /// a `secret`, each worker gets its file's path in `BACKPROP_SECRET_FILE` (in its
    /// environment, never on its command line).
    init(count: Int, threads: Int, cpus: [[Int]]? = nil, secret: SharedSecret? = nil,
         compression: CompressionPolicy = .auto) throws {
        precondition(cpus == nil || cpus!.count == count, "one CPU set per worker")
        executable = Self.workerExecutable()
        self.threads = threads
        self.cpus = cpus
        self.secret = secret
        self.compression = compression
        guard FileManager.default.isExecutableFile(atPath: executable) else {
            throw CoordinatorError("cannot start local workers: no worker executable at \(executable) (build it with `swift build -c release`)")
        }
        for i in 0..<count {
            guard let (process, address) = try start(i, listen: "127.0.0.1:0") else {
                stop()
                throw CoordinatorError("local worker \(i + 1) did not start (it printed no address); run \(executable) by hand to see why")
            }
            lock.withLock {
                processes.append(process)
                restarts.append(0)
            }
            addresses.append(address)
            watch(i, process)
        }
    }

    /// Starts worker `i` listening on `listen`; returns it and the address it printed.
    private func start(_ i: Int, listen: String) throws -> (Process, String)? {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = ["--listen", listen, "--threads", String(threads), "--exit-with-parent",
                             "--log-level", "warning", "--compression", compression.rawValue]
            + (cpus.map { ["--cpus", CPUAffinity.format($0[i])] } ?? [])
        var environment = ProcessInfo.processInfo.environment
        environment.merge(BLASRuntime.childEnvironment(threads: threads)) { _, new in new }
        environment[SharedSecret.environmentVariable] = secret?.path
        process.environment = environment
        let output = Pipe()
        process.standardOutput = output
        try process.run()
        guard let line = Self.readLine(output.fileHandleForReading),
              let range = line.range(of: "listening on "),
              let address = line[range.upperBound...].split(separator: " ").first else {
            if process.isRunning { kill(process.processIdentifier, SIGKILL) }
            return nil
        }
        return (process, String(address))
    }

    /// Starts worker `i` again, on its port, whenever it ends while the run goes on.
    private func watch(_ i: Int, _ process: Process) {
        process.terminationHandler = { [weak self] ended in
            guard let self else { return }
            let (stopping, attempt) = self.lock.withLock { () -> (Bool, Int) in
                guard !self.stopping, self.restarts[i] < Self.maximumRestarts else { return (true, 0) }
                self.restarts[i] += 1
                return (false, self.restarts[i])
            }
            guard !stopping else { return }
            let how = ended.terminationReason == .uncaughtSignal
                ? "was killed by signal \(ended.terminationStatus)" : "exited with status \(ended.terminationStatus)"
            let address = self.addresses[i]
            Console.shared.line("local worker \(i + 1) (pid \(ended.processIdentifier)) \(how); starting it again on \(address)")
            // Wait a little more after each restart, so a worker that cannot start does not spin.
            usleep(UInt32(min(attempt, 10)) * 200_000)
            guard !self.lock.withLock({ self.stopping }) else { return }
            do {
                guard let (process, _) = try self.start(i, listen: address) else {
                    Console.shared.line("local worker \(i + 1) did not start again on \(address); run \(self.executable) --listen \(address) by hand to see why")
                    return
                }
                let keep = self.lock.withLock { () -> Bool in
                    guard !self.stopping else { return false }
                    self.processes[i] = process
                    return true
                }
                guard keep else {
                    kill(process.processIdentifier, SIGKILL)
                    return
                }
                self.watch(i, process)
            } catch {
                Console.shared.line("local worker \(i + 1) could not be started again: \(error)")
            }
        }
    }

    /// The process of worker `i` (for tests and diagnostics).
    func processIdentifier(_ i: Int) -> Int32 { lock.withLock { processes[i].processIdentifier } }

    /// Stops every worker (SIGTERM, then SIGKILL after a second); none is started again.
    func stop() {
        let running = lock.withLock { () -> [Process] in
            stopping = true
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
