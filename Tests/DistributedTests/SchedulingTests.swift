import Foundation
import Testing

/// How the coordinator hands a step's shards to its workers.
@Suite("Task scheduling", .oneProcessTestAtATime)
struct SchedulingTests {
    /// With as many shards as workers, each worker computes one shard of every step. Before the
    /// coordinator filled every worker's computing slots first, the first worker took both
    /// shards (its slot and its queue) and the second one idled: `--shard-size 2500` with two
    /// workers trained no faster than one.
    @Test("two shards a step and two workers: each worker computes one shard of every step")
    func oneShardEach() async throws {
        let (_, workerPath) = try Products.require()
        let workers = try (0..<2).map { _ in try BackgroundWorker(executable: workerPath) }
        defer { for worker in workers { worker.stop() } }
        let outcome = try await TinyRun.coordinator([
            "--workers", workers.map(\.address).joined(separator: ","),
            "--batch-size", "600", "--shard-size", "300", "--max-steps", "3",
        ])
        #expect(outcome.status == 0, "\(outcome)")
        /// The tasks a worker reports for its session ("...: N gradient task(s), ...").
        func tasks(_ worker: BackgroundWorker) -> Int? {
            guard let line = worker.stderr.split(separator: "\n").last(where: { $0.contains("gradient task(s)") }),
                  let range = line.range(of: ": ", options: .backwards, range: line.startIndex..<line.range(of: " gradient task(s)")!.lowerBound)
            else { return nil }
            return Int(line[range.upperBound...].prefix { $0.isNumber })
        }
        // The workers' logs are read by background drains: give them a moment.
        let deadline = Date().addingTimeInterval(5)
        while workers.contains(where: { tasks($0) == nil }), Date() < deadline { try await Task.sleep(for: .milliseconds(50)) }
        let counts = workers.map(tasks)
        #expect(counts == [3, 3], "tasks per worker: \(counts)\n--- worker 1 ---\n\(workers[0].stderr)\n--- worker 2 ---\n\(workers[1].stderr)")
    }
}
