import Crypto
import Engine
import Foundation
import Training
import Wire

/// Everything a run is configured with.
struct TrainingConfiguration: Sendable {
    var sizes: [Int]
    var epochs: Int
    var batchSize: Int
    var shardSize: Int
    var seed: UInt64
    var optimizer: Optimizer
    var schedule: LearningRateSchedule
    var maxSteps: Int?
    var evalEvery: Int
    var modelOut: String?
    var metricsPath: String?
    /// Tasks a worker may hold beyond the ones it computes at once (one queued per worker).
    var queuedTasksPerWorker = 1
    /// Samples per evaluation task.
    var evalShardSize = 2500
    /// A worker holding tasks that sends nothing for this long is given up (its tasks go to the
    /// others) and disconnected.
    var workerTimeout: Double = 30
    /// How the connections to the workers are protected (see docs/SECURITY.md).
    var security: WireSecurity = .none
}

/// One training session: connects the workers, runs the epochs, reports, saves.
final class TrainingRun {
    let configuration: TrainingConfiguration
    let train: LabeledDataSet
    let test: LabeledDataSet
    let links: [WorkerLink]
    let counters: [ByteCounter]
    private var alive: Set<Int> = []
    /// Tasks each worker may hold: the shards it computes at once (its threads) plus a queue.
    private var capacity: [Int: Int] = [:]
    private var events: AsyncStream<WorkerEvent>.Iterator
    private let eventStream: AsyncStream<WorkerEvent>
    private let eventSink: AsyncStream<WorkerEvent>.Continuation

    init(configuration: TrainingConfiguration, train: LabeledDataSet, test: LabeledDataSet, addresses: [String]) {
        self.configuration = configuration
        self.train = train
        self.test = test
        links = addresses.enumerated().map { WorkerLink(index: $0.offset, address: $0.element, security: configuration.security) }
        counters = addresses.map { _ in ByteCounter() }
        (eventStream, eventSink) = AsyncStream.makeStream(of: WorkerEvent.self)
        events = eventStream.makeAsyncIterator()
    }

    func run() async throws {
        let hello = Hello(sessionID: UInt64.random(in: 1...UInt64.max),
                          signature: ModelSignature(layerSizes: configuration.sizes),
                          coordinatorName: ProcessInfo.processInfo.hostName)
        let dataSets = [
            DatasetTransfer(kind: .train, featureCount: train.featureCount, classCount: train.classCount,
                            images: train.pixels, labels: train.labels),
            DatasetTransfer(kind: .test, featureCount: test.featureCount, classCount: test.classCount,
                            images: test.pixels, labels: test.labels),
        ]
        let sink = eventSink
        try await withThrowingTaskGroup(of: Void.self) { group in
            for (link, counter) in zip(links, counters) {
                group.addTask { await link.run(hello: hello, dataSets: dataSets, counter: counter, events: sink) }
            }
            group.addTask {
                // The loop's clock, for noticing workers that stopped answering.
                while !Task.isCancelled {
                    try? await Task.sleep(for: .seconds(1))
                    sink.yield(.tick)
                }
            }
            defer {
                for link in links {
                    link.send(.goodbye(reason: "training finished"))
                    link.outbox.finish()
                }
                // A worker that is stopped or gone never closes its side: close every
                // connection after a short grace period so the run can end.
                let links = self.links
                Task {
                    try? await Task.sleep(for: .seconds(2))
                    for link in links { link.close() }
                }
                group.cancelAll()
            }
            try await waitForWorkers()
            try await trainEpochs()
        }
    }

    // MARK: - Workers

    private func waitForWorkers() async throws {
        var pending = Set(links.indices)
        var failures: [String] = []
        while !pending.isEmpty, let event = await events.next() {
            switch event {
            case .ready(let w, let ack):
                pending.remove(w)
                alive.insert(w)
                capacity[w] = max(1, ack.threadCount) + configuration.queuedTasksPerWorker
                print("worker \(links[w].address) ready: \(ack.workerName), OpenBLAS \(ack.blasKernel), \(ack.threadCount) thread(s)")
            case .closed(let w, let reason):
                pending.remove(w)
                failures.append(reason)
                print("worker \(links[w].address) unavailable: \(reason)")
            case .message, .tick:
                break
            }
        }
        if alive.isEmpty {
            throw CoordinatorError("no worker could be used:\n  " + failures.joined(separator: "\n  "))
        }
    }

    /// Hands `tasks` to the workers as they have room (a faster worker takes more), calls
    /// `onResult` with each task's index and answer, and gives a lost worker's tasks to others.
    private func runTasks(_ tasks: [ShardTask], onResult: (Int, WireMessage) throws -> Void) async throws {
        var queue = Array(tasks.indices.reversed())
        var outstanding: [Int: Set<Int>] = [:]
        var done = Set<Int>()
        var lastHeard: [Int: ContinuousClock.Instant] = [:]
        func giveUp(_ w: Int, _ reason: String) {
            alive.remove(w)
            let lost = outstanding.removeValue(forKey: w) ?? []
            queue.append(contentsOf: lost.subtracting(done))
            print("worker \(links[w].address) lost (\(reason)); its \(lost.count) task(s) go to the others")
        }
        func fill() {
            for w in alive.sorted() {
                while outstanding[w, default: []].count < capacity[w, default: 2], let t = queue.popLast() {
                    if outstanding[w, default: []].isEmpty { lastHeard[w] = .now }
                    outstanding[w, default: []].insert(t)
                    links[w].send(.task(tasks[t]))
                }
            }
        }
        fill()
        while done.count < tasks.count {
            guard let event = await events.next() else { throw CoordinatorError("the worker connections ended") }
            switch event {
            case .message(let w, let message):
                lastHeard[w] = .now
                let id: (UInt64, UInt32)?
                switch message {
                case .gradient(let g): id = (g.step, g.shardID)
                case .evaluation(let e): id = (e.step, e.shardID)
                case .error(let report):
                    print("worker \(links[w].address) reported an error: \(report)")
                    id = nil
                default: id = nil
                }
                guard let (step, shard) = id, let t = tasks.firstIndex(where: { $0.step == step && $0.shardID == shard }),
                      outstanding[w]?.contains(t) == true, !done.contains(t) else { continue }
                outstanding[w]!.remove(t)
                try onResult(t, message)
                done.insert(t)
                fill()
            case .closed(let w, let reason):
                guard alive.contains(w) else { continue }
                giveUp(w, reason)
                if alive.isEmpty { throw CoordinatorError("every worker is gone; the last reason: \(reason)") }
                fill()
            case .tick:
                let limit = Duration.seconds(configuration.workerTimeout)
                for w in alive.sorted() where !(outstanding[w] ?? []).isEmpty {
                    guard let heard = lastHeard[w], ContinuousClock.now - heard > limit else { continue }
                    giveUp(w, "no answer for \(configuration.workerTimeout) s while holding tasks")
                    links[w].close()
                }
                if alive.isEmpty {
                    throw CoordinatorError("every worker stopped answering; restart them and run again")
                }
                fill()
            case .ready:
                break
            }
        }
    }

    // MARK: - Training

    private func trainEpochs() async throws {
        let c = configuration
        var generator = SeededGenerator(seed: c.seed)
        var parameters = Network<Float>(sizes: c.sizes, uniformIn: -0.5...0.5, using: &generator).flattened()
        var optimizer = c.optimizer
        let metrics = try c.metricsPath.map { try MetricsLog(path: $0) }
        var step = 0
        let batchesPerEpoch = (train.count + c.batchSize - 1) / c.batchSize
        let totalSteps = min(c.maxSteps ?? Int.max, c.epochs * batchesPerEpoch)
        var trainSeconds = 0.0
        var points = 0
        // Per-step byte counts start after the handshake and the data sets.
        for counter in counters { _ = counter.take() }
        print("training \(c.sizes.map(String.init).joined(separator: "-")) on \(train.count) points, "
              + "batch \(c.batchSize), shards of \(c.shardSize), \(c.optimizer.kind) lr \(c.optimizer.learningRate), "
              + "\(alive.count) worker(s)")
        training: for epoch in 1...c.epochs {
            if let limit = c.maxSteps, step >= limit { break training }
            let plan = EpochPlan(sampleCount: train.count, batchSize: c.batchSize, generator: &generator)
            print("[Epoch \(epoch)]")
            for (b, batch) in plan.batches.enumerated() {
                if let limit = c.maxSteps, step >= limit { break training }
                step += 1
                let started = DispatchTime.now().uptimeNanoseconds
                let shards = ShardPlan(batch: batch, shardSize: c.shardSize).shards
                for w in alive { links[w].send(.parameters(ParameterUpdate(step: UInt64(step), values: parameters))) }
                let tasks = shards.enumerated().map { i, shard in
                    ShardTask(step: UInt64(step), shardID: UInt32(i), kind: .train, dataset: .train,
                              samples: .indices(shard.map { UInt32($0) }))
                }
                var reducer = GradientReducer(shardCount: shards.count, parameterCount: parameters.count)
                try await runTasks(tasks) { t, message in
                    guard case .gradient(let g) = message else { return }
                    guard g.gradientSum.count == parameters.count, g.sampleCount == shards[t].count else {
                        throw CoordinatorError("a worker sent a gradient of the wrong shape for shard \(t)")
                    }
                    reducer.offer(shard: t, .init(gradient: g.gradientSum, lossSum: g.lossSum,
                                                  correct: g.correctCount, count: g.sampleCount))
                }
                optimizer.learningRate = c.schedule.rate(base: c.optimizer.learningRate, step: step - 1,
                                                         totalSteps: totalSteps)
                let scale = 1 / Float(reducer.sampleCount)
                let mean = reducer.gradientSum.map { $0 * scale }
                optimizer.apply(gradient: mean, to: &parameters)
                let seconds = Double(DispatchTime.now().uptimeNanoseconds - started) * 1e-9
                trainSeconds += seconds
                points += batch.count

                let trainError = 1 - Double(reducer.correct) / Double(reducer.sampleCount)
                var line = String(format: "(Batch %d) trained on %d points in %.4fs (%.0f points/s); training error %.2f%%",
                                  b + 1, batch.count, seconds, Double(batch.count) / seconds, trainError * 100)
                if c.evalEvery > 0, step % c.evalEvery == 0 {
                    let validation = try await evaluate(parameters, step: step)
                    line += String(format: "; validation error %.2f%%", validation.errorRate * 100)
                }
                print(line)
                let bytes = counters.reduce((0, 0)) { total, counter in
                    let (s, r) = counter.take()
                    return (total.0 + s, total.1 + r)
                }
                try metrics?.write([
                    "step": .int(step), "epoch": .int(epoch), "loss": .double(reducer.lossSum / Double(reducer.sampleCount)),
                    "train_error": .double(trainError), "seconds": .double(seconds),
                    "bytes_sent": .int(bytes.0), "bytes_received": .int(bytes.1),
                ])
            }
        }
        let final = try await evaluate(parameters, step: step + 1)
        let digest = Self.sha256(of: parameters)
        print(String(format: "test error %.2f%% after %d steps; training time %.3fs (%.0f points/s); model sha256 %@",
                     final.errorRate * 100, step, trainSeconds, Double(points) / max(trainSeconds, 1e-9), digest))
        try metrics?.write([
            "event": .string("done"), "test_error": .double(final.errorRate), "test_loss": .double(final.meanLoss),
            "model_sha256": .string(digest), "steps": .int(step), "train_seconds": .double(trainSeconds),
        ])
        if let path = c.modelOut {
            let network = parameters.withUnsafeBufferPointer { Network(sizes: c.sizes, flattened: $0) }
            try ModelFile.save(network, to: path)
            print("model written to \(path)")
        }
    }

    private func evaluate(_ parameters: [Float], step: Int) async throws -> Evaluation {
        for w in alive { links[w].send(.parameters(ParameterUpdate(step: UInt64(step), values: parameters))) }
        let tasks = stride(from: 0, to: test.count, by: configuration.evalShardSize).enumerated().map { i, start in
            ShardTask(step: UInt64(step), shardID: UInt32(i), kind: .evaluate, dataset: .test,
                      samples: .range(start: start, count: min(configuration.evalShardSize, test.count - start)))
        }
        var parts = [Evaluation?](repeating: nil, count: tasks.count)
        try await runTasks(tasks) { t, message in
            guard case .evaluation(let e) = message else { return }
            parts[t] = Evaluation(lossSum: e.lossSum, correct: e.correctCount, count: e.sampleCount)
        }
        return parts.reduce(into: Evaluation()) { $0.add($1!) }
    }

    /// SHA-256 of the parameters' bytes (IEEE-754 float32, little-endian), in hex.
    static func sha256(of parameters: [Float]) -> String {
        let digest = parameters.withUnsafeBytes { SHA256.hash(data: $0) }
        return digest.map { String(format: "%02x", $0) }.joined()
    }
}
