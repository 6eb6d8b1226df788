import Foundation
import TestSupport
import Testing

/// Training across real network interfaces: workers and coordinator in separate network
/// namespaces joined by veth pairs to a bridge (`NamespaceLab`), so every byte crosses a
/// network device instead of loopback. Runs as root (CI is); elsewhere each test prints why it
/// cannot run and is recorded as skipped.
@Suite("Multi-host training over network namespaces", .serialized, .oneProcessTestAtATime)
struct NetworkNamespaceTests {
    /// Coordinator in host 0, workers in hosts 1 and 2, on the default port.
    static let port = 7070

    @Test("two workers in two namespaces, coordinator in a third: same model_sha256 as a loopback --local 2 run")
    func acrossNamespaces() async throws {
        let lab = try NamespaceLab.makeOrSkip(hosts: 3)
        defer { lab.destroy() }
        let (coordinator, worker) = try Products.require()
        let workers = try (1...2).map { try lab.startWorker(host: $0, port: Self.port, executable: worker) }
        defer { workers.forEach { $0.stop() } }
        let directory = try temporaryDirectory("netns")
        defer { try? FileManager.default.removeItem(at: directory) }
        let metrics = directory.appendingPathComponent("run.jsonl").path
        let received = try (1...2).map { try lab.receivedBytes(host: $0) }

        let options = ["--seed", "11", "--max-steps", "4"]
        let addresses = workers.map(\.address).joined(separator: ",")
        let (launcher, arguments) = lab.exec(host: 0, [coordinator, "--data", Products.mnistDirectory] + TinyRun.options
                                                 + options + ["--workers", addresses, "--metrics", metrics])
        let outcome = try await runProcess(launcher, arguments, timeout: 60)
        try #require(outcome.status == 0 && !outcome.timedOut, "\(outcome)\nworker stderr:\n\(workers.map(\.stderr))")
        for w in workers {
            #expect(outcome.stdout.contains("worker \(w.address) ready"), "\(outcome)")
        }
        let file = try MetricsFile(path: metrics)
        #expect(file.steps.count == 4)
        #expect(file.steps.allSatisfy { $0.bytes_sent > 0 && $0.bytes_received > 0 })

        // The bytes really crossed the workers' interfaces: each got the data sets (about 12 MB here).
        for (i, host) in (1...2).enumerated() {
            let delta = try lab.receivedBytes(host: host) - received[i]
            print("[DistributedTests] host \(host) eth0 received \(delta) bytes")
            #expect(delta > 5_000_000, "worker host \(host)'s eth0 received only \(delta) bytes")
        }

        let reference = try await ReferenceRuns.shared.digest(options)
        print("[DistributedTests] namespaces: \(file.modelDigest); loopback --local 2: \(reference)")
        #expect(file.modelDigest == reference, "the run across namespaces trained another model than loopback")
    }

    @Test("unplugging one worker's link mid-run: its tasks go to the other worker, the run finishes with the same model")
    func linkDownMidRun() async throws {
        let lab = try NamespaceLab.makeOrSkip(hosts: 3)
        defer { lab.destroy() }
        let (coordinator, worker) = try Products.require()
        let workers = try (1...2).map { try lab.startWorker(host: $0, port: Self.port, executable: worker) }
        defer { workers.forEach { $0.stop() } }
        let directory = try temporaryDirectory("netns-down")
        defer { try? FileManager.default.removeItem(at: directory) }
        let metrics = directory.appendingPathComponent("run.jsonl").path

        let steps = 10
        let options = ["--seed", "12", "--max-steps", String(steps)]
        let addresses = workers.map(\.address).joined(separator: ",")
        let (launcher, arguments) = lab.exec(host: 0, [coordinator, "--data", Products.mnistDirectory] + TinyRun.options
                                                 + options + ["--workers", addresses, "--metrics", metrics,
                                                              "--worker-timeout", "3"])
        async let run = runProcess(launcher, arguments, timeout: 60)

        // Unplug host 2 once the first step is in the metrics file.
        let deadline = Date().addingTimeInterval(45)
        var stepsBefore = 0
        while Date() < deadline {
            let text = (try? String(contentsOfFile: metrics, encoding: .utf8)) ?? ""
            stepsBefore = text.split(separator: "\n").count
            if stepsBefore >= 1 { break }
            try await Task.sleep(for: .milliseconds(10))
        }
        try lab.setLink(host: 2, up: false)
        print("[DistributedTests] unplugged host 2 (\(workers[1].address)) after \(stepsBefore) step(s)")

        let outcome = try await run
        try #require(outcome.status == 0 && !outcome.timedOut, "\(outcome)")
        #expect(stepsBefore >= 1 && stepsBefore < steps, "the link went down after \(stepsBefore) of \(steps) steps, not mid-run")
        #expect(outcome.stdout.contains("worker \(workers[1].address) lost"), "the coordinator never gave up the unplugged worker:\n\(outcome)")
        let file = try MetricsFile(path: metrics)
        #expect(file.done.steps == steps)

        let reference = try await ReferenceRuns.shared.digest(options)
        print("[DistributedTests] link cut: \(file.modelDigest); loopback --local 2: \(reference)")
        #expect(file.modelDigest == reference, "losing a worker mid-run changed the model")
    }
}
