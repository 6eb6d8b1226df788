import Foundation
import Testing

/// A worker warms up (a few throwaway shard gradients on each thread that may compute shards)
/// before it reports its training set ready: on the shard size the coordinator announces, once
/// per process and model shape.
@Suite("Worker warm-up", .oneProcessTestAtATime)
struct WarmUpTests {
    @Test("a worker warms up on the announced shard size, once per shape: not again for a repeated session, again for another shard size")
    func oncePerShape() async throws {
        let (_, workerPath) = try Products.require()
        let worker = try BackgroundWorker(executable: workerPath)
        defer { worker.stop() }
        for shardSize in ["150", "150", "100"] {
            let outcome = try await TinyRun.coordinator(["--workers", "127.0.0.1:\(worker.port)", "--shard-size", shardSize])
            #expect(outcome.status == 0, "\(outcome)\n--- worker ---\n\(worker.stderr)")
        }
        func warmUps() -> [Substring] { worker.stderr.split(separator: "\n").filter { $0.contains("warmed up:") } }
        // The worker's log is read by a background drain: give it a moment.
        let deadline = Date().addingTimeInterval(5)
        while warmUps().count < 2, Date() < deadline { try await Task.sleep(for: .milliseconds(50)) }
        let lines = warmUps()
        #expect(lines.count == 2, "expected two warm-ups (shards of 150, then of 100):\n\(worker.stderr)")
        // Shards run on Swift's cooperative pool, one thread per core: every one warms up.
        let threads = max(1, ProcessInfo.processInfo.activeProcessorCount)
        #expect(lines.first?.contains("3 shard gradients of 150 samples on each of \(threads) thread(s)") == true, "\(lines)")
        #expect(lines.last?.contains("3 shard gradients of 100 samples on each of \(threads) thread(s)") == true, "\(lines)")
    }
}
