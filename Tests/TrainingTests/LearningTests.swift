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
}
