import Engine
import Training

/// The first layer alone (forward and weight gradient, 5000 x 784 -> 300), sparse kernels
/// against the dense GEMMs, on MNIST and on random inputs of growing density: where the
/// sparse path stops paying (`BatchInput.sparseDensityLimit`).
enum SparseLayerBenchmark {
    static func run(train: LabeledDataSet, batch: [Int], repetitions: Int) {
        var rng = SeededGenerator(seed: 7)
        let w = Matrix<Float>(rows: 784, columns: 300) { for i in 0..<$0.count { $0[i] = rng.uniform(-0.5...0.5) } }
        let b = Vector<Float>(count: 300) { for i in 0..<$0.count { $0[i] = rng.uniform(-0.5...0.5) } }
        let g = Matrix<Float>(rows: 5000, columns: 300) { for i in 0..<$0.count { $0[i] = rng.uniform(-0.01...0.01) } }
        let mnist = train.batchSparse(batch, as: Float.self)!
        var inputs: [(String, SparseMatrix<Float>)] = [(String(format: "MNIST (%.1f%%)", 100 * mnist.density), mnist)]
        for density in [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 1.0] {
            let x = Matrix<Float>(rows: 5000, columns: 784) { out in
                for i in 0..<out.count { out[i] = rng.uniform(0...1) < Float(density) ? rng.uniform(0.01...1) : 0 }
            }
            inputs.append((String(format: "random %.0f%%", 100 * density), SparseMatrix(x)))
        }
        for t in [1, 2] {
            BLASRuntime.setThreadCount(t)
            for (name, x) in inputs {
                let d = x.dense()
                var dense = [Double](), sparse = [Double](), forward = [Double](), gradient = [Double]()
                for _ in 0..<max(repetitions / 3, 3) {
                    dense.append(median(1) {
                        sink(Matrix.affine(d, w, b))
                        sink(Matrix.matmul(d, g, transposeA: true))
                    })
                    forward.append(median(1) { sink(x.affine(w, b)) })
                    gradient.append(median(1) { sink(x.weightGradient(g)) })
                    sparse.append(forward.last! + gradient.last!)
                }
                let med = { (a: [Double]) in a.sorted()[a.count / 2] * 1e3 }
                if name.hasPrefix("MNIST") {
                    // Building the batch: the gather, then each 64-row block's nonzeros sorted by
                    // column (read by both kernels); part of every sparse step, not in the above.
                    let build = (0..<max(repetitions / 3, 3)).map { _ in
                        median(1) { blackHoleSparse(train.batchSparse(batch, as: Float.self)!) }
                    }
                    print("threads=\(t) MNIST batch build (gather + column sort): \(fmt(med(build))) ms")
                }
                print("threads=\(t) first layer \(name): dense GEMMs \(fmt(med(dense))) ms, sparse \(fmt(med(sparse))) ms "
                      + "(forward \(fmt(med(forward))), weight gradient \(fmt(med(gradient)))), dense/sparse \(fmt(med(dense) / med(sparse)))x")
            }
        }
    }

    static func fmt(_ x: Double) -> String { String(format: "%.2f", x) }

    @inline(never) @_optimize(none)
    static func blackHoleSparse(_ x: SparseMatrix<Float>) {
        if x.nonzeroCount < 0 { print("", terminator: "") }
    }

    @inline(never) @_optimize(none)
    static func sink(_ m: Matrix<Float>) {
        if m[m.rows - 1, m.columns - 1].isNaN { print("", terminator: "") }
    }
}
