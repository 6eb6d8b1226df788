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
    /// The learning-curve SVG (default: next to the metrics file, `run.jsonl` → `run.svg`).
    var plotPath: String?
    /// Tasks a worker may hold beyond the ones it computes at once: a pair, so that a worker
    /// that answers a pair it added (one answer for two tasks) still holds a task to compute
    /// while the next ones come.
    var queuedTasksPerWorker = 2
    /// Samples per evaluation task.
    var evalShardSize = 2500
    /// A worker silent for this long (no answer to the heartbeats) is given up: its tasks go
    /// to the others and the link dials it again. With no worker left, the run waits this long
    /// for one to come back before it saves a checkpoint and stops.
    var workerTimeout: Double = 10
    /// Where checkpoints go (nil: none, except the one saved when every worker is lost).
    var checkpointDirectory: String?
    /// Steps between checkpoints (nil: once per epoch).
    var checkpointEvery: Int?
    /// Continue from the newest good checkpoint in `checkpointDirectory`.
    var resume = false
    /// How the connections to the workers are protected (see docs/SECURITY.md).
    var security: WireSecurity = .none
    /// Whether the parameters sent to the workers are compressed.
    var compression: CompressionPolicy = .auto
    /// Whether parameters and gradients pass through shared memory with workers on this host.
    var sharedMemory: SharedMemoryPolicy = .on
    /// Where the checkpoint goes when every worker is lost and no directory was given.
    static let fallbackCheckpointDirectory = "checkpoints"
}

/// Every worker is gone and none came back within the timeout.
struct NoWorkersLeft: Error {
    var waited: Double
    var reasons: [String]
}

/// One training session: connects the workers, runs the epochs, checkpoints, reports, saves.
///
/// The loop hands shards to workers as they have room (both shards of a pair to one worker
/// where it can) and adds the results along the shard tree;
/// a worker that is lost (connection closed, or silent past `workerTimeout` despite the
/// heartbeats) has its unfinished shards handed to the others at once, and its link dials it
/// again with backoff. Which worker computes which shard never changes the sums, so the run
/// ends with the same parameters whatever fails along the way.
final class TrainingRun {
    let configuration: TrainingConfiguration
    let train: LabeledDataSet
    let test: LabeledDataSet
    let links: [WorkerLink]
    let counters: [ByteCounter]
    private let console = Console.shared
    /// Workers with an established session, and the number of that session's connection.
    private var alive: Set<Int> = []
    private var connection: [Int: Int] = [:]
    /// Tasks each worker may hold: the shards it computes at once (its threads) plus a queue.
    private var capacity: [Int: Int] = [:]
    /// Tasks of the next step already sent to a worker, on which connection: it gathers their
    /// samples while it waits for that step's parameters (docs/PROTOCOL.md, "Tasks ahead").
    private var sentAhead: [Int: (connection: Int, tasks: Set<TaskKey>)] = [:]
    /// When each worker was last heard from (any message, heartbeats included).
    private var lastHeard: [Int: ContinuousClock.Instant] = [:]
    /// When each lost worker was lost, and why its last connection or attempt ended.
    private var lostAt: [Int: ContinuousClock.Instant] = [:]
    private var lastReason: [Int: String] = [:]
    /// The last step's gradient sum, whose storage the next step's reducer reuses, and its
    /// buffers for partial sums.
    private var spareGradientSum: [Float] = []
    /// The next step's shards and training tasks, made during this step for the tasks sent ahead.
    private var prepared: (step: Int, shards: [[Int]], tasks: [ShardTask])?
    private var spareReducerBuffers: [[Float]] = []
    private var events: AsyncStream<WorkerEvent>.Iterator
    private let eventStream: AsyncStream<WorkerEvent>
    private let eventSink: AsyncStream<WorkerEvent>.Continuation

    init(configuration: TrainingConfiguration, train: LabeledDataSet, test: LabeledDataSet, addresses: [String]) {
        self.configuration = configuration
        self.train = train
        self.test = test
        links = addresses.enumerated().map { WorkerLink(index: $0.offset, address: $0.element, security: configuration.security,
                                                              compression: configuration.compression,
                                                              sharedMemory: configuration.sharedMemory) }
        counters = addresses.map { _ in ByteCounter() }
        (eventStream, eventSink) = AsyncStream.makeStream(of: WorkerEvent.self)
        events = eventStream.makeAsyncIterator()
    }

    func run() async throws {
        let hello = Hello(sessionID: UInt64.random(in: 1...UInt64.max),
                          signature: ModelSignature(layerSizes: configuration.sizes),
                          coordinatorName: ProcessInfo.processInfo.hostName,
                          extensions: [.shardSize(configuration.shardSize)])
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
                    try? await Task.sleep(for: .milliseconds(250))
                    sink.yield(.tick)
                }
            }
            defer {
                for link in links { link.stop(reason: "training finished") }
                group.cancelAll()
            }
            try await waitForWorkers()
            try await trainEpochs(trainingData: dataSets[0].descriptor.digest.description)
        }
    }

    // MARK: - Workers

    private func address(_ w: Int) -> String { links[w].address }

    /// Handles the events that change which workers are usable; returns true for those.
    private func handleMembership(_ event: WorkerEvent, announceFailures: Bool) -> Bool {
        switch event {
        case .ready(let w, let c, let ack):
            alive.insert(w)
            connection[w] = c
            capacity[w] = max(1, ack.threadCount) + configuration.queuedTasksPerWorker
            lastHeard[w] = .now
            if let since = lostAt.removeValue(forKey: w) {
                console.line(String(format: "worker %@ is back after %.1f s; using it again", address(w),
                                    (ContinuousClock.now - since).seconds))
            } else {
                let transport = switch ack.sharedMemoryAnswer {
                case (true, _)?: ", floats through shared memory"
                case (false, let reason)?: ", floats in the frames, not shared memory: \(reason)"
                case nil: ""
                }
                console.line("worker \(address(w)) ready: \(ack.workerName), OpenBLAS \(ack.blasKernel), \(ack.threadCount) thread(s)\(transport)")
            }
            return true
        case .closed(let w, let c, let reason):
            lastReason[w] = reason
            if alive.contains(w), connection[w] == c {
                giveUp(w, "its connection ended: \(reason)")
            } else if announceFailures, lostAt[w] == nil {
                lostAt[w] = .now
                console.line("worker \(address(w)) unavailable: \(reason); dialling it again in the background")
            }
            return true
        case .message, .tick:
            return false
        }
    }

    /// Stops using worker `w`: its tasks go back to the queue (by the caller) and its
    /// connection is closed, so that its link dials it again.
    private func giveUp(_ w: Int, _ reason: String) {
        alive.remove(w)
        lostAt[w] = .now
        let silent = lastHeard[w].map { (ContinuousClock.now - $0).seconds } ?? 0
        console.line(String(format: "worker %@ lost (%@; last heard from %.1f s ago); dialling it again with backoff",
                            address(w), reason, silent))
        if let c = connection[w] { links[w].close(connection: c) }
    }

    /// Waits until every worker answered once (ready, or failed), and at least one is ready.
    private func waitForWorkers() async throws {
        var answered = Set<Int>()
        var allAnsweredAt: ContinuousClock.Instant?
        while answered.count < links.count || alive.isEmpty {
            guard let event = await events.next() else { throw CoordinatorError("the worker connections ended") }
            if handleMembership(event, announceFailures: true) {
                switch event {
                case .ready(let w, _, _), .closed(let w, _, _): answered.insert(w)
                default: break
                }
            }
            guard answered.count == links.count, alive.isEmpty else { continue }
            if links.allSatisfy(\.refusedForGood) {
                let reasons = links.indices.map { "\(address($0)): \(lastReason[$0] ?? "refused")" }
                throw CoordinatorError("no worker can be used:\n  " + reasons.joined(separator: "\n  "))
            }
            if allAnsweredAt == nil {
                allAnsweredAt = .now
                console.line("no worker is usable yet; waiting up to \(configuration.workerTimeout) s for one of \(links.map(\.address).joined(separator: ", "))")
            } else if (ContinuousClock.now - allAnsweredAt!).seconds > configuration.workerTimeout {
                let reasons = links.indices.map { "\(address($0)): \(lastReason[$0] ?? "no answer")" }
                throw CoordinatorError("no worker could be used:\n  " + reasons.joined(separator: "\n  "))
            }
        }
    }

    /// Hands `tasks` to the workers as they have room (a faster worker takes more), calls
    /// `accept` with each task's index and answer, and gives a lost worker's tasks to others.
    ///
    /// `accept` returns false to reject an answer (a non-finite gradient): the task is then
    /// computed again by another worker. An answer may cover several adjacent tasks (a gradient
    /// summed by the worker over a node of the shard tree): `accept` gets their range. Every
    /// worker that becomes ready meanwhile is first sent `parameters`.
    ///
    /// A worker is handed both halves of a pair of tasks (2k, 2k + 1) where it can be (the
    /// first of a free pair to compute, the other one queued), so that it can add them itself.
    ///
    /// `next` are the next step's training tasks: once every task of this call is handed out,
    /// each worker is sent its share of them ahead (`sentAhead`), and holds them when this
    /// call's tasks come to include them.
    private func runTasks(_ tasks: [ShardTask], parameters: ParameterUpdate, next: [ShardTask] = [],
                          queued: () throws -> Void = {},
                          accept: (Range<Int>, Int, WireMessage) throws -> Bool) async throws {
        // Workers that get `parameters` with their next tasks: every worker now, and each one
        // that becomes ready later.
        var needsParameters = alive
        var outstanding: [Int: Set<Int>] = [:]
        var done = Set<Int>()
        /// Workers whose answer to a task was rejected: they do not get it again.
        var rejected: [Int: Set<Int>] = [:]
        var noneSince: ContinuousClock.Instant? = nil
        /// When each worker last answered a task, or was given work while it held none: a
        /// worker that holds tasks and answers none of them for `workerTimeout`, though it
        /// answers the heartbeats, has a stuck computation.
        var progressAt: [Int: ContinuousClock.Instant] = [:]
        let index = Dictionary(uniqueKeysWithValues: tasks.enumerated().map { (TaskKey($1.step, $1.shardID), $0) })
        // Tasks sent ahead to a worker still on the same connection are its own; any other
        // (a worker lost or reconnected since) go to the queue like the rest.
        for (w, sent) in sentAhead {
            let mine = Set(sent.tasks.compactMap { index[$0] })
            guard !mine.isEmpty else { continue }
            sentAhead[w] = nil
            if alive.contains(w), connection[w] == sent.connection { outstanding[w] = mine }
        }
        let held = outstanding.values.reduce(into: Set<Int>()) { $0.formUnion($1) }
        var queue = tasks.indices.reversed().filter { !held.contains($0) }
        var nextQueue = Array(next.reversed())

        func lose(_ w: Int, _ reason: String) {
            giveUp(w, reason)
            let lost = outstanding.removeValue(forKey: w) ?? []
            queue.append(contentsOf: lost.subtracting(done).sorted(by: >))
            if !lost.isEmpty { console.line("  its \(lost.count) unfinished task(s) go to the other workers") }
        }
        /// Where in `queue` the task for worker `w` is: in `pass` 0 (a computing slot), the other
        /// half of a pair `w` holds, else the first of a pair whose both tasks are free, else the
        /// lowest; in pass 1 (a queue slot), only the other half of a pair `w` holds; in pass 2,
        /// the lowest task.
        func pick(for w: Int, pass: Int) -> Int? {
            let eligible = { (t: Int) in !(rejected[t]?.contains(w) ?? false) }
            let held = outstanding[w, default: []]
            let sibling = { queue.lastIndex { t in eligible(t) && held.contains(t ^ 1) } }
            switch pass {
            case 0:
                if let sibling = sibling() { return sibling }
                let queued = Set(queue)   // one pass over the queue per pick, not one per task
                return queue.lastIndex { t in eligible(t) && t % 2 == 0 && queued.contains(t + 1) }
                    ?? queue.lastIndex(where: eligible)
            case 1:
                return sibling()
            default:
                return queue.lastIndex(where: eligible)
            }
        }
        func fill() {
            let workers = alive.sorted()
            var messages: [Int: [WireMessage]] = [:]
            for w in workers where needsParameters.remove(w) != nil {
                messages[w] = [.parameters(parameters)]
                progressAt[w] = .now
            }
            // Every worker's computing slots first, then the queues: one slot at a time per worker,
            // in turn, so that a batch of few shards is spread over the workers.
            for pass in 0...2 {
                let queued = pass > 0
                var progress = true
                while progress {
                    progress = false
                    for w in workers {
                        let limit = capacity[w, default: 2] - (queued ? 0 : configuration.queuedTasksPerWorker)
                        guard outstanding[w, default: []].count < limit, let i = pick(for: w, pass: pass) else { continue }
                        let t = queue.remove(at: i)
                        if outstanding[w, default: []].isEmpty { progressAt[w] = .now }
                        outstanding[w, default: []].insert(t)
                        messages[w, default: []].append(.task(tasks[t]))
                        progress = true
                    }
                }
            }
            // No task of this step left to hand out: each worker gets its share of the next
            // step's now, after its tasks of this step. It gathers their samples once it has
            // computed those, while it waits for the next parameters.
            if queue.isEmpty, done.count < tasks.count {
                for w in workers where sentAhead[w] == nil && !nextQueue.isEmpty {
                    let share = min(capacity[w, default: 2], (next.count + workers.count - 1) / workers.count)
                    let sent = (0..<min(share, nextQueue.count)).map { _ in nextQueue.removeLast() }
                    sentAhead[w] = (connection[w]!, Set(sent.map { TaskKey($0.step, $0.shardID) }))
                    messages[w, default: []].append(contentsOf: sent.map(WireMessage.task))
                }
            }
            for (w, list) in messages.sorted(by: { $0.key < $1.key }) { links[w].send(list, connection: connection[w]!) }
            if alive.isEmpty, noneSince == nil {
                noneSince = .now
                console.line("no worker left; waiting up to \(configuration.workerTimeout) s for one of them to come back (\(links.map(\.address).joined(separator: ", ")))")
            }
        }
        fill()
        try queued()
        while done.count < tasks.count {
            guard let event = await events.next() else { throw CoordinatorError("the worker connections ended") }
            if handleMembership(event, announceFailures: false) {
                switch event {
                case .ready(let w, _, _):
                    noneSince = nil
                    needsParameters.insert(w)
                case .closed(let w, _, _):
                    if !alive.contains(w), let lost = outstanding.removeValue(forKey: w) {
                        queue.append(contentsOf: lost.subtracting(done).sorted(by: >))
                        if !lost.isEmpty { console.line("  its \(lost.count) unfinished task(s) go to the other workers") }
                    }
                default: break
                }
                fill()
                continue
            }
            switch event {
            case .message(let w, let c, let message):
                guard alive.contains(w), connection[w] == c else { continue }  // a late answer of a lost session
                lastHeard[w] = .now
                let key: TaskKey?
                var span = 1
                switch message {
                case .gradient(let g):
                    key = TaskKey(g.step, g.shardID)
                    span = Int(g.shardCount)
                case .evaluation(let e): key = TaskKey(e.step, e.shardID)
                case .error(let report):
                    console.line("worker \(address(w)) reported an error: \(report)")
                    key = nil
                default: key = nil
                }
                if let key, index[key] == nil, sentAhead[w]?.tasks.contains(key) == true {
                    // A worker holds the next step's tasks until their parameters arrive: an
                    // answer now cannot be right, and the task would never be answered again.
                    lose(w, "it answered task \(key.shard) of step \(key.step) before that step's parameters")
                    fill()
                    continue
                }
                if key != nil { progressAt[w] = .now }
                guard let key, let t = index[key], outstanding[w]?.contains(t) == true, !done.contains(t) else { continue }
                // A sum over several tasks: all of them this worker's, in this call, not done.
                let covered = t ..< t + span
                guard span <= tasks.count - t, (1..<span).allSatisfy({ index[TaskKey(key.step, key.shard &+ UInt32($0))] == t + $0 }),
                      covered.allSatisfy({ outstanding[w]!.contains($0) && !done.contains($0) }) else {
                    lose(w, "it answered tasks \(key.shard) to \(Int(key.shard) + span - 1) of step \(key.step), not all of which it held")
                    fill()
                    continue
                }
                outstanding[w]!.subtract(covered)
                if try accept(covered, w, message) {
                    done.formUnion(covered)
                } else {
                    for t in covered {
                        rejected[t, default: []].insert(w)
                        let refusals = rejected[t]!.count
                        if refusals >= min(3, links.count) {
                            throw CoordinatorError("task \(t) of step \(tasks[t].step) was answered with an unusable result by \(refusals) worker(s): the model has probably diverged (try a lower --learning-rate)")
                        }
                    }
                    queue.append(contentsOf: covered.reversed())
                }
                fill()
            case .tick:
                let limit = configuration.workerTimeout
                let now = ContinuousClock.now
                for w in alive.sorted() {
                    if let heard = lastHeard[w], (now - heard).seconds > limit {
                        lose(w, "no answer to heartbeats for \(limit) s")
                    } else if let held = outstanding[w], !held.isEmpty, let since = progressAt[w], (now - since).seconds > limit {
                        // Dialled again only after the longest backoff: reconnected at once, it
                        // would be handed tasks and hold the run up again.
                        links[w].holdOff()
                        lose(w, "none of its \(held.count) task(s) answered for \(limit) s, though it answers heartbeats: its computation seems stuck")
                    }
                }
                fill()
                if let since = noneSince, (ContinuousClock.now - since).seconds > limit {
                    throw NoWorkersLeft(waited: limit, reasons: links.indices.map { "\(address($0)): \(lastReason[$0] ?? "no answer")" })
                }
            case .ready, .closed:
                break
            }
        }
    }

    // MARK: - Training

    private func trainEpochs(trainingData: String) async throws {
        let c = configuration
        let batchesPerEpoch = (train.count + c.batchSize - 1) / c.batchSize
        let totalSteps = min(c.maxSteps ?? Int.max, c.epochs * batchesPerEpoch)
        let fingerprint = RunFingerprint(
            layerSizes: c.sizes, batchSize: c.batchSize, shardSize: c.shardSize, seed: c.seed,
            optimizer: c.optimizer.kind, learningRate: c.optimizer.learningRate, schedule: c.schedule,
            totalSteps: totalSteps, trainingData: trainingData)
        let checkpoints = try c.checkpointDirectory.map { try CheckpointDirectory(path: $0) }
        let checkpointEvery = c.checkpointEvery ?? batchesPerEpoch

        var state = try startingState(checkpoints: checkpoints, fingerprint: fingerprint)
        // The optimizer's state and the reduction buffer are made now, not in the first step.
        state.optimizer.makeState(parameterCount: state.parameters.count)
        spareGradientSum = [Float](repeating: 0, count: state.parameters.count)
        let metrics = try c.metricsPath.map { try MetricsLog(path: $0, keepingStepsThrough: c.resume ? state.step : nil) }
        var curve = LearningCurve()
        // Per-step byte counts start after the handshake and the data sets.
        for counter in counters { _ = counter.take() }
        console.line("training \(c.sizes.map(String.init).joined(separator: "-")) on \(train.count) points, "
              + "batch \(c.batchSize), shards of \(c.shardSize), \(c.optimizer.kind) lr \(c.optimizer.learningRate), "
              + "\(alive.count) worker(s)")

        typealias Plan = (epoch: Int, batches: [[Int]], next: SeededGenerator)
        /// Epoch `epoch`'s batches, shuffled by `generator` (the state after the previous epoch's).
        func epochPlan(_ epoch: Int, _ generator: SeededGenerator) -> Plan {
            var generator = generator
            let batches = EpochPlan(sampleCount: train.count, batchSize: c.batchSize, generator: &generator).batches
            return (epoch, batches, generator)
        }
        var plan: Plan?
        /// The next epoch's plan, made early for the last step's tasks ahead.
        var nextPlan: Plan?
        // A step's report (its line, metrics and checkpoint) is written once the next step's
        // parameters and tasks are out, so that the workers do not wait for it; a step that
        // validates reports at once. Whatever ends the loop writes the last report first.
        var pendingReport: (() throws -> Void)?
        func flushReport() throws {
            let report = pendingReport
            pendingReport = nil
            try report?()
        }
        do {
            defer { try? flushReport() }
            while state.step < totalSteps, state.epoch <= c.epochs {
                if plan?.epoch != state.epoch {
                    plan = nextPlan?.epoch == state.epoch ? nextPlan : epochPlan(state.epoch, state.epochGenerator)
                    nextPlan = nil
                    if state.batchesDone == 0 { console.line("[Epoch \(state.epoch)]") }
                }
                let batch = plan!.batches[state.batchesDone]
                let started = ContinuousClock.now
                let cpuAtStart = StepTimings.processCPUSeconds()
                let step = state.step + 1
                let shards = prepared?.step == step ? prepared!.shards : ShardPlan(batch: batch, shardSize: c.shardSize).shards
                // The next step's shards, which workers done early get ahead.
                var nextBatch: [Int]?
                if step < totalSteps {
                    if state.batchesDone + 1 < plan!.batches.count {
                        nextBatch = plan!.batches[state.batchesDone + 1]
                    } else if state.epoch < c.epochs {
                        nextPlan = nextPlan ?? epochPlan(state.epoch + 1, plan!.next)
                        nextBatch = nextPlan!.batches.first
                    }
                }
                let nextShards = nextBatch.map { ShardPlan(batch: $0, shardSize: c.shardSize).shards }
                var timings = StepTimings(started: started)
                var reducer = try await gradient(of: shards, parameters: state.parameters, step: step, next: nextShards,
                                                 timings: &timings, queued: flushReport)
                // The step is taken (nothing below can fail): the state moves on as one, in place.
                let optimizing = ContinuousClock.now
                state.optimizer.learningRate = c.schedule.rate(base: c.optimizer.learningRate, step: step - 1,
                                                               totalSteps: totalSteps)
                let scale = 1 / Float(reducer.sampleCount)
                reducer.withGradientSum { half, otherHalf in
                    state.optimizer.apply(gradientSum: half, plus: otherHalf, scale: scale, to: &state.parameters)
                }
                (spareGradientSum, spareReducerBuffers) = reducer.takeBuffers()
                timings.optimizer = (ContinuousClock.now - optimizing).seconds
                timings.cpu = StepTimings.processCPUSeconds() - cpuAtStart
                let seconds = (ContinuousClock.now - started).seconds
                state.step = step
                state.batchesDone += 1
                state.trainSeconds += seconds
                state.points += batch.count
                if state.batchesDone == plan!.batches.count {
                    state.epoch += 1
                    state.batchesDone = 0
                    state.epochGenerator = plan!.next
                }

                let trainError = 1 - Double(reducer.correct) / Double(reducer.sampleCount)
                var validationError: Double?
                if c.evalEvery > 0, step % c.evalEvery == 0 {
                    let validation = try await evaluate(state.parameters, step: step)
                    validationError = validation.errorRate
                }
                let batchInEpoch = step - (plan!.epoch - 1) * batchesPerEpoch, points = batch.count
                let epoch = plan!.epoch
                let loss = reducer.lossSum / Double(reducer.sampleCount)
                let saved = checkpoints != nil && (step % checkpointEvery == 0 || step == totalSteps) ? state : nil
                let elapsed = state.trainSeconds, trainingEpoch = min(state.epoch, c.epochs)
                let bytes = counters.reduce((0, 0)) { total, counter in
                    let (s, r) = counter.take()
                    return (total.0 + s, total.1 + r)
                }
                pendingReport = { [console] in
                    // Formatted here, once the next step's parameters are out, like the rest.
                    var line = String(format: "(Batch %d) trained on %d points in %.4fs (%.0f points/s); training error %.2f%%",
                                      batchInEpoch, points, seconds, Double(points) / seconds, trainError * 100)
                    if let validationError { line += String(format: "; validation error %.2f%%", validationError * 100) }
                    curve.append(step: step, seconds: seconds, trainError: trainError, validationError: validationError)
                    console.line(line)
                    try metrics?.write([
                        "step": .int(step), "epoch": .int(epoch), "loss": .double(loss),
                        "train_error": .double(trainError), "seconds": .double(seconds),
                        "bytes_sent": .int(bytes.0), "bytes_received": .int(bytes.1),
                        "validation_error": .double(validationError ?? .nan),
                        "tasks_queued_ms": .double(1000 * timings.tasksQueued),
                        "first_answer_ms": .double(1000 * timings.firstAnswer),
                        "last_answer_ms": .double(1000 * timings.lastAnswer),
                        "reduce_ms": .double(1000 * timings.reduce),
                        "optimizer_ms": .double(1000 * timings.optimizer),
                        "answer_spread_ms": .double(1000 * timings.answerSpread),
                        "coordinator_cpu_ms": .double(1000 * timings.cpu),
                    ])
                    if let checkpoints, let saved {
                        let saving = ContinuousClock.now
                        let path = try checkpoints.save(saved, fingerprint: fingerprint)
                        console.line(String(format: "checkpoint %@ (%.1f ms)", path, (ContinuousClock.now - saving).seconds * 1000))
                    }
                    let left = elapsed / Double(step) * Double(totalSteps - step)
                    console.status(String(format: "step %d/%d · epoch %d/%d · %.0f s training · about %.0f s left",
                                          step, totalSteps, trainingEpoch, c.epochs, elapsed, left))
                }
                if validationError != nil || saved != nil { try flushReport() }
            }
            try flushReport()
            let final = try await evaluate(state.parameters, step: state.step + 1)
            let digest = Self.sha256(of: state.parameters)
            console.clearStatus()
            console.line(String(format: "test error %.2f%% after %d steps; training time %.3fs (%.0f points/s); model sha256 %@",
                                final.errorRate * 100, state.step, state.trainSeconds,
                                Double(state.points) / max(state.trainSeconds, 1e-9), digest))
            try metrics?.write([
                "event": .string("done"), "test_error": .double(final.errorRate), "test_loss": .double(final.meanLoss),
                "model_sha256": .string(digest), "steps": .int(state.step), "train_seconds": .double(state.trainSeconds),
            ])
            if let path = c.plotPath ?? c.metricsPath.map(LearningCurve.defaultPath(forMetrics:)) {
                // A resumed run's metrics file holds the steps before the resume too.
                if let metricsPath = c.metricsPath, c.resume, let whole = try? LearningCurve(metricsFile: metricsPath) {
                    curve = whole
                }
                (curve.testError, curve.trainSeconds) = (final.errorRate, state.trainSeconds)
                try curve.write(to: path)
                console.line("learning curve written to \(path)")
            }
        } catch let lost as NoWorkersLeft {
            let directory = try checkpoints ?? CheckpointDirectory(path: TrainingConfiguration.fallbackCheckpointDirectory)
            let path = try directory.save(state, fingerprint: fingerprint)
            var resume = CommandLine.arguments.dropFirst().joined(separator: " ")
            if !CommandLine.arguments.contains("--resume") { resume += " --resume" }
            if checkpoints == nil { resume += " --checkpoint-dir \(directory.path)" }
            throw CoordinatorError("""
                every worker was lost and none came back within \(lost.waited) s:
                  \(lost.reasons.joined(separator: "\n  "))
                The state after step \(state.step) is saved in \(path).
                Start the workers again, then resume with:
                  coordinator \(resume)
                """)
        }
        if let path = c.modelOut {
            let network = state.parameters.withUnsafeBufferPointer { Network(sizes: c.sizes, flattened: $0) }
            try ModelFile.save(network, to: path)
            console.line("model written to \(path)")
        }
    }

    /// The state the run starts from: the newest good checkpoint with `--resume`, else step 0.
    private func startingState(checkpoints: CheckpointDirectory?, fingerprint: RunFingerprint) throws -> TrainingState {
        let c = configuration
        if c.resume, let checkpoints {
            if let found = checkpoints.newest() {
                for problem in found.skipped { console.line("skipping \(problem)") }
                let differences = fingerprint.differences(from: found.fingerprint)
                guard differences.isEmpty else {
                    throw CoordinatorError("cannot resume from \(found.path): it belongs to a different run (\(differences.joined(separator: "; "))). Resume with the options of that run, or use another --checkpoint-dir.")
                }
                console.line("resuming from \(found.path): \(found.state.step) step(s) done, epoch \(found.state.epoch)")
                return found.state
            }
            let bad = checkpoints.checkpointFiles()
            guard bad.isEmpty else {
                throw CoordinatorError("no usable checkpoint in \(checkpoints.path): every file is damaged (\(bad.map(\.path).joined(separator: ", "))). Move them away to start from the beginning.")
            }
            console.line("no checkpoint in \(checkpoints.path) yet; starting from the beginning")
        }
        var generator = SeededGenerator(seed: c.seed)
        let parameters = Network<Float>(sizes: c.sizes, uniformIn: -0.5...0.5, using: &generator).flattened()
        return TrainingState(parameters: parameters, optimizer: c.optimizer, epoch: 1, batchesDone: 0, step: 0,
                             epochGenerator: generator)
    }

    /// The batch's gradient sum, added along the shard tree, from the workers' sums (of single
    /// shards, or of nodes of the tree a worker added).
    /// `queued` runs once the parameters and the first tasks are handed to the links.
    private func gradient(of shards: [[Int]], parameters: [Float], step: Int, next nextShards: [[Int]]?,
                          timings: inout StepTimings, queued: () throws -> Void) async throws -> GradientReducer {
        let tasks = prepared?.step == step ? prepared!.tasks : Self.trainingTasks(shards, step: step)
        let next = nextShards.map { Self.trainingTasks($0, step: step + 1) } ?? []
        // Cut for the tasks sent ahead, and kept for the next step, which needs them at once.
        prepared = nextShards.map { (step + 1, $0, next) }
        var spare = [Float]()
        swap(&spare, &spareGradientSum)   // the reducer's, not shared (written over, never read first)
        // The tree's last addition is left to the optimizer, which adds the two halves as it
        // reads them (`Optimizer.apply(gradientSum:plus:)`).
        var reducer = GradientReducer(shardCount: shards.count, parameterCount: parameters.count, reusing: consume spare,
                                      spares: spareReducerBuffers, deferringLastAddition: true)
        spareReducerBuffers = []
        let started = timings.started
        var answers = 0
        var firstAnswer = 0.0, lastAnswer = 0.0, reducing = 0.0, queuedAt = 0.0
        /// Each worker's last accepted answer of the step.
        var lastByWorker: [Int: Double] = [:]
        defer {
            (timings.tasksQueued, timings.firstAnswer, timings.lastAnswer, timings.reduce) = (queuedAt, firstAnswer, lastAnswer, reducing)
            timings.answerSpread = (lastByWorker.values.max() ?? 0) - (lastByWorker.values.min() ?? 0)
        }
        try await runTasks(tasks, parameters: ParameterUpdate(step: UInt64(step), values: parameters), next: next,
                           queued: { queuedAt = (ContinuousClock.now - started).seconds; try queued() }) { covered, w, message in
            let arrived = ContinuousClock.now
            defer {
                let now = ContinuousClock.now
                reducing += (now - arrived).seconds
                if answers == 0 { firstAnswer = (arrived - started).seconds }
                lastAnswer = (arrived - started).seconds
                answers += 1
            }
            guard case .gradient(let g) = message else { return false }
            let what = covered.count == 1 ? "shard \(covered.lowerBound)" : "shards \(covered.lowerBound)-\(covered.upperBound - 1)"
            guard g.gradientValues.count == parameters.count, g.sampleCount == covered.reduce(0, { $0 + shards[$1].count }),
                  (0...g.sampleCount).contains(g.correctCount) else {
                console.line("worker \(address(w)) sent a result of the wrong shape for \(what) of step \(step); rejected, it is computed again")
                return false
            }
            guard ShardTree.level(of: covered, shardCount: shards.count) != nil else {
                console.line("worker \(address(w)) sent one sum for \(what) of step \(step), which the shard tree does not add together; rejected, computed again")
                return false
            }
            guard g.isFinite else {
                console.line("error: worker \(address(w)) sent a non-finite gradient (NaN or infinity) for \(what) of step \(step); rejected, it is computed again by another worker")
                return false
            }
            // Added from the frame's bytes, in place (no copy into an array).
            let values = g.gradientValues
            reducer.offer(shards: covered, .init(gradientCount: values.count, withGradient: { values.withUnsafeBufferPointer($0) },
                                                 lossSum: g.lossSum, correct: g.correctCount, count: g.sampleCount))
            lastByWorker[w] = (arrived - started).seconds
            return true
        }
        return reducer
    }

    /// A training step's tasks: shard `i` of the batch is task `i`.
    private static func trainingTasks(_ shards: [[Int]], step: Int) -> [ShardTask] {
        shards.enumerated().map { i, shard in
            ShardTask(step: UInt64(step), shardID: UInt32(i), kind: .train, dataset: .train,
                      samples: .indices(shard.map { UInt32($0) }))
        }
    }

    private func evaluate(_ parameters: [Float], step: Int) async throws -> Evaluation {
        let tasks = stride(from: 0, to: test.count, by: configuration.evalShardSize).enumerated().map { i, start in
            ShardTask(step: UInt64(step), shardID: UInt32(i), kind: .evaluate, dataset: .test,
                      samples: .range(start: start, count: min(configuration.evalShardSize, test.count - start)))
        }
        var parts = [Evaluation?](repeating: nil, count: tasks.count)
        try await runTasks(tasks, parameters: ParameterUpdate(step: UInt64(step), values: parameters)) { covered, _, message in
            let t = covered.lowerBound
            guard covered.count == 1, case .evaluation(let e) = message, e.sampleCount == tasks[t].samples.count,
                  (0...e.sampleCount).contains(e.correctCount) else { return false }
            parts[t] = Evaluation(lossSum: e.lossSum, correct: e.correctCount, count: e.sampleCount)
            return true
        }
        return parts.reduce(into: Evaluation()) { $0.add($1!) }
    }

    /// SHA-256 of the parameters' bytes (IEEE-754 float32, little-endian), in hex.
    static func sha256(of parameters: [Float]) -> String {
        let digest = parameters.withUnsafeBytes { SHA256.hash(data: $0) }
        return digest.map { String(format: "%02x", $0) }.joined()
    }
}

/// Where one step's time went, as the coordinator sees it (seconds since the step started,
/// except the two durations); written to the metrics in milliseconds.
struct StepTimings {
    let started: ContinuousClock.Instant
    /// The parameters and the first tasks handed to the links (they are encoded and written
    /// by the links' event loops afterwards).
    var tasksQueued = 0.0
    /// The first and the last gradient decoded and handed to the loop.
    var firstAnswer = 0.0
    var lastAnswer = 0.0
    /// Time spent checking and adding the shard sums (along the shard tree, as they arrive).
    var reduce = 0.0
    /// Time spent in the optimizer step (after the last answer).
    var optimizer = 0.0
    /// Between the first and the last worker's last answer of the step: how long the worker
    /// that finished first waited for the others (0 with one worker).
    var answerSpread = 0.0
    /// CPU time the coordinator process used during the step (all its threads, user and
    /// system): on a host shared with workers, time taken from them.
    var cpu = 0.0

    /// CPU time this process has used so far, in seconds.
    static func processCPUSeconds() -> Double {
        var now = timespec()
        clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &now)
        return Double(now.tv_sec) + Double(now.tv_nsec) * 1e-9
    }
}

/// A task's identity in answers: its step and shard.
private struct TaskKey: Hashable {
    var step: UInt64
    var shard: UInt32
    init(_ step: UInt64, _ shard: UInt32) {
        self.step = step
        self.shard = shard
    }
}

extension Duration {
    /// The duration in seconds.
    var seconds: Double {
        let (s, a) = components
        return Double(s) + Double(a) * 1e-18
    }
}
