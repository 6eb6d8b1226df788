import ArgumentParser
import Engine
import Foundation
import Training

/// Measures the Engine on this machine: sgemm peak, a batched training step against it, the
/// AD overhead against hand-written gradients, and the per-sample step. Prints one line per
/// figure (medians of repeated runs) for BENCHMARKS.md.
@main
struct EngineBenchmarksCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "engine-bench",
        abstract: "Benchmark the Engine (run a release build: swift run -c release engine-bench).")

    @Option(help: "Directory with the MNIST IDX files.")
    var data = "data/mnist"

    @Option(help: "Repetitions of each batched measurement (the median is reported).")
    var repetitions = 15

    @Option(help: "BLAS thread counts to measure, comma-separated.")
    var threads = "1,2"

    /// The parts `--only` can pick.
    enum Part: String, CaseIterable, ExpressibleByArgument {
        case codec, aead, batched, sparse, perSample = "per-sample", countEngine = "count-engine", countHand = "count-hand"
    }

    @Option(help: "Measure only one part: codec, aead (frame protection), batched, sparse (first layer, sparse vs dense by density) or per-sample (default: all); count-engine or count-hand runs 200 per-sample gradients untimed, for bench/ad_instructions.sh.")
    var only: Part?

    @Option(help: "wall, or thread-cpu: the measuring thread's CPU time (for single-threaded figures on a busy machine).")
    var clock = "wall"

    @Option(help: "Layer sizes of the measured network, comma-separated, 784 inputs and 10 classes (a tiny network such as 784,8,8,10 shows the tape's own overhead, its arithmetic being negligible).")
    var sizes = "784,300,100,10"

    /// `sizes` as numbers (checked in `validate`).
    var layerSizes: [Int] { sizes.split(separator: ",").compactMap { Int($0) } }

    func validate() throws {
        guard ["wall", "thread-cpu"].contains(clock) else { throw ValidationError("--clock must be wall or thread-cpu, got '\(clock)'") }
        let parsed = layerSizes
        guard parsed.count == sizes.split(separator: ",", omittingEmptySubsequences: false).count, parsed.count >= 2,
              parsed.allSatisfy({ $0 > 0 }), parsed.first == 784, parsed.last == 10 else {
            throw ValidationError("--sizes must be positive layer sizes from 784 inputs to 10 classes, e.g. 784,300,100,10; got '\(sizes)'")
        }
    }

    func run() throws {
        measureThreadCPUTime = clock == "thread-cpu"
        print(BLASRuntime.prepareProcess())
        if only == nil || only == .aead {
            AEADBenchmark.run(repetitions: repetitions)
            try AEADBenchmark.pipelineStep(repetitions: repetitions)
        }
        if only == .aead { return }
        let (train, _) = try MNIST.load(directory: data)
        var rng = SeededGenerator(seed: 1)
        let net = Network<Float>(sizes: layerSizes, using: &rng)
        print("network \(layerSizes.map(String.init).joined(separator: "-"))")
        let batch = Array(rng.permutation(train.count).prefix(5000))
        let x = train.batchInput(batch, as: Float.self)
        let labels = train.batchLabels(batch)
        if only == nil || only == .codec {
            try CodecBenchmark.run(train: train, net: net, batch: batch, repetitions: repetitions)
        }
        if only == nil || only == .batched { batched(train: train, net: net, batch: batch, x: x, labels: labels) }
        if only == nil || only == .sparse { SparseLayerBenchmark.run(train: train, batch: batch, repetitions: repetitions) }
        if only == nil || only == .perSample { perSample(train: train, net: net, batch: batch) }
        if only == .countEngine || only == .countHand { PerSampleCount.run(engine: only == .countEngine, train: train, net: net, batch: batch) }
    }

    func batched(train: LabeledDataSet, net: Network<Float>, batch: [Int], x: BatchInput<Float>, labels: [Int]) {
        if case .sparse(let s) = x {
            print(String(format: "batch input: sparse, density %.1f%% (%d nonzeros)", 100 * s.density, s.nonzeroCount))
        } else {
            print("batch input: dense")
        }

        // FLOPs of one step: forward and weight gradients are one GEMM each per layer; input
        // gradients for every layer but the first.
        let sizes = net.sizes
        let weightsPerSample = zip(sizes, sizes.dropFirst()).reduce(0) { $0 + $1.0 * $1.1 }
        let inputGradPerSample = zip(sizes.dropFirst(), sizes.dropFirst(2)).reduce(0) { $0 + $1.0 * $1.1 }
        let stepFlops = 2.0 * 5000 * Double(2 * weightsPerSample + inputGradPerSample)

        for t in threads.split(separator: ",").compactMap({ Int($0) }) {
            BLASRuntime.setThreadCount(t)
            let a = Matrix<Float>(rows: 5000, columns: 784, repeating: 0.5)
            let b = Matrix<Float>(rows: 300, columns: 784, repeating: 0.25)
            let sgemm = median(repetitions) { _ = Matrix.matmul(a, b, transposeB: true) }
            let sgemmRate = 2.0 * 5000 * 784 * 300 / sgemm / 1e9
            print(String(format: "threads=%d sgemm 5000x784x300: %.2f ms, %.1f GFLOP/s", t, sgemm * 1e3, sgemmRate))

            let engine = median(repetitions) { blackHole(ShardResult.compute(net, on: train, indices: batch).gradient) }
            // One worker task (a shard of 1250): gathering its samples, its gradient, flattening it.
            let shard = Array(batch.prefix(1250))
            let gather = median(repetitions) { withExtendedLifetime(ShardResult<Float>.Input(train, indices: shard)) {} }
            let input = ShardResult<Float>.Input(train, indices: shard)
            let shardGradient = median(repetitions) { blackHole(ShardResult.compute(net, on: input).gradient) }
            let g = ShardResult.compute(net, on: input).gradient
            var flat = [Float](repeating: 0, count: g.parameterCount)
            let flatten = median(repetitions) { flat.withUnsafeMutableBufferPointer { g.flatten(into: $0) }; if flat[0].isNaN { print("") } }
            print(String(format: "threads=%d shard of 1250: gather %.3f ms, gradient %.3f ms, flatten %.3f ms", t, gather * 1e3, shardGradient * 1e3, flatten * 1e3))
            // Engine and hand-written alternate round after round; the ratio is the median of
            // the rounds' ratios (drift on a shared machine hits both alike).
            var engineTimes = [Double](), handTimes = [Double](), ratios = [Double]()
            for _ in 0..<repetitions {
                let e = median(1) {
                    blackHole(backprop({ (n: BVar<Network<Float>>) in batchLoss(n, x, labels: labels) }, net).gradient)
                }
                let h = median(1) { blackHole(HandWrittenGradients.batch(net, x, labels)) }
                engineTimes.append(e)
                handTimes.append(h)
                ratios.append(e / h)
            }
            let engineGradientOnly = engineTimes.sorted()[repetitions / 2]
            let hand = handTimes.sorted()[repetitions / 2]
            let ratio = ratios.sorted()[repetitions / 2]
            var stepNet = net
            let fullStep = median(repetitions) {
                let r = ShardResult.compute(stepNet, on: train, indices: batch)
                stepNet.add(r.gradient, scaledBy: -0.1 / 5000)
            }
            // The same step with the first layer dense (what every batch took before the sparse
            // first layer), alternating with the sparse one, for the ratio in the same run.
            var denseTimes = [Double](), sparseTimes = [Double]()
            for _ in 0..<repetitions {
                denseTimes.append(median(1) {
                    let y = train.batchMatrix(batch, as: Float.self)
                    blackHole(backprop({ (n: BVar<Network<Float>>) in batchLoss(n, BatchInput.dense(y), labels: labels) }, net).gradient)
                })
                sparseTimes.append(median(1) { blackHole(ShardResult.compute(net, on: train, indices: batch).gradient) })
            }
            let denseStep = denseTimes.sorted()[repetitions / 2], sparseStep = sparseTimes.sorted()[repetitions / 2]
            print(String(format: "threads=%d batched step (5000 points, gather + forward + backward + SGD update): %.2f ms, %.1f dense-equivalent GFLOP/s = %.0f%% of sgemm (sgemm %.2f ms, %.1f GFLOP/s)",
                         t, fullStep * 1e3, stepFlops / fullStep / 1e9, 100 * stepFlops / fullStep / 1e9 / sgemmRate,
                         sgemm * 1e3, sgemmRate))
            print(String(format: "threads=%d gather + gradient, first layer dense GEMMs %.2f ms vs as chosen (", t, denseStep * 1e3)
                  + (x.isSparse ? "sparse" : "dense")
                  + String(format: ") %.2f ms: %.2fx (medians of %d alternating rounds)", sparseStep * 1e3, denseStep / sparseStep, repetitions))
            print(String(format: "threads=%d batched gradient: engine %.2f ms (with data gather %.2f ms), hand-written %.2f ms, ratio %.3f (median of %d alternating rounds)",
                         t, engineGradientOnly * 1e3, engine * 1e3, hand * 1e3, ratio, repetitions))
        }

    }

    func perSample(train: LabeledDataSet, net: Network<Float>, batch: [Int]) {
        BLASRuntime.setThreadCount(1)
        let samples = Array(batch.prefix(1000))
        let xs = samples.map { train.sampleVector($0, as: Float.self) }
        let ts = samples.map { train.oneHot($0, as: Float.self) }
        let ls = samples.map { train.label(of: $0) }
        // Engine and hand-written loops alternate, round after round, so that drift on a
        // shared machine hits both; the ratio is the median of the rounds' ratios. Gradients
        // are kept without reading the weight gradients' entries: an outer product that is
        // never read is never written out, by the Engine or by hand (`Matrix.outer`).
        var engineTimes = [Double](), handTimes = [Double](), ratios = [Double]()
        for _ in 0..<9 {
            let e = median(1) { for i in xs.indices { keepGradient(gradBP({ netErr(xs[i], ts[i], $0) }, net)) } }
            let h = median(1) { for i in xs.indices { keepGradient(HandWrittenGradients.sample(net, xs[i], ls[i])) } }
            engineTimes.append(e / Double(samples.count))
            handTimes.append(h / Double(samples.count))
            ratios.append(e / h)
        }
        let perSampleEngine = engineTimes.sorted()[4], perSampleHand = handTimes.sorted()[4]
        let perSampleRatio = ratios.sorted()[4]
        // The SGD step, gradient and update, as backprop-mnist takes it: Engine and
        // hand-written gradient alternate (each updates its own copy of the network).
        var engineNet = net, handNet = net
        var engineSteps = [Double](), handSteps = [Double](), stepRatios = [Double]()
        for _ in 0..<9 {
            let e = median(1) {
                for i in xs.indices {
                    let g = gradBP({ netErr(xs[i], ts[i], $0) }, engineNet)
                    engineNet.add(g, scaledBy: -0.02)
                }
            }
            let h = median(1) {
                for i in xs.indices {
                    let g = HandWrittenGradients.sample(handNet, xs[i], ls[i])
                    handNet.add(g, scaledBy: -0.02)
                }
            }
            engineSteps.append(e / Double(samples.count))
            handSteps.append(h / Double(samples.count))
            stepRatios.append(e / h)
        }
        // A primitive made in this module, outside the Engine, on one field of the network:
        // the cost of recording and running a user-defined op in a gradient call.
        let bias = net.layers.count - 1
        let custom = median(9) {
            for _ in xs.indices { keepGradient(gradBP({ firstEntry($0[networkLayers][bias][layerBiases]) }, net)) }
        } / Double(samples.count)
        let perSampleStep = engineSteps.sorted()[4], handStep = handSteps.sorted()[4]
        print(String(format: "threads=1 per-sample gradient: engine %.1f us, hand-written %.1f us, ratio %.3f (median of 9 alternating rounds)",
                     perSampleEngine * 1e6, perSampleHand * 1e6, perSampleRatio))
        print(String(format: "threads=1 per-sample SGD step (gradient + update): engine %.1f us, hand-written %.1f us, ratio %.3f (median of 9 alternating rounds); engine %.3f s per 5000 points",
                     perSampleStep * 1e6, handStep * 1e6, stepRatios.sorted()[4], perSampleStep * 5000))
        print(String(format: "threads=1 a primitive made outside the Engine (op1, first entry of the last layer's biases): gradient of the network %.2f us a call (median of 9)",
                     custom * 1e6))
    }
}

/// The network's layers and a layer's biases as lenses, made once.
private let networkLayers = StoredField(\Network<Float>.layers)
private let layerBiases = StoredField(\Layer<Float>.biases)

/// The first entry of a vector: a primitive made with `op1` in this module, as a user of the
/// Engine would write one.
func firstEntry(_ v: BVar<Vector<Float>>) -> BVar<Float> {
    op1 { (v: Vector<Float>) in
        (v[0], { g in Vector(count: v.count) { d in d.initialize(repeating: 0); d[0] = g } })
    }(v)
}

/// Keeps a per-sample gradient alive without reading its weight entries (reading them would
/// write out the pending outer products, work no per-sample step does).
@inline(never) @_optimize(none)
func keepGradient(_ network: Network<Float>) {
    var total: Float = 0
    for layer in network.layers { total += layer.biases[0] + Float(layer.weights.count) }
    if total.isNaN { print("", terminator: "") }
}

/// What `median` measures: wall time, or (`--clock thread-cpu`) the CPU time of the calling
/// thread, which leaves out the time the thread waited for a core on a busy machine (only for
/// single-threaded work: BLAS threads' time is not counted).
nonisolated(unsafe) var measureThreadCPUTime = false

/// Now, in nanoseconds, on the clock `median` uses.
func clockNanoseconds() -> UInt64 {
    guard measureThreadCPUTime else { return DispatchTime.now().uptimeNanoseconds }
    var t = timespec()
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t)
    return UInt64(t.tv_sec) * 1_000_000_000 + UInt64(t.tv_nsec)
}

/// Median time of `count` runs of `body`, in seconds (after one warm-up run).
func median(_ count: Int, _ body: () -> Void) -> Double {
    body()
    var times = [Double]()
    for _ in 0..<count {
        let start = clockNanoseconds()
        body()
        times.append(Double(clockNanoseconds() - start) * 1e-9)
    }
    times.sort()
    return times[times.count / 2]
}

/// Keeps a result alive so that the optimiser cannot drop the work that made it (a gradient
/// that is never read could otherwise be optimised away, in the hand-written code especially).
@inline(never) @_optimize(none)
func blackHole(_ network: Network<Float>) {
    var total: Float = 0
    for layer in network.layers {
        total += layer.weights[layer.weights.rows - 1, layer.weights.columns - 1] + layer.biases[0]
    }
    if total.isNaN { print("", terminator: "") }
}
