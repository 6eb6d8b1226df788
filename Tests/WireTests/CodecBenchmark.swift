#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import NIOCore
import Testing
@testable import Wire

/// Size and speed of the float codec, printed, not asserted. Run in a release build:
///
///     WIRE_BENCH=1 [WIRE_BENCH_MNIST=DIR] swift test -c release --scratch-path .build-wire --filter CodecBenchmark
///
/// Data: 266,610 floats (the 784-300-100-10 model). Synthetic: N(0, 1e-3) with 17% exact zeros
/// scattered at random (a hard case: real zeros come in runs). Real, when `WIRE_BENCH_MNIST` names
/// a directory holding the uncompressed `train-images-idx3-ubyte` and `train-labels-idx1-ubyte`:
/// the gradient sum of a 500-sample shard of the tutorial's network (logistic hidden layers,
/// softmax, cross-entropy; uniform(-0.5, 0.5) initialisation; parameters flattened per layer as
/// weights `inputs x outputs` row-major then biases), at initialisation and after 30 SGD steps.
@Suite("Codec benchmark", .serialized, .enabled(if: getenv("WIRE_BENCH") != nil, "a benchmark, not a test: runs only with WIRE_BENCH=1 (engine-bench --only codec measures the codec for BENCHMARKS.md)"))
struct CodecBenchmark {
    private static func now() -> Double {
        var time = timespec()
        clock_gettime(CLOCK_MONOTONIC, &time)
        return Double(time.tv_sec) + Double(time.tv_nsec) * 1e-9
    }

    /// Best of `repeats` runs of `body`, in seconds.
    private static func best(_ repeats: Int, _ body: () throws -> Void) rethrows -> Double {
        var best = Double.infinity
        for _ in 0..<repeats {
            let start = now()
            try body()
            best = min(best, now() - start)
        }
        return best
    }

    private static func measure(_ name: String, _ values: [Float]) throws {
        let rawBytes = Double(4 * values.count)
        let megabytes = rawBytes / 1e6
        let zeros = values.filter { $0 == 0 }.count
        print("\(name): \(values.count) floats, \(format(100 * Double(zeros) / Double(values.count)))% zeros")
        for level in [Int32(-2), 1, 3] {
            for encoding in [FloatEncoding.zstd, .shuffledZstd, .splitZstd] {
                let codec = PayloadCodec(.init(floatEncoding: encoding, level: CompressionLevel(level)))
                var encoded = ByteBuffer()
                try codec.encodeFloats(values, into: &encoded)
                let compress = try best(30) {
                    var buffer = ByteBuffer()
                    buffer.reserveCapacity(encoded.readableBytes + 1024)
                    try codec.encodeFloats(values, into: &buffer)
                }
                var decoded: [Float] = []
                let decompress = try best(30) {
                    var buffer = encoded
                    decoded = try codec.decodeFloats(from: &buffer, expectedCount: values.count)
                }
                #expect(decoded.map(\.bitPattern) == values.map(\.bitPattern))
                print(
                    "  \(encoding) level \(level): \(encoded.readableBytes) bytes, ratio \(format(rawBytes / Double(encoded.readableBytes)))x, "
                        + "compress \(format(megabytes / compress)) MB/s, decompress \(format(megabytes / decompress)) MB/s")
            }
        }
    }

    @Test func syntheticGradient() throws {
        try Self.measure("synthetic N(0, 1e-3), 17% zeros", gradientLikeValues(count: 266_610))
    }

    @Test func mnistGradient() throws {
        guard let directory = getenv("WIRE_BENCH_MNIST").map({ String(cString: $0) }) else {
            print("mnist gradient: set WIRE_BENCH_MNIST to a directory of uncompressed MNIST files")
            return
        }
        let images = try #require(readFile("\(directory)/train-images-idx3-ubyte"))
        let labels = try #require(readFile("\(directory)/train-labels-idx1-ubyte"))
        var network = ShardGradientModel(sizes: [784, 300, 100, 10], seed: 1)
        let shard = 500
        let first = network.gradientSum(images: images, labels: labels, samples: 0..<shard)
        try Self.measure("mnist gradient sum, 500 samples, at initialisation", first)
        for step in 1...30 {
            let start = (step * shard) % 60_000
            network.descend(network.gradientSum(images: images, labels: labels, samples: start..<(start + shard)), rate: 0.5 / Float(shard))
        }
        try Self.measure("mnist gradient sum, 500 samples, after 30 SGD steps", network.gradientSum(images: images, labels: labels, samples: 30_000..<30_500))
    }

    @Test func shuffleFilter() throws {
        let values = gradientLikeValues(count: 4 << 20)
        var planes = [UInt8](repeating: 0, count: 4 * values.count)
        var back = [Float](repeating: 0, count: values.count)
        let megabytes = Double(4 * values.count) / 1e6
        let shuffle = Self.best(10) {
            values.withUnsafeBytes { source in
                planes.withUnsafeMutableBytes { ByteShuffle.shuffle(source.baseAddress!, count: values.count, into: $0.baseAddress!) }
            }
        }
        let unshuffle = Self.best(10) {
            planes.withUnsafeBytes { source in
                back.withUnsafeMutableBytes { ByteShuffle.unshuffle(source.baseAddress!, count: values.count, into: $0.baseAddress!) }
            }
        }
        #expect(back.map(\.bitPattern) == values.map(\.bitPattern))
        print("byte shuffle alone (16.8 MB): shuffle \(format(megabytes / shuffle)) MB/s, unshuffle \(format(megabytes / unshuffle)) MB/s")
    }
}

private func format(_ value: Double) -> String {
    "\((value * 100).rounded() / 100)"
}

private func readFile(_ path: String) -> [UInt8]? {
    guard let file = fopen(path, "rb") else { return nil }
    defer { fclose(file) }
    var bytes: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 1 << 20)
    while true {
        let count = chunk.withUnsafeMutableBytes { fread($0.baseAddress, 1, $0.count, file) }
        if count == 0 { break }
        bytes.append(contentsOf: chunk[0..<count])
    }
    return bytes
}

/// The tutorial's network written out by hand, only to produce realistic gradients for the
/// benchmark (the real one is the Engine's). Weights are `inputs x outputs`, row-major, as `Layer` stores them.
private struct ShardGradientModel {
    var sizes: [Int]
    var weights: [[Float]]
    var biases: [[Float]]

    init(sizes: [Int], seed: UInt64) {
        var rng = SeededGenerator(seed: seed)
        self.sizes = sizes
        weights = zip(sizes, sizes.dropFirst()).map { inputs, outputs in
            (0..<(inputs * outputs)).map { _ in Float.random(in: -0.5..<0.5, using: &rng) }
        }
        biases = sizes.dropFirst().map { outputs in (0..<outputs).map { _ in Float.random(in: -0.5..<0.5, using: &rng) } }
    }

    /// The flat gradient sum (per layer: weights, then biases) over `samples`.
    func gradientSum(images: [UInt8], labels: [UInt8], samples: Range<Int>) -> [Float] {
        let layers = weights.count
        var gradW = weights.map { [Float](repeating: 0, count: $0.count) }
        var gradB = biases.map { [Float](repeating: 0, count: $0.count) }
        for sample in samples {
            // Forward.
            var activations: [[Float]] = [(0..<784).map { Float(images[16 + sample * 784 + $0]) / 255 }]
            for layer in 0..<layers {
                let inputs = sizes[layer], outputs = sizes[layer + 1]
                let x = activations[layer]
                var z = biases[layer]
                weights[layer].withUnsafeBufferPointer { w in
                    for o in 0..<outputs {
                        var sum: Float = 0
                        for i in 0..<inputs { sum += w[i * outputs + o] * x[i] }
                        z[o] += sum
                    }
                }
                if layer == layers - 1 {
                    let top = z.max()!
                    let e = z.map { exp($0 - top) }
                    let total = e.reduce(0, +)
                    activations.append(e.map { $0 / total })
                } else {
                    activations.append(z.map { 1 / (1 + exp(-$0)) })
                }
            }
            // Backward.
            var delta = activations[layers]
            delta[Int(labels[8 + sample])] -= 1
            for layer in stride(from: layers - 1, through: 0, by: -1) {
                let inputs = sizes[layer], outputs = sizes[layer + 1]
                let x = activations[layer]
                gradW[layer].withUnsafeMutableBufferPointer { g in
                    for o in 0..<outputs where delta[o] != 0 {
                        for i in 0..<inputs { g[i * outputs + o] += delta[o] * x[i] }
                    }
                }
                for o in 0..<outputs { gradB[layer][o] += delta[o] }
                if layer > 0 {
                    var previous = [Float](repeating: 0, count: inputs)
                    weights[layer].withUnsafeBufferPointer { w in
                        for o in 0..<outputs {
                            for i in 0..<inputs { previous[i] += w[i * outputs + o] * delta[o] }
                        }
                    }
                    delta = (0..<inputs).map { previous[$0] * x[$0] * (1 - x[$0]) }
                }
            }
        }
        var flat: [Float] = []
        for layer in 0..<layers {
            flat += gradW[layer]
            flat += gradB[layer]
        }
        return flat
    }

    mutating func descend(_ gradient: [Float], rate: Float) {
        var offset = 0
        for layer in 0..<weights.count {
            for index in weights[layer].indices { weights[layer][index] -= rate * gradient[offset + index] }
            offset += weights[layer].count
            for index in biases[layer].indices { biases[layer][index] -= rate * gradient[offset + index] }
            offset += biases[layer].count
        }
    }
}
