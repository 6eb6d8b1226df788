import Engine
import Training

/// Per-sample gradients for an instruction counter (`bench/ad_instructions.sh`, valgrind's
/// callgrind): 200 gradients to warm up, then 200 inside `measured`, the one function whose
/// instructions are counted. Instruction counts do not drift with the load of a shared
/// machine, so they show the Engine's own work beside the hand-written gradient's exactly,
/// where timings move by 10-30% from run to run.
enum PerSampleCount {
    static let counted = 200

    static func run(engine: Bool, train: LabeledDataSet, net: Network<Float>, batch: [Int]) {
        BLASRuntime.setThreadCount(1)
        let samples = Array(batch.prefix(2 * counted))
        let xs = samples.map { train.sampleVector($0, as: Float.self) }
        let ts = samples.map { train.oneHot($0, as: Float.self) }
        let ls = samples.map { train.label(of: $0) }
        let gradient: (Int) -> Network<Float> = engine
            ? { i in gradBP({ netErr(xs[i], ts[i], $0) }, net) }
            : { i in HandWrittenGradients.sample(net, xs[i], ls[i]) }
        for i in 0..<counted { keepGradient(gradient(i)) }
        measured(gradient)
        print("\(engine ? "engine" : "hand-written") per-sample gradients: \(counted) counted")
    }

    /// The counted gradients (the name is what the script tells callgrind to count).
    @inline(never)
    static func measured(_ gradient: (Int) -> Network<Float>) {
        for i in counted..<(2 * counted) { keepGradient(gradient(i)) }
    }
}
