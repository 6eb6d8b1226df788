import ArgumentParser
import Engine
import Foundation
import Training
import Wire

/// The `coordinator` executable: shards each batch across workers, adds their gradients in
/// shard order along the shard tree and takes the descent step.
@main
struct CoordinatorCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "coordinator",
        abstract: "Train the MNIST classifier data-parallel across worker processes.",
        discussion: """
            Give it workers to dial (--workers), or let it start its own on this machine
            (--local N). Each batch is cut into fixed-size shards; the workers compute the
            shards' gradient sums (a worker adds the pairs of shards it holds), the coordinator
            adds them in shard order, pairwise along a tree fixed by the shard count, and takes
            the step, so the trained model is the same bits with any number of workers.

            Examples:
              coordinator --local 2
              coordinator --local 2 --epochs 5 --metrics run.jsonl --model-out mnist.model
              coordinator --workers hostA:7070,hostB:7070 --optimizer momentum --learning-rate 0.5
              coordinator --local 2 --checkpoint-dir ckpt            # after a crash, add --resume
              coordinator --workers hostA:7070,hostB:7070 --dry-run   # check the set-up only
              coordinator --workers hostA:7070,hostB:7070 --secret-file /etc/backprop/secret

            With a shared secret (--secret-file FILE, or BACKPROP_SECRET_FILE=FILE, or the
            systemd credential "backprop-secret"), each worker must prove it knows the secret
            before it is sent anything, and every frame is encrypted and authenticated. The
            workers need the same secret. See docs/SECURITY.md.
            """)

    @Option(help: "Workers to dial, comma-separated HOST:PORT list.")
    var workers: String?

    @Option(help: "Start N local worker processes on loopback instead of dialling --workers.")
    var local: Int?

    @Option(help: "BLAS threads of each local worker (default: cores / workers, at least 1).")
    var threadsPerWorker: Int?

    @Option(help: "Bind each local worker to CPUs of its own: auto (when workers x threads fit in the CPUs this process may use), on (fail if they do not), or off.")
    var pinWorkers: PinPolicy = .auto

    @Option(help: "Directory with the MNIST-style IDX files (raw or .gz).")
    var data = "data/mnist"

    @Option(help: "Passes over the training set.")
    var epochs = Defaults.epochs

    @Option(help: "Points per batch (one descent step per batch).")
    var batchSize = 5000

    @Option(help: "Points per shard: the unit of work of a worker (fixed, so results do not depend on the number of workers).")
    var shardSize = 1250

    @Option(help: "Seed of the initial weights and the shuffles.")
    var seed: UInt64 = 1

    @Option(help: "Descent rule: sgd, momentum (0.9) or adam.")
    var optimizer: OptimizerKind = .adam

    @Option(help: "Learning rate (default: 0.1 for sgd, 0.5 for momentum, \(Defaults.adamRate) for adam).")
    var learningRate: Float?

    @Option(help: "Learning-rate schedule: constant, or cosine (decays to zero over the run).")
    var schedule: LearningRateSchedule = .constant

    @Option(help: "Hidden layer sizes, comma-separated.")
    var hidden = "300,100"

    @Option(help: "Stop after this many descent steps.")
    var maxSteps: Int?

    @Option(help: "Validate every N batches (0: only at the end).")
    var evalEvery = 1

    @Option(help: "Seconds a worker may stay silent (heartbeats every 0.5 s), or hold tasks without answering any, before its tasks go to the others; with no worker left, how long to wait for one before saving a checkpoint and stopping.")
    var workerTimeout: Double = 10

    @Option(help: "Keep checkpoints (parameters, optimizer state, position) in this directory.")
    var checkpointDir: String?

    @Option(help: "Steps between checkpoints (default: once per epoch).")
    var checkpointEvery: Int?

    @Flag(help: "Continue from the newest good checkpoint in --checkpoint-dir (start from the beginning if there is none).")
    var resume = false

    @Option(help: "Compress the parameters sent: auto (not to workers on this machine), zstd, or none. Workers choose for their gradients (worker --compression).")
    var compression: CompressionPolicy = .auto

    @Option(help: "Pass parameters and gradients through shared memory with workers on this machine (reached over loopback): on or off. The control messages still go over TCP.")
    var sharedMemory: SharedMemoryPolicy = .on

    @Flag(help: "Check the set-up without training: load the data, reach every worker, check its protocol version and model, and report its BLAS kernel and threads.")
    var dryRun = false

    @Option(help: "File holding the secret shared with the workers (mode 600, at least 16 bytes); or set BACKPROP_SECRET_FILE.")
    var secretFile: String?

    @Option(help: "Write the trained network to this file (read it with backprop-mnist --evaluate FILE).")
    var modelOut: String?

    @Option(help: "Write one JSON object per step, and a summary line, to this file.")
    var metrics: String?

    @Option(help: "Write the learning curve (SVG) to this file (default with --metrics: its name with .svg, run.jsonl → run.svg).")
    var plot: String?

    func validate() throws {
        if (workers == nil) == (local == nil) {
            throw ValidationError("give either --workers HOST:PORT,... or --local N (for example --local 2)")
        }
        if let n = local, !(1...64).contains(n) { throw ValidationError("--local must be 1 to 64, got \(n)") }
        if let t = threadsPerWorker, t < 1 { throw ValidationError("--threads-per-worker must be at least 1, got \(t)") }
        if let w = workers, w.split(separator: ",").isEmpty { throw ValidationError("--workers is empty") }
        guard epochs >= 1 else { throw ValidationError("--epochs must be at least 1, got \(epochs)") }
        guard batchSize >= 1 else { throw ValidationError("--batch-size must be at least 1, got \(batchSize)") }
        guard shardSize >= 1 else { throw ValidationError("--shard-size must be at least 1, got \(shardSize)") }
        if let s = maxSteps, s < 1 { throw ValidationError("--max-steps must be at least 1, got \(s)") }
        guard workerTimeout > 0 else { throw ValidationError("--worker-timeout must be positive, got \(workerTimeout)") }
        guard evalEvery >= 0 else { throw ValidationError("--eval-every must be 0 or more, got \(evalEvery)") }
        if resume, checkpointDir == nil {
            throw ValidationError("--resume needs --checkpoint-dir DIR: the directory the interrupted run saved its checkpoints in")
        }
        if let n = checkpointEvery, n < 1 { throw ValidationError("--checkpoint-every must be at least 1, got \(n)") }
        if let r = learningRate, !(r > 0 && r.isFinite) {
            throw ValidationError("--learning-rate must be a positive number, got \(r)")
        }
        for (option, path) in [("--model-out", modelOut), ("--metrics", metrics), ("--plot", plot)] {
            guard let path else { continue }
            let directory = URL(fileURLWithPath: path).deletingLastPathComponent().path
            guard FileManager.default.isWritableFile(atPath: directory) else {
                throw ValidationError("\(option) \(path): the directory \(directory) does not exist or is not writable")
            }
        }
        guard hiddenSizes != nil else {
            throw ValidationError("--hidden must be positive integers separated by commas, like 300,100; got '\(hidden)'")
        }
    }

    var hiddenSizes: [Int]? {
        let parts = hidden.split(separator: ",", omittingEmptySubsequences: false)
            .map { Int($0.trimmingCharacters(in: .whitespaces)) }
        guard parts.allSatisfy({ ($0 ?? 0) > 0 }) else { return nil }
        return parts.map { $0! }
    }

    func run() async throws {
        BLASRuntime.prepareProcess(threads: 1)
        let secret: SharedSecret?
        do {
            secret = try SharedSecret.resolve(option: secretFile)
        } catch {
            throw ValidationError("\(error)")
        }
        let (train, test): (LabeledDataSet, LabeledDataSet)
        do {
            (train, test) = try MNIST.load(directory: data)
        } catch {
            throw ValidationError("\(error)")
        }
        let rate = learningRate ?? Defaults.learningRate(optimizer)
        let configuration = TrainingConfiguration(
            sizes: [train.featureCount] + hiddenSizes! + [train.classCount],
            epochs: epochs, batchSize: batchSize, shardSize: shardSize, seed: seed,
            optimizer: Optimizer(kind: optimizer, learningRate: rate), schedule: schedule, maxSteps: maxSteps,
            evalEvery: evalEvery, modelOut: modelOut, metricsPath: metrics, plotPath: plot, workerTimeout: workerTimeout,
            checkpointDirectory: checkpointDir, checkpointEvery: checkpointEvery, resume: resume,
            security: secret.map(WireSecurity.sharedSecret) ?? .none, compression: compression,
            sharedMemory: sharedMemory)

        var localWorkers: LocalWorkers?
        let addresses: [String]
        if let n = local {
            let cores = ProcessInfo.processInfo.activeProcessorCount
            let threads = threadsPerWorker ?? max(1, cores / n)
            let allowed = CPUAffinity.allowedCPUs() ?? []
            let placement = pinWorkers == .off ? nil : CPUAffinity.plan(workers: n, threads: threads, allowed: allowed)
            if pinWorkers == .on, placement == nil {
                throw ValidationError("--pin-workers on: \(n) worker(s) of \(threads) thread(s) need \(n * threads) CPUs, and this process may use \(allowed.count) (\(CPUAffinity.format(allowed))). Start fewer workers or threads, or use --pin-workers auto or off.")
            }
            let pinned = placement.map { "; CPUs " + $0.map(CPUAffinity.format).joined(separator: ", ") }
                ?? (pinWorkers == .auto ? "; not bound to CPUs (\(n * threads) threads, \(allowed.count) CPUs)" : "")
            Console.shared.line("starting \(n) local worker(s), \(threads) BLAS thread(s) each\(pinned)")
            localWorkers = try LocalWorkers(count: n, threads: threads, cpus: placement, secret: secret, compression: compression)
            addresses = localWorkers!.addresses
        } else {
            addresses = workers!.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
        }
        let stopWorkers = localWorkers
        let signals = SignalCleanup { stopWorkers?.stop() }
        defer {
            localWorkers?.stop()
            _ = signals
        }
        if dryRun {
            let ok = await DryRun.check(addresses: addresses, sizes: configuration.sizes, train: train, test: test)
            if !ok { throw ExitCode.failure }
            return
        }
        let run = TrainingRun(configuration: configuration, train: train, test: test, addresses: addresses)
        do {
            try await run.run()
        } catch {
            FileHandle.standardError.write(Data("coordinator: error: \(error)\n".utf8))
            throw ExitCode.failure
        }
    }
}

/// Default options, chosen by measurement (see BENCHMARKS.md).
enum Defaults {
    static let epochs = 30
    static let adamRate: Float = 0.01
    static func learningRate(_ kind: OptimizerKind) -> Float {
        switch kind {
        case .sgd: 0.1
        case .momentum: 0.5
        case .adam: adamRate
        }
    }
}

extension OptimizerKind: ExpressibleByArgument {}
extension LearningRateSchedule: ExpressibleByArgument {}

/// Runs `cleanup` and exits when the process gets SIGINT or SIGTERM.
final class SignalCleanup: @unchecked Sendable {
    private var sources: [DispatchSourceSignal] = []

    init(_ cleanup: @escaping @Sendable () -> Void) {
        for sig in [SIGINT, SIGTERM] {
            signal(sig, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: sig, queue: .global())
            source.setEventHandler {
                cleanup()
                exit(128 + sig)
            }
            source.resume()
            sources.append(source)
        }
    }
}
extension CompressionPolicy: ExpressibleByArgument {}
extension SharedMemoryPolicy: ExpressibleByArgument {}

/// Whether `--local` binds each worker to CPUs of its own (`--pin-workers`).
enum PinPolicy: String, CaseIterable, ExpressibleByArgument {
    /// When the workers' threads fit in the CPUs the coordinator may use.
    case auto
    /// Always; the run fails if they do not fit.
    case on
    /// Never: the workers run wherever the scheduler puts them.
    case off
}
