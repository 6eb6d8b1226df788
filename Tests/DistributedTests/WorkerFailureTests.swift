import Foundation
import NIOCore
import NIOPosix
import TestSupport
import Testing
import Wire

#if canImport(Glibc)
import Glibc
#endif

/// Workers that die, hang, come back or lie while a real coordinator trains with them: the
/// run finishes with the undisturbed run's model, and the coordinator says what happened and
/// how long it took to notice.
@Suite("Worker failures", .serialized, .oneProcessTestAtATime)
struct WorkerFailureTests {
    /// Long enough that a worker can be disturbed and noticed before the end.
    static let run = ["--max-steps", "40", "--worker-timeout", "3"]
    /// Steps for the runs in which a worker must also come back and be used before the end: a
    /// returning worker is dialled with backoff, and one that is a new process is sent the data
    /// and warms up first, which takes about a second, while a step of these runs takes 7-12 ms
    /// on the AVX-512 machine (40 steps were over before it was back).
    static let longRun = ["--max-steps", "400"]

    static func coordinator(_ arguments: [String]) throws -> LiveProcess {
        let (coordinator, _) = try Products.require()
        return try LiveProcess(coordinator, ["--data", Products.mnistDirectory] + TinyRun.options + run + arguments)
    }

    /// Waits for `text` after an action at `since`; returns the seconds it took.
    static func secondsUntil(_ text: String, in process: LiveProcess, since: Date, timeout: Double) async throws -> Double? {
        guard try await process.waitForOutput(text, timeout: timeout) else { return nil }
        return Date().timeIntervalSince(since)
    }

    static func expectSameModel(_ outcome: ProcessOutcome, metrics: String, run: [String] = run,
                                sourceLocation: SourceLocation = #_sourceLocation) async throws {
        #expect(outcome.status == 0 && !outcome.timedOut, "\(outcome)", sourceLocation: sourceLocation)
        let expected = try await ReferenceRuns.shared.digest(run)
        let digest = try MetricsFile(path: metrics).modelDigest
        print("[DistributedTests] disturbed run: \(digest), undisturbed: \(expected)")
        #expect(digest == expected, "the disturbed run trained a different model", sourceLocation: sourceLocation)
    }

    @Test("a worker killed with SIGKILL mid-step: its shards go to the other, the model is the undisturbed one")
    func killedWorker() async throws {
        let (_, workerPath) = try Products.require()
        let a = try BackgroundWorker(executable: workerPath), b = try BackgroundWorker(executable: workerPath)
        defer { a.stop(); b.stop() }
        let metrics = try temporaryDirectory("sigkill").appendingPathComponent("run.jsonl").path
        let run = try Self.coordinator(["--workers", "127.0.0.1:\(a.port),127.0.0.1:\(b.port)", "--metrics", metrics])
        let killed = try #require(await run.signal(SIGKILL, to: a.process.processIdentifier, afterOutput: "(Batch 3)"),
                                  "the run did not get to batch 3:\n\(run.stdout)")
        let noticed = try await Self.secondsUntil("worker 127.0.0.1:\(a.port) lost", in: run, since: killed, timeout: 10)
        print("[DistributedTests] SIGKILL noticed after \(noticed.map { String(format: "%.2f s", $0) } ?? "never")")
        #expect((noticed ?? .infinity) < 2, "a killed worker's closed connection was not noticed within 2 s")
        let outcome = try await run.finish()
        #expect(outcome.stdout.contains("lost (its connection ended"), "\(outcome)")
        try await Self.expectSameModel(outcome, metrics: metrics)
    }

    @Test("a worker stopped with SIGSTOP is given up after --worker-timeout, and used again after SIGCONT")
    func stoppedWorker() async throws {
        let (_, workerPath) = try Products.require()
        let a = try BackgroundWorker(executable: workerPath), b = try BackgroundWorker(executable: workerPath)
        defer { kill(a.process.processIdentifier, SIGCONT); a.stop(); b.stop() }
        let metrics = try temporaryDirectory("sigstop").appendingPathComponent("run.jsonl").path
        let run = try Self.coordinator(Self.longRun + ["--workers", "127.0.0.1:\(a.port),127.0.0.1:\(b.port)", "--metrics", metrics])
        let stopped = try #require(await run.signal(SIGSTOP, to: a.process.processIdentifier, afterOutput: "(Batch 3)"),
                                   "the run did not get to batch 3:\n\(run.stdout)")
        let noticed = try await Self.secondsUntil("worker 127.0.0.1:\(a.port) lost (no answer to heartbeats", in: run,
                                                  since: stopped, timeout: 20)
        print("[DistributedTests] SIGSTOP noticed after \(noticed.map { String(format: "%.2f s", $0) } ?? "never") (--worker-timeout 3)")
        #expect(noticed != nil && noticed! >= 2.5 && noticed! < 7, "a stopped worker was not given up 3 s after it fell silent")
        kill(a.process.processIdentifier, SIGCONT)
        let back = try await Self.secondsUntil("worker 127.0.0.1:\(a.port) is back", in: run, since: Date(), timeout: 30)
        print("[DistributedTests] back \(back.map { String(format: "%.2f s", $0) } ?? "never") after SIGCONT")
        #expect(back != nil, "the worker was not used again after SIGCONT:\n\(run.stdout)")
        let outcome = try await run.finish()
        try await Self.expectSameModel(outcome, metrics: metrics, run: Self.run + Self.longRun)
    }

    @Test("a worker killed and started again on its port is dialled again and used")
    func restartedWorker() async throws {
        let (_, workerPath) = try Products.require()
        let a = try BackgroundWorker(executable: workerPath), b = try BackgroundWorker(executable: workerPath)
        defer { a.stop(); b.stop() }
        let metrics = try temporaryDirectory("restart").appendingPathComponent("run.jsonl").path
        let run = try Self.coordinator(Self.longRun + ["--workers", "127.0.0.1:\(a.port),127.0.0.1:\(b.port)", "--metrics", metrics])
        try #require(await run.signal(SIGKILL, to: a.process.processIdentifier, afterOutput: "(Batch 3)") != nil,
                     "the run did not get to batch 3:\n\(run.stdout)")
        a.process.waitUntilExit()
        let again = try BackgroundWorker(executable: workerPath, port: a.port)
        defer { again.stop() }
        let back = try await Self.secondsUntil("worker 127.0.0.1:\(a.port) is back", in: run, since: Date(), timeout: 30)
        print("[DistributedTests] restarted worker used again \(back.map { String(format: "%.2f s", $0) } ?? "never") after it started")
        #expect(back != nil, "the restarted worker was not used again:\n\(run.stdout)")
        let outcome = try await run.finish()
        try await Self.expectSameModel(outcome, metrics: metrics, run: Self.run + Self.longRun)
    }

    @Test("coordinator --local: a local worker killed with SIGKILL is started again and used again")
    func localWorkerRestarted() async throws {
        let metrics = try temporaryDirectory("local-restart").appendingPathComponent("run.jsonl").path
        // A restarted local process has the data sent again and warms up before it is used.
        let steps = Self.longRun
        let run = try Self.coordinator(steps + ["--local", "2", "--metrics", metrics])
        try #require(try await run.waitForOutput("(Batch 1)"), "the run did not get to batch 1:\n\(run.stdout)")
        let pids = ResumeTests.localWorkerPIDs(run.stdout)
        let pid = try #require(pids.first, "no worker pid in the output:\n\(run.stdout)")
        let killed = try #require(await run.signal(SIGKILL, to: pid, afterOutput: "(Batch 3)"),
                                  "the run did not get to batch 3:\n\(run.stdout)")
        let restarted = try await Self.secondsUntil("(pid \(pid)) was killed by signal 9; starting it again", in: run,
                                                    since: killed, timeout: 10)
        #expect(restarted != nil, "the coordinator did not start the killed local worker again:\n\(run.stdout)")
        let back = try await Self.secondsUntil(" is back after", in: run, since: Date(), timeout: 30)
        print("[DistributedTests] local worker restarted after \(restarted.map { String(format: "%.2f s", $0) } ?? "never"), used again after \(back.map { String(format: "%.2f s", $0) } ?? "never")")
        #expect(back != nil, "the restarted local worker was not used again:\n\(run.stdout)")
        let outcome = try await run.finish()
        try await Self.expectSameModel(outcome, metrics: metrics, run: Self.run + steps)
    }

    @Test("with every worker gone the coordinator waits --worker-timeout, saves a checkpoint, says how to resume; resuming gives the undisturbed model")
    func noWorkerLeft() async throws {
        let (coordinatorPath, workerPath) = try Products.require()
        let a = try BackgroundWorker(executable: workerPath)
        defer { a.stop() }
        let directory = try temporaryDirectory("no-worker-left")
        let metrics = directory.appendingPathComponent("run.jsonl").path
        let checkpoints = directory.appendingPathComponent("ckpt").path
        let run = try Self.coordinator(["--workers", "127.0.0.1:\(a.port)", "--metrics", metrics, "--checkpoint-dir", checkpoints])
        let killed = try #require(await run.signal(SIGKILL, to: a.process.processIdentifier, afterOutput: "(Batch 3)"),
                                  "the run did not get to batch 3:\n\(run.stdout)")
        let outcome = try await run.finish(timeout: 30)
        let seconds = Date().timeIntervalSince(killed)
        print("[DistributedTests] the coordinator stopped \(String(format: "%.2f", seconds)) s after its only worker died")
        #expect(outcome.status != 0, "\(outcome)")
        #expect(seconds >= 3 && seconds < 12, "it did not wait about --worker-timeout (3 s) for a worker")
        #expect(outcome.stdout.contains("no worker left; waiting up to 3.0 s"), "\(outcome)")
        #expect(outcome.stderr.contains("every worker was lost"), "\(outcome)")
        #expect(outcome.stderr.contains("--resume"), "the message does not say how to resume: \(outcome.stderr)")
        #expect(!CheckpointFiles.list(checkpoints).isEmpty, "no checkpoint was saved in \(checkpoints)")

        let b = try BackgroundWorker(executable: workerPath)
        defer { b.stop() }
        let resumed = try await runProcess(
            coordinatorPath, ["--data", Products.mnistDirectory] + TinyRun.options + Self.run
                + ["--workers", "127.0.0.1:\(b.port)", "--metrics", metrics, "--checkpoint-dir", checkpoints, "--resume"])
        #expect(resumed.stdout.contains("resuming from"), "\(resumed)")
        try await Self.expectSameModel(resumed, metrics: metrics)
        let steps = try MetricsFile(path: metrics).steps.map(\.step)
        #expect(steps == Array(1...40), "the metrics of the interrupted and resumed run are not steps 1...40 once each: \(steps)")
    }

    /// A run with `liar` and an honest worker; the liar must have been given tasks.
    static func runBesideHonestWorker(lie: LyingWorker.Lie, _ name: String,
                                      sourceLocation: SourceLocation = #_sourceLocation) async throws
        -> (outcome: ProcessOutcome, metrics: String, seconds: Double, liar: LyingWorker)
    {
        let (_, workerPath) = try Products.require()
        let honest = try BackgroundWorker(executable: workerPath)
        defer { honest.stop() }
        let liar = try await LyingWorker.start(lie: lie)
        defer { liar.stop() }
        let metrics = try temporaryDirectory(name).appendingPathComponent("run.jsonl").path
        let started = Date()
        let run = try coordinator(["--workers", "127.0.0.1:\(liar.port),127.0.0.1:\(honest.port)", "--metrics", metrics])
        let outcome = try await run.finish()
        #expect(liar.gradientsSent > 0, "the lying worker was given no task, so nothing was tested", sourceLocation: sourceLocation)
        return (outcome, metrics, Date().timeIntervalSince(started), liar)
    }

    @Test("a worker that sends non-finite gradients: each is rejected with a logged error and computed by another worker")
    func nonFiniteGradients() async throws {
        let (outcome, metrics, _, liar) = try await Self.runBesideHonestWorker(lie: .nonFinite, "nan")
        print("[DistributedTests] the lying worker sent \(liar.gradientsSent) NaN gradient(s)")
        #expect(outcome.stdout.contains("sent a non-finite gradient (NaN or infinity)"), "\(outcome)")
        try await Self.expectSameModel(outcome, metrics: metrics)
    }

    @Test("a worker that answers for tasks it does not hold (a sum over three shards) is given up; the others compute them, the model is the undisturbed one")
    func overclaimingWorker() async throws {
        let (outcome, metrics, _, _) = try await Self.runBesideHonestWorker(lie: .tasksNotHeld, "overclaim")
        #expect(outcome.stdout.contains("not all of which it held"), "\(outcome)")
        try await Self.expectSameModel(outcome, metrics: metrics)
    }

    @Test("a worker that answers heartbeats but none of its tasks is given up after --worker-timeout; the others compute its tasks, the model is the undisturbed one")
    func stuckWorker() async throws {
        let (outcome, metrics, seconds, _) = try await Self.runBesideHonestWorker(lie: .stuck, "stuck")
        #expect(outcome.stdout.contains("answered for 3.0 s, though it answers heartbeats"), "\(outcome)")
        print("[DistributedTests] run with a stuck worker: \(String(format: "%.1f", seconds)) s")
        // Given up once, and dialled again only after the longest backoff (5 s): the run does
        // not wait 3 s again and again.
        #expect(seconds < 30, "the run took \(seconds) s")
        try await Self.expectSameModel(outcome, metrics: metrics)
    }

    @Test("when every worker refuses a task's result (a diverged model), the run stops with that diagnosis and applies no step")
    func divergedModel() async throws {
        let liar = try await LyingWorker.start()
        defer { liar.stop() }
        let directory = try temporaryDirectory("diverged")
        let metrics = directory.appendingPathComponent("run.jsonl").path
        let model = directory.appendingPathComponent("model.bin").path
        let run = try Self.coordinator(["--workers", "127.0.0.1:\(liar.port)", "--metrics", metrics, "--model-out", model])
        let outcome = try await run.finish()
        #expect(liar.gradientsSent > 0, "the lying worker was given no task, so nothing was tested")
        #expect(outcome.status != 0 && !outcome.timedOut, "\(outcome)")
        #expect(outcome.stderr.contains("the model has probably diverged"), "\(outcome)")
        #expect(outcome.stderr.contains("--learning-rate"), "the message does not say what to try: \(outcome.stderr)")
        // No step was taken with the NaN gradient: the metrics hold no step, and no model was written.
        let lines = ((try? String(contentsOfFile: metrics, encoding: .utf8)) ?? "").split(separator: "\n")
        #expect(!lines.contains { $0.contains("\"step\"") }, "steps were recorded from a refused gradient: \(lines)")
        #expect(!FileManager.default.fileExists(atPath: model), "a model was written from a diverged run")
    }
}

/// The checkpoint files of a directory.
enum CheckpointFiles {
    static func list(_ directory: String) -> [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? [])
            .filter { $0.hasPrefix("checkpoint-") && $0.hasSuffix(".bpckpt") }.sorted()
            .map { directory + "/" + $0 }
    }
}

/// A worker that follows the protocol but answers every training task with a NaN gradient,
/// with a sum that claims three shards from the task's on (a broken host, or an attacker on
/// an unauthenticated network), or not at all while it answers the heartbeats (a stuck
/// computation), in this process.
final class LyingWorker: @unchecked Sendable {
    enum Lie {
        case nonFinite
        case tasksNotHeld
        /// Answers heartbeats but never a task (a computation that hangs).
        case stuck
    }
    let port: Int
    private var lie = Lie.nonFinite
    private let server: Channel
    private let lock = NSLock()
    private var sent = 0

    var gradientsSent: Int { lock.withLock { sent } }

    private init(port: Int, server: Channel) {
        self.port = port
        self.server = server
    }

    static func start(lie: Lie = .nonFinite) async throws -> LyingWorker {
        let server = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .bind(host: "127.0.0.1", port: 0) { channel in
                channel.eventLoop.makeCompletedFuture {
                    try WirePipeline.configure(channel, role: .worker)
                    return try NIOAsyncChannel<WireMessage, WireMessage>(wrappingChannelSynchronously: channel)
                }
            }
        let worker = LyingWorker(port: server.channel.localAddress!.port!, server: server.channel)
        worker.lie = lie
        Task {
            try await server.executeThenClose { connections in
                for try await connection in connections {
                    Task { try? await worker.serve(connection) }
                }
            }
        }
        return worker
    }

    private func serve(_ connection: NIOAsyncChannel<WireMessage, WireMessage>) async throws {
        try await connection.executeThenClose { inbound, outbound in
            var signature: ModelSignature?
            for try await message in inbound {
                switch message {
                case .hello(let hello):
                    signature = hello.signature
                    try await outbound.write(.helloAck(HelloAck(answering: hello, workerName: "liar", blasKernel: "none", threadCount: 1)))
                case .datasetOffer(let d):
                    try await outbound.write(.datasetStatus(DatasetStatus(kind: d.kind, digest: d.digest, state: .ready)))
                case .task where lie == .stuck:
                    lock.withLock { sent += 1 }   // counted as received; never answered
                case .task(let task) where task.kind == .train:
                    let count = signature!.parameterCount
                    var values = [Float](repeating: 0.01, count: count)
                    if lie == .nonFinite { values[count / 2] = .nan }
                    lock.withLock { sent += 1 }
                    try await outbound.write(.gradient(GradientResult(
                        step: task.step, shardID: task.shardID, shardCount: lie == .tasksNotHeld ? 3 : 1,
                        sampleCount: task.samples.count, lossSum: 1, correctCount: 0, gradientSum: values)))
                case .task:
                    return  // evaluation: it cannot compute, so it hangs up and the task goes elsewhere
                case .ping(let n):
                    try await outbound.write(.pong(n))
                case .goodbye:
                    return
                default:
                    break
                }
            }
        }
    }

    func stop() { server.close(promise: nil) }
}
