import Foundation
import Testing

/// The executables fail fast, with a non-zero status and a message that says what is wrong.
@Suite("Command-line errors", .oneProcessTestAtATime)
struct CommandErrorTests {
    @Test("coordinator --workers 127.0.0.1:1 (nothing listening) fails within seconds and names the address")
    func unreachableWorker() async throws {
        let outcome = try await TinyRun.coordinator(["--workers", "127.0.0.1:1", "--worker-timeout", "2"], timeout: 60)
        #expect(!outcome.timedOut, "\(outcome)")
        #expect(outcome.status != 0, "\(outcome)")
        #expect(outcome.output.contains("127.0.0.1:1"), "the message does not name the address:\n\(outcome)")
        #expect(outcome.output.contains("connection refused"), "the message does not say what failed:\n\(outcome)")
        // Loading MNIST in a debug build is most of this; connecting must not wait for long.
        #expect(outcome.seconds < 20, "took \(outcome.seconds)s to give up on a refused connection")
    }

    @Test("coordinator --dry-run reports each worker (kernel, threads) and trains nothing; an unreachable one fails it")
    func dryRun() async throws {
        let (_, workerPath) = try Products.require()
        let worker = try BackgroundWorker(executable: workerPath)
        defer { worker.stop() }
        let good = try await TinyRun.coordinator(["--workers", "127.0.0.1:\(worker.port)", "--dry-run"], timeout: 60)
        #expect(good.status == 0, "\(good)")
        #expect(good.stdout.contains("ok      127.0.0.1:\(worker.port)") && good.stdout.contains("OpenBLAS "), "\(good)")
        #expect(good.stdout.contains("nothing was trained") && !good.stdout.contains("(Batch"), "\(good)")
        let bad = try await TinyRun.coordinator(["--workers", "127.0.0.1:\(worker.port),127.0.0.1:1", "--dry-run"], timeout: 60)
        #expect(bad.status != 0, "\(bad)")
        #expect(bad.stdout.contains("FAILED  127.0.0.1:1") && bad.stdout.contains("connection refused"), "\(bad)")
        #expect(bad.stdout.contains("1 of 2 worker(s) cannot be used"), "\(bad)")
    }

    @Test("coordinator without --workers or --local fails with a usage message")
    func noWorkersGiven() async throws {
        let (coordinator, _) = try Products.require()
        let outcome = try await runProcess(coordinator, [], timeout: 30)
        #expect(!outcome.timedOut, "\(outcome)")
        #expect(outcome.status != 0, "\(outcome)")
        #expect(outcome.output.contains("--workers") && outcome.output.contains("--local"), "\(outcome)")
        #expect(outcome.output.localizedCaseInsensitiveContains("usage"), "no usage message:\n\(outcome)")
    }

    @Test("coordinator --data /nonexistent fails naming the directory")
    func missingDataDirectory() async throws {
        let outcome = try await TinyRun.coordinator(["--local", "1", "--data", "/nonexistent"], timeout: 30)
        #expect(!outcome.timedOut, "\(outcome)")
        #expect(outcome.status != 0, "\(outcome)")
        #expect(outcome.output.contains("/nonexistent"), "the message does not name the directory:\n\(outcome)")
    }

    @Test("worker --listen nonsense fails with a message")
    func badListenAddress() async throws {
        let (_, worker) = try Products.require()
        let outcome = try await runProcess(worker, ["--listen", "nonsense"], timeout: 30)
        #expect(!outcome.timedOut, "\(outcome)")
        #expect(outcome.status != 0, "\(outcome)")
        #expect(outcome.output.contains("--listen") && outcome.output.contains("nonsense"), "\(outcome)")
    }
}
