import Foundation
import Testing

/// Tiny runs of the real `coordinator`: a debug build does the arithmetic slowly, so every run
/// here is a few small steps (784-20-10 network, 600-point batches cut into 150-point shards).
enum TinyRun {
    /// Options every run gets, unless a test overrides one (later options win).
    static let options = [
        "--hidden", "20", "--batch-size", "600", "--shard-size", "150", "--max-steps", "3",
        "--eval-every", "0", "--threads-per-worker", "1",
    ]

    /// Runs the coordinator with the tiny options, the repository's MNIST and `arguments`.
    static func coordinator(_ arguments: [String], timeout: Double = 120,
                            environment: [String: String] = [:]) async throws -> ProcessOutcome {
        let (coordinator, _) = try Products.require()
        return try await runProcess(coordinator, ["--data", Products.mnistDirectory] + options + arguments,
                                    timeout: timeout, environment: environment)
    }
}

/// The lines of a `--metrics` file.
///
/// Values are read with `JSONDecoder`, not `JSONSerialization`: on Linux the latter turns
/// numbers into `NSDecimalNumber`s whose `doubleValue` can be off in the last bit
/// (2.4238296000162762 reads back as 2.423829600016276), and some checks here are exact.
struct MetricsFile {
    /// One per-step line.
    struct Step: Decodable {
        var step: Int
        var epoch: Int
        var loss: Double
        var train_error: Double
        var seconds: Double
        var bytes_sent: Int
        var bytes_received: Int
        var answer_spread_ms: Double
        var coordinator_cpu_ms: Double
    }

    /// The last line.
    struct Done: Decodable {
        var event: String
        var test_error: Double
        var model_sha256: String
        var steps: Int
        var train_seconds: Double
    }

    /// Each line's keys, in the order of the file (the done line last).
    var keys: [Set<String>]
    var steps: [Step]
    var done: Done

    static let stepKeys: Set = ["step", "epoch", "loss", "train_error", "seconds", "bytes_sent", "bytes_received",
                                "answer_spread_ms", "coordinator_cpu_ms"]
    static let doneKeys: Set = ["event", "test_error", "model_sha256", "steps", "train_seconds"]

    /// Parses the file: every line must be a JSON object, the last one the `done` line.
    init(path: String) throws {
        let text = try String(contentsOfFile: path, encoding: .utf8)
        var lines = text.split(separator: "\n", omittingEmptySubsequences: true).map(String.init)
        keys = try lines.enumerated().map { i, line in
            let object = try JSONSerialization.jsonObject(with: Data(line.utf8))
            let dictionary = try #require(object as? [String: Any], "metrics line \(i + 1) is not a JSON object: \(line)")
            return Set(dictionary.keys)
        }
        let lastLine = lines.popLast()
        let last = try #require(lastLine, "the metrics file \(path) is empty")
        let decoder = JSONDecoder()
        done = try decoder.decode(Done.self, from: Data(last.utf8))
        try #require(done.event == "done", "the last metrics line is not the done line: \(last)")
        steps = try lines.map { try decoder.decode(Step.self, from: Data($0.utf8)) }
    }

    /// The `model_sha256` of the done line.
    var modelDigest: String { done.model_sha256 }
}
