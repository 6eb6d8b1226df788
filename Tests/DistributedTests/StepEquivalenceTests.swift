import Engine
import Foundation
import TestSupport
import Testing
import Training

/// One distributed step is the Engine's single-process step on the same batch.
///
/// The test mirrors `Sources/Coordinator/TrainingRun.swift` (`trainEpochs`): seeded init, the
/// epoch's shuffle from the same generator, fixed-size shards, shard sums added along the shard
/// tree (the workers add pairs: the same bits),
/// mean = sum * (1 / count), `Optimizer.apply`; and the worker's side
/// (`Sources/Worker/WorkerState.swift`): the network rebuilt from the flat parameters,
/// `ShardResult.compute` on one BLAS thread.
@Suite("One distributed step against the Engine", .oneProcessTestAtATime)
struct StepEquivalenceTests {
    static let seed: UInt64 = 11
    static let learningRate: Float = 0.5
    static let hidden = 20
    static let batchSize = 600
    static let shardSize = 150

    @Test("coordinator --max-steps 1 equals the shard sums reproduced in-process (bits) and the whole-batch gradient (1e-4)")
    func oneStepMatchesEngine() async throws {
        // Bit equality needs the same OpenBLAS kernel in the workers as in this process: pass
        // this process's kernel on (the coordinator hands a user-set OPENBLAS_CORETYPE to its
        // local workers unchanged).
        let kernel = BLASRuntime.coreName
        let directory = try temporaryDirectory("step")
        defer { try? FileManager.default.removeItem(at: directory) }
        let modelPath = directory.appendingPathComponent("step.model").path
        let metricsPath = directory.appendingPathComponent("step.jsonl").path
        let outcome = try await TinyRun.coordinator([
            "--local", "2", "--seed", String(Self.seed), "--optimizer", "sgd",
            "--learning-rate", String(Self.learningRate), "--hidden", String(Self.hidden),
            "--batch-size", String(Self.batchSize), "--shard-size", String(Self.shardSize),
            "--max-steps", "1", "--model-out", modelPath, "--metrics", metricsPath,
        ], environment: ["OPENBLAS_CORETYPE": kernel])
        try #require(outcome.status == 0 && !outcome.timedOut, "\(outcome)")
        print("[DistributedTests] this process: OpenBLAS \(kernel); workers: "
              + outcome.stdout.split(separator: "\n").filter { $0.contains(" ready: ") }.joined(separator: " | "))
        #expect(outcome.stdout.contains("OpenBLAS \(kernel),"), "the workers did not run the kernel of this process (\(kernel)):\n\(outcome)")
        let trained = try ModelFile.load(from: modelPath)
        let metrics = try MetricsFile(path: metricsPath)

        // The coordinator's side, step 1.
        let (train, _) = try MNIST.load(directory: Products.mnistDirectory)
        let sizes = [train.featureCount, Self.hidden, train.classCount]
        var generator = SeededGenerator(seed: Self.seed)
        let initial = Network<Float>(sizes: sizes, uniformIn: -0.5...0.5, using: &generator).flattened()
        let plan = EpochPlan(sampleCount: train.count, batchSize: Self.batchSize, generator: &generator)
        let batch = plan.batches[0]
        let shards = ShardPlan(batch: batch, shardSize: Self.shardSize).shards
        #expect(shards.count == Self.batchSize / Self.shardSize)
        // The worker's side: the network as it rebuilds it from the parameter message.
        let network = initial.withUnsafeBufferPointer { Network<Float>(sizes: sizes, flattened: $0) }

        let previousThreads = BLASRuntime.threadCount
        BLASRuntime.setThreadCount(1)   // as in the worker
        defer { BLASRuntime.setThreadCount(previousThreads) }
        var reducer = GradientReducer(shardCount: shards.count, parameterCount: initial.count)
        // Offered last shard first: the reducer must still add them in the tree's order.
        for (index, shard) in shards.enumerated().reversed() {
            let r = ShardResult.compute(network, on: train, indices: shard)
            reducer.offer(shard: index, .init(gradient: r.gradient.flattened(), lossSum: r.lossSum,
                                              correct: r.correct, count: r.count))
        }
        #expect(reducer.isComplete)
        let scale = 1 / Float(reducer.sampleCount)
        let shardedMean = reducer.gradientSum.map { $0 * scale }
        var optimizer = Optimizer(kind: .sgd, learningRate: Self.learningRate)
        var sharded = initial
        optimizer.apply(gradient: shardedMean, to: &sharded)

        // 1. The model file holds exactly those bits.
        #expect(trained.sizes == sizes)
        let fromFile = trained.flattened()
        try #require(fromFile.count == sharded.count)
        let mismatches = zip(fromFile, sharded).enumerated().filter { $0.element.0.bitPattern != $0.element.1.bitPattern }
        #expect(mismatches.isEmpty, """
            \(mismatches.count) of \(sharded.count) parameters differ from the in-process sharded step; first: \
            \(mismatches.prefix(5).map { "[\($0.offset)] file \($0.element.0) vs \($0.element.1)" }.joined(separator: ", "))
            """)
        #expect(zip(fromFile, initial).contains { $0.bitPattern != $1.bitPattern }, "the step did not change the parameters")
        // The metrics' loss and training error are the reducer's sums.
        #expect(metrics.steps.count == 1, "--max-steps 1 took \(metrics.steps.count) steps")
        let step = try #require(metrics.steps.first)
        #expect(step.loss == reducer.lossSum / Double(reducer.sampleCount), "metrics \(step)")
        #expect(step.train_error == 1 - Double(reducer.correct) / Double(reducer.sampleCount), "metrics \(step)")

        // 2. The whole batch in one pass gives the same gradient up to float rounding.
        let whole = ShardResult.compute(network, on: train, indices: batch)
        let wholeMean = whole.gradient.flattened().map { $0 * scale }
        let largest = wholeMean.reduce(Float(0)) { max($0, abs($1)) }
        let worst = zip(shardedMean, wholeMean).enumerated().max { abs($0.element.0 - $0.element.1) < abs($1.element.0 - $1.element.1) }!
        let worstDifference = abs(worst.element.0 - worst.element.1)
        print("[DistributedTests] sharded vs whole-batch mean gradient: largest |g| \(largest), "
              + "largest difference \(worstDifference) at [\(worst.offset)]")
        #expect(largest > 0)
        #expect(worstDifference <= 1e-4 * largest,
                "gradient [\(worst.offset)]: sharded \(worst.element.0), whole batch \(worst.element.1), largest |g| \(largest)")
        #expect(abs(whole.lossSum - reducer.lossSum) <= 1e-4 * abs(whole.lossSum),
                "loss sum: whole batch \(whole.lossSum), shards \(reducer.lossSum)")
        #expect(whole.count == reducer.sampleCount)

        var wholeStep = initial
        var wholeOptimizer = Optimizer(kind: .sgd, learningRate: Self.learningRate)
        wholeOptimizer.apply(gradient: wholeMean, to: &wholeStep)
        let far = zip(fromFile, wholeStep).enumerated().filter { abs($0.element.0 - $0.element.1) > 1e-4 * max(abs($0.element.0), abs($0.element.1), 1e-3) }
        #expect(far.isEmpty, """
            \(far.count) parameters differ from the whole-batch step by more than 1e-4 (relative); first: \
            \(far.prefix(5).map { "[\($0.offset)] file \($0.element.0) vs \($0.element.1)" }.joined(separator: ", "))
            """)
    }
}
