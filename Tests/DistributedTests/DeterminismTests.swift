import Foundation
import TestSupport
import Testing

/// The trained model is the same bits whatever the number of workers: shards are fixed by the
/// batch and the shard size, and their sums are added along the shard tree, by the coordinator
/// or by a worker that holds both halves of a node.
@Suite("Determinism across worker counts", .oneProcessTestAtATime)
struct DeterminismTests {
    @Test("the same seed gives the same model_sha256 with 1, 2 and 3 local workers; another seed does not")
    func sameSeedSameModel() async throws {
        let directory = try temporaryDirectory("determinism")
        defer { try? FileManager.default.removeItem(at: directory) }

        // 600-point batches in four 150-point shards: 3 workers get uneven shares.
        func digest(workers: Int, seed: Int) async throws -> String {
            let metrics = directory.appendingPathComponent("w\(workers)-s\(seed).jsonl").path
            let outcome = try await TinyRun.coordinator(
                ["--local", String(workers), "--seed", String(seed), "--metrics", metrics])
            try #require(outcome.status == 0 && !outcome.timedOut, "\(outcome)")
            let file = try MetricsFile(path: metrics)
            #expect(file.steps.count == 3, "\(outcome)")
            let digest = file.modelDigest
            print("[DistributedTests] --local \(workers) --seed \(seed): model sha256 \(digest)")
            #expect(outcome.stdout.contains("model sha256 \(digest)"), "the final line and the metrics disagree:\n\(outcome)")
            return digest
        }

        let one = try await digest(workers: 1, seed: 7)
        let two = try await digest(workers: 2, seed: 7)
        let three = try await digest(workers: 3, seed: 7)
        let other = try await digest(workers: 2, seed: 8)
        #expect(one == two, "--local 1 and --local 2 trained different models with the same seed")
        #expect(one == three, "--local 1 and --local 3 trained different models with the same seed")
        #expect(other != one, "seeds 7 and 8 trained the same model: the seed is not used")
    }
}
