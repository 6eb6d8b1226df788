import Engine
import Foundation
import Testing
import Training

/// The package root, three levels above this file.
private let packageRoot = URL(fileURLWithPath: #filePath)
    .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

@Suite("Training learns MNIST")
struct LearningTests {
    /// The tutorial's per-sample SGD on a subset: after one pass over 2000 training points
    /// the error on 1000 test points must fall far below chance (90%).
    @Test("a short per-sample run learns")
    func perSampleRunLearns() throws {
        let (train, test) = try MNIST.load(directory: packageRoot.appendingPathComponent("data/mnist").path)
        var generator = SeededGenerator(seed: 3)
        var net = Network<Float>(sizes: [784, 30, 10], uniformIn: -0.5...0.5, using: &generator)
        let before = Evaluation.evaluate(net, on: test, indices: Array(0..<1000)).errorRate
        for i in generator.permutation(train.count).prefix(2000) {
            let x = train.sampleVector(i, as: Float.self), t = train.oneHot(i, as: Float.self)
            let gradient = gradBP({ netErr(x, t, $0) }, net)
            net.add(gradient, scaledBy: -0.02)
        }
        let after = Evaluation.evaluate(net, on: test, indices: Array(0..<1000)).errorRate
        print("test error on 1000 points: \(before * 100)% before, \(after * 100)% after 2000 steps")
        #expect(after < 0.35, "error \(after) after training; before \(before)")
        #expect(after < before - 0.3)
    }

    /// Batched full-batch steps with Adam: the loss falls step after step on a fixed batch.
    @Test("batched steps with Adam lower the loss")
    func batchedStepsLowerTheLoss() throws {
        let (train, _) = try MNIST.load(directory: packageRoot.appendingPathComponent("data/mnist").path)
        var generator = SeededGenerator(seed: 5)
        let sizes = [784, 20, 10]
        var parameters = Network<Float>(sizes: sizes, uniformIn: -0.5...0.5, using: &generator).flattened()
        var optimizer = Optimizer(kind: .adam, learningRate: 0.01)
        let batch = Array(0..<500)
        var losses = [Double]()
        for _ in 0..<8 {
            let net = parameters.withUnsafeBufferPointer { Network<Float>(sizes: sizes, flattened: $0) }
            let result = ShardResult.compute(net, on: train, indices: batch)
            losses.append(result.lossSum / Double(result.count))
            let mean = result.gradient.flattened().map { $0 / Float(result.count) }
            optimizer.apply(gradient: mean, to: &parameters)
        }
        print("mean loss per step: \(losses)")
        #expect(losses.last! < losses.first! * 0.7, "losses \(losses)")
    }

    /// The sparse first layer (what MNIST batches take) against the dense one on the same
    /// samples: MNIST goes sparse, and the loss, predictions and gradient agree to Float rounding.
    @Test("an MNIST shard goes sparse and matches the dense first layer")
    func sparseShardMatchesDense() throws {
        let (train, _) = try MNIST.load(directory: packageRoot.appendingPathComponent("data/mnist").path)
        var generator = SeededGenerator(seed: 9)
        let net = Network<Float>(sizes: [784, 30, 10], uniformIn: -0.5...0.5, using: &generator)
        let indices = Array(generator.permutation(train.count).prefix(300))
        let input = train.batchInput(indices, as: Float.self)
        guard case .sparse(let x) = input else {
            Issue.record("an MNIST batch should be sparse")
            return
        }
        #expect(x.density > 0.1 && x.density < 0.3, "MNIST density \(x.density)")
        #expect(x.dense() == train.batchMatrix(indices, as: Float.self))
        let labels = train.batchLabels(indices)
        let sparse = backprop({ batchLoss($0, input, labels: labels) }, net)
        let dense = backprop({ batchLoss($0, .dense(x.dense()), labels: labels) }, net)
        #expect(abs(sparse.value - dense.value) <= 1e-4 * abs(dense.value), "loss \(sparse.value) vs \(dense.value)")
        let a = sparse.gradient.flattened(), b = dense.gradient.flattened()
        let diff = zip(a, b).reduce(Float(0)) { $0 + ($1.0 - $1.1) * ($1.0 - $1.1) }.squareRoot()
        let norm = b.reduce(Float(0)) { $0 + $1 * $1 }.squareRoot()
        #expect(diff <= 1e-5 * norm, "gradient relative difference \(diff / norm)")
        // A density limit below the batch's density takes the dense path.
        #expect(!train.batchInput(indices, as: Float.self, densityLimit: x.density / 2).isSparse)
    }
}
