import Foundation
import TestSupport
import Testing

/// `worker --computation-log FILE`: each session's gradient computations, on the host's
/// monotonic clock, for benchmarks that find when no worker of a host was computing
/// (`bench/outside.sh`).
@Suite("Worker computation log", .oneProcessTestAtATime)
struct ComputationLogTests {
    /// One line of the log.
    struct Interval {
        var kind: Substring
        var start: Int64
        var end: Int64
    }

    @Test("two workers log every training shard once, as ordered intervals of the run; a worker's shards do not overlap")
    func twoWorkers() async throws {
        let directory = try temporaryDirectory("computation-log")
        let (_, workerPath) = try Products.require()
        let paths = (1...2).map { directory.appendingPathComponent("worker\($0).log").path }
        let workers = try paths.map { try BackgroundWorker(executable: workerPath, arguments: ["--computation-log", $0]) }
        defer { workers.forEach { $0.stop() } }
        let before = Self.monotonicNanoseconds()
        let outcome = try await TinyRun.coordinator(["--workers", workers.map { "127.0.0.1:\($0.port)" }.joined(separator: ",")])
        #expect(outcome.status == 0, "\(outcome)")
        // A worker writes its log when the session ends, just after the coordinator has gone.
        var logs: [[Interval]] = []
        let deadline = Date().addingTimeInterval(10)
        repeat {
            try await Task.sleep(for: .milliseconds(50))
            logs = paths.map(Self.read)
        } while logs.contains(where: \.isEmpty) && Date() < deadline
        let after = Self.monotonicNanoseconds()
        for (path, log) in zip(paths, logs) {
            let text = (try? String(contentsOfFile: path, encoding: .utf8)) ?? "(missing)"
            #expect(text.hasPrefix("# session from "), "\(path):\n\(text)")
            #expect(log.allSatisfy { ["gradient", "gather"].contains($0.kind) && before <= $0.start && $0.start <= $0.end && $0.end <= after },
                    "\(path):\n\(text)")
            // One BLAS thread, one shard at a time: a worker's gradient computations are disjoint.
            let gradients = log.filter { $0.kind == "gradient" }.sorted { $0.start < $1.start }
            #expect(zip(gradients, gradients.dropFirst()).allSatisfy { $0.end <= $1.start }, "\(path):\n\(text)")
        }
        // TinyRun: 3 steps of 600 points in shards of 150, each shard computed once (nothing failed).
        let shards = logs.joined().filter { $0.kind == "gradient" }.count
        #expect(shards == 12, "\(shards) gradient computations logged, expected 3 steps x 4 shards")
    }

    @Test("worker --computation-log in a directory that does not exist fails at once, naming the file")
    func unwritableLog() async throws {
        let (_, worker) = try Products.require()
        let outcome = try await runProcess(worker, ["--listen", "127.0.0.1:0", "--computation-log", "/nonexistent/dir/log"], timeout: 30)
        #expect(!outcome.timedOut, "\(outcome)")
        #expect(outcome.status != 0, "\(outcome)")
        #expect(outcome.output.contains("--computation-log /nonexistent/dir/log") && outcome.output.contains("No such file"), "\(outcome)")
    }

    static func read(_ path: String) -> [Interval] {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { return [] }
        return text.split(separator: "\n").compactMap { line in
            let fields = line.split(separator: " ")
            guard !line.hasPrefix("#"), fields.count == 3, let start = Int64(fields[1]), let end = Int64(fields[2]) else { return nil }
            return Interval(kind: fields[0], start: start, end: end)
        }
    }

    static func monotonicNanoseconds() -> Int64 {
        var now = timespec()
        clock_gettime(CLOCK_MONOTONIC, &now)
        return Int64(now.tv_sec) * 1_000_000_000 + Int64(now.tv_nsec)
    }
}
