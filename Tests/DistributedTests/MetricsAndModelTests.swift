import Engine
import Foundation
import TestSupport
import Testing
import Training
import Wire

/// What `--metrics` and `--model-out` leave behind, checked against each other and against the
/// Engine's own evaluation of the saved model.
@Suite("Metrics file and model file", .oneProcessTestAtATime)
struct MetricsAndModelTests {
    @Test("--metrics has one line per step and a done line with the documented keys; --model-out scores its test_error")
    func metricsAndModelAgree() async throws {
        let directory = try temporaryDirectory("metrics")
        defer { try? FileManager.default.removeItem(at: directory) }
        let metricsPath = directory.appendingPathComponent("run.jsonl").path
        let modelPath = directory.appendingPathComponent("run.model").path
        let outcome = try await TinyRun.coordinator(
            ["--local", "2", "--seed", "3", "--max-steps", "3", "--metrics", metricsPath, "--model-out", modelPath])
        try #require(outcome.status == 0 && !outcome.timedOut, "\(outcome)")
        let metrics = try MetricsFile(path: metricsPath)

        // One line per step, in order, with every key, then the done line.
        #expect(metrics.steps.count == 3, "\(outcome)")
        for (i, keys) in metrics.keys.enumerated() {
            let expected = i < metrics.steps.count ? MetricsFile.stepKeys : MetricsFile.doneKeys
            #expect(keys.isSuperset(of: expected), "line \(i + 1) lacks \(expected.subtracting(keys).sorted())")
        }
        var secondsSum = 0.0
        for (i, line) in metrics.steps.enumerated() {
            #expect(line.step == i + 1, "\(line)")
            #expect(line.epoch == 1, "\(line)")
            #expect(line.loss > 0 && line.loss.isFinite, "\(line)")
            #expect((0...1).contains(line.train_error), "\(line)")
            #expect(line.seconds > 0, "\(line)")
            secondsSum += line.seconds
            // Every step sends parameters and tasks and receives gradients.
            #expect(line.bytes_sent > 0, "\(line)")
            #expect(line.bytes_received > 0, "\(line)")
            // Two workers: the second one's last answer comes within the step.
            #expect(line.answer_spread_ms >= 0 && line.answer_spread_ms <= 1000 * line.seconds, "\(line)")
            // The coordinator works in every step (decoding, adding, the optimizer), on at most
            // all the cores.
            let cores = Double(ProcessInfo.processInfo.activeProcessorCount)
            #expect(line.coordinator_cpu_ms > 0 && line.coordinator_cpu_ms <= 1000 * line.seconds * cores + 1, "\(line)")
        }
        print("[DistributedTests] bytes sent per step: \(metrics.steps.map(\.bytes_sent)), received: \(metrics.steps.map(\.bytes_received))")

        let done = metrics.done
        #expect(done.steps == 3, "\(done)")
        #expect(done.train_seconds > 0, "\(done)")
        #expect(abs(done.train_seconds - secondsSum) <= 1e-6 * max(1, secondsSum),
                "train_seconds \(done.train_seconds) is not the sum of the steps' seconds \(secondsSum)")
        let testError = done.test_error
        #expect((0...1).contains(testError), "\(done)")
        let digest = done.model_sha256
        #expect(digest.count == 64 && digest.allSatisfy(\.isHexDigit), "model_sha256 is not 64 hex digits: \(digest)")

        // The final line says the same.
        let finalLine = try #require(outcome.stdout.split(separator: "\n").last { $0.hasPrefix("test error ") },
                                     "no final `test error` line:\n\(outcome)")
        #expect(finalLine.contains(String(format: "test error %.2f%% after 3 steps", testError * 100)), "\(finalLine)")
        #expect(finalLine.hasSuffix("model sha256 \(digest)"), "\(finalLine)")

        // The model file: loads, hashes to model_sha256, and scores test_error.
        let model = try ModelFile.load(from: modelPath)
        let (_, test) = try MNIST.load(directory: Products.mnistDirectory)
        #expect(model.sizes == [test.featureCount, 20, test.classCount])
        let flat = model.flattened()
        let fileDigest = flat.withUnsafeBytes { DatasetDigest(hashing: $0) }.description
        #expect(fileDigest == digest, "SHA-256 of the saved parameters \(fileDigest) is not model_sha256 \(digest)")
        // Evaluated the way the coordinator has the workers do it (tasks of 2500 samples), and
        // over the whole set in one call: both must give the done line's error.
        var byTasks = Evaluation()
        for start in stride(from: 0, to: test.count, by: 2500) {
            byTasks.add(Evaluation.evaluate(model, on: test, indices: Array(start..<min(start + 2500, test.count))))
        }
        let whole = Evaluation.evaluate(model, on: test)
        print("[DistributedTests] done line test_error \(testError); model file: \(byTasks.errorRate) "
              + "(tasks of 2500), \(whole.errorRate) (whole set)")
        #expect(byTasks.errorRate == testError, "the model file scores \(byTasks.errorRate), the done line says \(testError)")
        #expect(whole.correct == byTasks.correct)
    }
}

extension MetricsAndModelTests {
    @Test("--compression none sends raw floats, zstd fewer bytes, auto (loopback) raw; shared memory (the default on loopback) no floats in the frames; all train the same model")
    func compressionPolicies() async throws {
        var results: [String: (sent: Int, received: Int, digest: String)] = [:]
        for policy in ["none", "zstd", "auto", "shared"] {
            let metrics = try temporaryDirectory("compression-\(policy)").appendingPathComponent("run.jsonl").path
            // The floats travel in the frames only with --shared-memory off.
            let transport = policy == "shared" ? ["--compression", "auto"] : ["--compression", policy, "--shared-memory", "off"]
            let outcome = try await TinyRun.coordinator(["--local", "2", "--max-steps", "2", "--metrics", metrics] + transport)
            try #require(outcome.status == 0, "\(outcome)")
            let file = try MetricsFile(path: metrics)
            // Both steps together: a worker that finishes early is sent the next step's tasks
            // ahead, so which step counts a task's bytes depends on timing; the run's total does not.
            results[policy] = (file.steps.map(\.bytes_sent).reduce(0, +), file.steps.map(\.bytes_received).reduce(0, +),
                               file.modelDigest)
        }
        print("[DistributedTests] bytes sent/received in 2 steps by policy: \(results.mapValues { ($0.sent, $0.received) })")
        // 784-20-10: 15,910 parameters, 63,640 bytes raw, to each of 2 workers, each step.
        let raw = 2 * 2 * 63_640
        let (none, zstd, auto, shared) = (results["none"]!, results["zstd"]!, results["auto"]!, results["shared"]!)
        #expect(none.sent >= raw, "raw parameters to two workers in two steps are at least \(raw) bytes")
        #expect(zstd.sent < none.sent, "zstd did not make the parameters smaller")
        #expect(zstd.received < none.received, "zstd did not make the gradients smaller")
        // Raw on loopback: the same bytes as `none` but for the odd heartbeat (a few dozen bytes),
        // far from what zstd saves.
        #expect(abs(auto.sent - none.sent) < (none.sent - zstd.sent) / 10, "auto compressed on loopback: \(auto.sent) bytes, none \(none.sent), zstd \(zstd.sent)")
        // Through shared memory, a parameters or gradient frame names a slot: a few bytes.
        if SharedMemoryHere.usable {
            #expect(shared.sent < raw / 10 && shared.received < raw / 10,
                    "with shared memory, \(shared.sent) bytes sent and \(shared.received) received in two steps")
        }
        #expect(Set(results.values.map(\.digest)).count == 1, "the encodings trained different models")
    }
}

extension MetricsAndModelTests {
    @Test("a worker started with --shared-memory off declines the region: the floats come in the frames, and the model is the same",
          .enabled(if: SharedMemoryHere.usable, "needs a writable /dev/shm for the accepting worker's run"))
    func workerDeclinesSharedMemory() async throws {
        let (_, workerPath) = try Products.require()
        var runs: [String: (received: Int, digest: String)] = [:]
        for setting in ["on", "off"] {
            // One thread: it holds a pair of shards at a time (one computed, one queued).
            let worker = try BackgroundWorker(executable: workerPath, arguments: ["--shared-memory", setting, "--threads", "1"])
            defer { worker.stop() }
            let metrics = try temporaryDirectory("worker-shared-\(setting)").appendingPathComponent("run.jsonl").path
            let outcome = try await TinyRun.coordinator(["--workers", worker.address, "--max-steps", "2", "--metrics", metrics])
            try #require(outcome.status == 0, "\(outcome)\n--- worker ---\n\(worker.stderr)")
            let file = try MetricsFile(path: metrics)
            runs[setting] = (file.steps.map(\.bytes_received).reduce(0, +), file.modelDigest)
        }
        print("[DistributedTests] gradient bytes received in 2 steps, worker --shared-memory on/off: \(runs.mapValues(\.received))")
        // 784-20-10: 15,910 parameters; four 150-point shards a step, which the one worker,
        // holding two at a time, sends as sums of two (`ShardCombiner`) when the second task
        // has arrived before the first is computed: two to four gradients a step.
        let rawGradient = 4 * 15_910
        #expect(runs["off"]!.received >= 2 * 2 * rawGradient, "the declining worker's gradients did not come in the frames")
        #expect(runs["off"]!.received < 2 * 4 * rawGradient, "a gradient for every shard: the worker added no pair of shards")
        let rawGradients = 2 * 2 * rawGradient
        #expect(runs["on"]!.received < rawGradients / 10, "the accepting worker's gradients came in the frames")
        #expect(runs["on"]!.digest == runs["off"]!.digest, "shared memory changed the model")
    }
}

extension MetricsAndModelTests {
    @Test("a worker that cannot see the coordinator's /dev/shm (its own mount namespace) declines and says why; training goes on in the frames",
          .enabled(if: SharedMemoryHere.usable && SharedMemoryHere.privateMountsAllowed,
                   "needs a writable /dev/shm, and root allowed to make a mount namespace (unshare --mount) to give a worker a /dev/shm of its own"))
    func workerWithoutTheRegion() async throws {
        let unshare = SharedMemoryHere.unshare, setUp = SharedMemoryHere.privateShm
        let (_, workerPath) = try Products.require()
        // A private mount namespace with an empty tmpfs on /dev/shm; the script then execs the worker.
        let launcher = [unshare, "--mount", "--propagation", "private", "/bin/sh", "-c",
                        setUp + " && exec \"$0\" \"$@\""]
        let worker = try BackgroundWorker(executable: workerPath, launcher: launcher)
        defer { worker.stop() }
        let outcome = try await TinyRun.coordinator(["--workers", worker.address, "--max-steps", "1"])
        #expect(outcome.status == 0 && outcome.stdout.contains("test error "), "\(outcome)\n--- worker ---\n\(worker.stderr)")
        #expect(outcome.output.contains("floats in the frames, not shared memory: the worker could not map the coordinator's region: cannot open /dev/shm/backprop-"),
                "the ready line does not say why: \(outcome.output)")
    }
}

/// Whether this machine has a `/dev/shm` a coordinator can make its regions in; where it has not,
/// the runs above train over the socket and the checks of shared memory's byte counts are
/// skipped (with a line saying so).
enum SharedMemoryHere {
    static let usable: Bool = {
        let ok = access("/dev/shm", W_OK) == 0
        if !ok { print("[DistributedTests] /dev/shm is not writable here: the shared-memory byte checks are skipped") }
        return ok
    }()

    static let unshare = "/usr/bin/unshare"
    /// The shell command that gives a new mount namespace an empty /dev/shm of its own.
    static let privateShm = "mount -t tmpfs tmpfs /dev/shm"

    /// Whether this process may make a private mount namespace with its own /dev/shm (root,
    /// and a container that allows mounting).
    static let privateMountsAllowed: Bool = {
        guard getuid() == 0, FileManager.default.isExecutableFile(atPath: unshare) else { return false }
        let probe = Process()
        probe.executableURL = URL(fileURLWithPath: unshare)
        probe.arguments = ["--mount", "--propagation", "private", "/bin/sh", "-c", privateShm]
        probe.standardOutput = FileHandle.nullDevice
        probe.standardError = FileHandle.nullDevice
        guard (try? probe.run()) != nil else { return false }
        probe.waitUntilExit()
        return probe.terminationStatus == 0
    }()
}
