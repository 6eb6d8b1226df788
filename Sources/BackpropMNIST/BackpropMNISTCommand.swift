// The tutorial's program: a 784-300-100-10 network trained on MNIST by per-sample gradient
// descent, the gradient found by the Engine from the error function alone.
import ArgumentParser
import Engine
import Foundation
import Training

// MARK: - Training, as in the tutorial

/// One step against the gradient of the error on one sample: `n - r * gradBP (netErr x t) n`.
/// (The network is consumed and updated in place rather than copied.)
func trainStep(_ rate: Float, _ x: Vector<Float>, _ target: Vector<Float>,
               _ net: consuming Network<Float>) -> Network<Float> {
    let gradient = gradBP({ netErr(x, target, $0) }, net)
    net.add(gradient, scaledBy: -rate)
    return net
}

/// `trainStep` over every sample of a batch, in order.
func trainList(_ rate: Float, _ samples: [Int], _ data: LabeledDataSet,
               _ net: consuming Network<Float>) -> Network<Float> {
    for i in samples {
        net = trainStep(rate, data.sampleVector(i), data.oneHot(i), consume net)
    }
    return net
}

/// The fraction of `samples` the network classifies correctly.
func testNet(_ samples: [Int], _ data: LabeledDataSet, _ net: Network<Float>) -> Double {
    1 - Evaluation.evaluate(net, on: data, indices: samples).errorRate
}

// MARK: - The command

@main
struct BackpropMNISTCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "backprop-mnist",
        abstract: "Train the tutorial's MNIST classifier with per-sample gradient descent.",
        discussion: """
            Each epoch shuffles the training set and trains on it in batches of 5000 points,
            one gradient step per point (rate 0.02); after each batch it prints the time the
            batch took, the error on that batch and the error on the test set.

            Examples:
              backprop-mnist --batches 1
              backprop-mnist --epochs 2 --seed 7 --data /path/to/mnist
              backprop-mnist --evaluate mnist.model
            """)

    @Option(help: "Directory with the MNIST IDX files (raw or .gz).")
    var data = "data/mnist"

    @Option(help: "Passes over the training set.")
    var epochs = 1

    @Option(help: "Stop after this many batches in all (default: no limit).")
    var batches: Int?

    @Option(help: "Seed for the initial weights and the shuffles (same seed, same run).")
    var seed: UInt64 = 1

    @Option(help: "Points per batch.")
    var batchSize = 5000

    @Option(help: "Learning rate of the per-sample steps.")
    var rate: Float = 0.02

    @Option(help: "Hidden layer sizes, comma-separated.")
    var hidden = "300,100"

    @Option(help: "OpenBLAS threads (the per-sample products are small: 1 is fastest).")
    var threads = 1

    @Option(help: "Score a saved model (coordinator --model-out) on the test set instead of training.")
    var evaluate: String?

    func validate() throws {
        guard epochs >= 1 else { throw ValidationError("--epochs must be at least 1, got \(epochs)") }
        if let b = batches, b < 1 { throw ValidationError("--batches must be at least 1, got \(b)") }
        guard batchSize >= 1 else { throw ValidationError("--batch-size must be at least 1, got \(batchSize)") }
        guard rate > 0, rate.isFinite else { throw ValidationError("--rate must be a positive number, got \(rate)") }
        guard threads >= 1 else { throw ValidationError("--threads must be at least 1, got \(threads)") }
        guard hiddenSizes != nil else {
            throw ValidationError("--hidden must be positive integers separated by commas, like 300,100; got '\(hidden)'")
        }
    }

    var hiddenSizes: [Int]? {
        let parts = hidden.split(separator: ",", omittingEmptySubsequences: false)
            .map { Int($0.trimmingCharacters(in: .whitespaces)) }
        guard !parts.isEmpty, parts.allSatisfy({ ($0 ?? 0) > 0 }) else { return nil }
        return parts.map { $0! }
    }

    func run() throws {
        let blas = BLASRuntime.prepareProcess(threads: threads)
        print(blas)
        let (train, test): (LabeledDataSet, LabeledDataSet)
        do {
            (train, test) = try MNIST.load(directory: data)
        } catch {
            throw ValidationError("\(error)")
        }
        print("Loaded data.")
        if let path = evaluate {
            let net = try ModelFile.load(from: path)
            guard net.sizes.first == test.featureCount, net.sizes.last == test.classCount else {
                throw ValidationError("\(path) is a \(net.sizes) network; the data has \(test.featureCount) inputs and \(test.classCount) classes")
            }
            let result = Evaluation.evaluate(net, on: test)
            print(String(format: "Test error: %.2f%% (%d of %d), mean cross-entropy %.4f",
                         result.errorRate * 100, result.count - result.correct, result.count, result.meanLoss))
            return
        }

        var rng = SeededGenerator(seed: seed)
        var net = Network<Float>(sizes: [train.featureCount] + hiddenSizes! + [train.classCount],
                                 uniformIn: -0.5...0.5, using: &rng)
        let testSet = Array(0..<test.count)
        var done = 0
        training: for epoch in 1...epochs {
            let shuffled = rng.permutation(train.count)
            print("[Epoch \(epoch)]")
            for (b, start) in stride(from: 0, to: shuffled.count, by: batchSize).enumerated() {
                if let limit = batches, done >= limit { break training }
                let chunk = Array(shuffled[start..<min(start + batchSize, shuffled.count)])
                print("(Batch \(b + 1))")
                let t0 = ContinuousClock.now
                net = trainList(rate, chunk, train, consume net)
                let elapsed = ContinuousClock.now - t0
                print("Trained on \(chunk.count) points in \(seconds(elapsed)).")
                let trainScore = testNet(chunk, train, net)
                let testScore = testNet(testSet, test, net)
                print(String(format: "Training error: %.2f%%", (1 - trainScore) * 100))
                print(String(format: "Validation error: %.2f%%", (1 - testScore) * 100))
                done += 1
            }
        }
    }
}

/// A duration as the tutorial shows one: seconds with a trailing "s".
func seconds(_ d: Duration) -> String {
    let s = Double(d.components.seconds) + Double(d.components.attoseconds) * 1e-18
    return String(format: "%.4fs", s)
}
