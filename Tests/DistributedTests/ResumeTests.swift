import Foundation
import TestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// A coordinator killed with SIGKILL and started again with `--resume` ends with the model of
/// a run that was never interrupted.
@Suite("Coordinator crash and resume", .serialized, .oneProcessTestAtATime)
struct ResumeTests {
    /// Each run is killed up to 60 ms after the second checkpoint it writes (every 3 steps), so
    /// three rounds end by step 6 + 3 * (6 + 60 ms of steps): within 80 steps for anything down
    /// to 5 ms a step (a step takes 7-12 ms on the AVX-512 machine, more in debug builds).
    static let run = ["--max-steps", "80", "--worker-timeout", "3"]

    @Test("coordinator killed with SIGKILL at several points (one while its newest checkpoint is damaged), resumed: the undisturbed model_sha256")
    func killAndResume() async throws {
        let (coordinatorPath, _) = try Products.require()
        let directory = try temporaryDirectory("resume")
        let metrics = directory.appendingPathComponent("run.jsonl").path
        let checkpoints = directory.appendingPathComponent("ckpt").path
        let arguments = ["--data", Products.mnistDirectory] + TinyRun.options + Self.run
            + ["--local", "2", "--metrics", metrics, "--checkpoint-dir", checkpoints, "--checkpoint-every", "3", "--resume"]
        var generator = SystemRandomNumberGenerator()
        // Kill each run a random moment (mid-step, mid-write) after the second checkpoint it
        // writes, found from where it says it starts. (Fixed checkpoints do not work: on a fast
        // machine a run killed 200 ms after checkpoint 6 had already written checkpoint 15, so
        // the next run never did.) The signal's own thread watches for both lines: a test task
        // that waited for the first can lose seconds waiting for a turn, and the run ends.
        for round in 0..<3 {
            let coordinator = try LiveProcess(coordinatorPath, arguments)
            let delay = Int.random(in: 0...60, using: &generator)
            let killed = await coordinator.signal(SIGKILL, milliseconds: delay) { output in
                Self.killPoint(output).map { output.contains(String(format: "checkpoint-%09d", $0)) } ?? false
            }
            let after = Self.killPoint(coordinator.stdout) ?? -1
            try #require(killed != nil, "round \(round): no checkpoint of step \(after):\n\(coordinator.stdout)")
            _ = try await coordinator.finish(timeout: 10)
            let workers = Self.localWorkerPIDs(coordinator.stdout)
            print("[DistributedTests] round \(round): killed the coordinator \(delay) ms after checkpoint \(after)")
            try #require(!coordinator.stdout.contains("test error"),
                         "round \(round): the run ended before the kill \(delay) ms after checkpoint \(after), so nothing was interrupted; make the run longer")
            #expect(coordinator.stdout.contains(round == 0 ? "starting from the beginning" : "resuming from"))
            // Its local workers exit with it (--exit-with-parent).
            let deadline = Date().addingTimeInterval(5)
            while workers.contains(where: processExists) && Date() < deadline { try await Task.sleep(for: .milliseconds(50)) }
            #expect(!workers.contains(where: processExists), "local workers \(workers) outlived the killed coordinator")
        }
        // Damage the newest checkpoint: the resume must skip it and use the one before.
        let files = CheckpointFiles.list(checkpoints)
        let newest = try #require(files.last, "no checkpoint in \(checkpoints)")
        var bytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: newest)))
        bytes[bytes.count / 2] ^= 0x40
        try Data(bytes).write(to: URL(fileURLWithPath: newest))

        let resumed = try await runProcess(coordinatorPath, arguments)
        #expect(resumed.status == 0, "\(resumed)")
        #expect(resumed.stdout.contains("skipping checkpoint \(newest) is damaged (checksum mismatch)"), "\(resumed)")
        let expected = try await ReferenceRuns.shared.digest(Self.run)
        let file = try MetricsFile(path: metrics)
        print("[DistributedTests] resumed run: \(file.modelDigest), undisturbed: \(expected)")
        #expect(file.modelDigest == expected, "the killed and resumed run trained a different model")
        #expect(file.steps.map(\.step) == Array(1...80), "metrics steps: \(file.steps.map(\.step))")
        #expect(CheckpointFiles.list(checkpoints).count <= 3, "old checkpoints were not pruned")
    }

    @Test("--resume with a checkpoint of another run is refused, naming the difference")
    func refusesForeignCheckpoint() async throws {
        let directory = try temporaryDirectory("foreign")
        let checkpoints = directory.appendingPathComponent("ckpt").path
        let first = try await TinyRun.coordinator(["--local", "1", "--max-steps", "2", "--checkpoint-dir", checkpoints])
        try #require(first.status == 0, "\(first)")
        let other = try await TinyRun.coordinator(["--local", "1", "--max-steps", "2", "--seed", "9",
                                                   "--checkpoint-dir", checkpoints, "--resume"])
        #expect(other.status != 0, "\(other)")
        #expect(other.stderr.contains("belongs to a different run") && other.stderr.contains("seed: 9 here, 1 in the checkpoint"),
                "\(other)")
    }

    /// The step of the second checkpoint a run writes (every 3 steps), once it has said where it
    /// starts; nil before.
    static func killPoint(_ output: String) -> Int? {
        if output.contains("starting from the beginning") { return 6 }
        return resumedStep(output).map { $0 / 3 * 3 + 6 }
    }

    /// The steps done by the checkpoint a run resumed from ("resuming from FILE: N step(s) done").
    static func resumedStep(_ output: String) -> Int? {
        guard let done = output.range(of: " step(s) done"), let colon = output[..<done.lowerBound].lastIndex(of: ":") else {
            return nil
        }
        return Int(output[output.index(after: colon)..<done.lowerBound].trimmingCharacters(in: .whitespaces))
    }

    /// Pids of the local workers, from "worker 127.0.0.1:PORT ready: HOST:PID, ..." lines.
    static func localWorkerPIDs(_ output: String) -> [Int32] {
        output.split(separator: "\n").compactMap { line in
            guard let r = line.range(of: " ready: "), let comma = line[r.upperBound...].firstIndex(of: ","),
                  let colon = line[r.upperBound..<comma].lastIndex(of: ":") else { return nil }
            return Int32(line[line.index(after: colon)..<comma])
        }
    }
}
