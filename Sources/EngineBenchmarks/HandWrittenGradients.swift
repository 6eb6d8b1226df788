import Engine
import Training

/// The gradient of the summed cross-entropy of the same network, written out by hand with the
/// same tensor operations the Engine uses: the baseline for the AD overhead.
enum HandWrittenGradients {
    /// Batched: one sample per row of `x`; a sparse batch goes through the same sparse kernels
    /// as the Engine's `sparseAffine` in the first layer.
    static func batch(_ net: Network<Float>, _ input: BatchInput<Float>, _ labels: [Int]) -> Network<Float> {
        var sparse: SparseMatrix<Float>?
        var activations: [Matrix<Float>]
        switch input {
        case .dense(let x): activations = [x]
        case .sparse(let x): sparse = x; activations = [Matrix<Float>.zeros(rows: x.rows, columns: x.columns)]
        }
        for (i, layer) in net.layers.enumerated() {
            let z = if i == 0, let x = sparse {
                x.affine(layer.weights, layer.biases)
            } else {
                Matrix.matmul(activations[i], layer.weights).addingToEachRow(layer.biases)
            }
            activations.append(i == net.layers.count - 1 ? z.softMaxRows() : z.logistic())
        }
        var delta = activations.last!
        let c = delta.columns
        delta.withUnsafeMutableBufferPointer { d in
            for (i, label) in labels.enumerated() { d[i * c + label] -= 1 }
        }
        var gradient = net
        for i in stride(from: net.layers.count - 1, through: 0, by: -1) {
            let weights = if i == 0, let x = sparse {
                x.weightGradient(delta)
            } else {
                Matrix.matmul(activations[i], delta, transposeA: true)
            }
            gradient.layers[i] = Layer(weights: weights, biases: delta.columnSums())
            if i > 0 {
                let h = activations[i]
                delta = Matrix.matmul(delta, net.layers[i].weights, transposeB: true).logisticPullback(result: h)
            }
        }
        return gradient
    }

    /// One sample. Each layer's input is put in its `SparseEntries` form once, for the product
    /// and for the weight gradient, as the Engine's `transposedMatvec` primitive does.
    static func sample(_ net: Network<Float>, _ x: Vector<Float>, _ label: Int) -> Network<Float> {
        var activations = [x]
        var inputs: [SparseEntries<Float>] = []
        for (i, layer) in net.layers.enumerated() {
            inputs.append(SparseEntries(activations[i]))
            let z = layer.weights.transposedMatvec(inputs[i], plus: layer.biases)
            activations.append(i == net.layers.count - 1 ? z.softMax() : z.logistic())
        }
        var delta = activations.last!
        delta[label] -= 1
        var gradient = net
        for i in stride(from: net.layers.count - 1, through: 0, by: -1) {
            gradient.layers[i] = Layer(weights: Matrix.outer(inputs[i], delta), biases: delta)
            if i > 0 {
                let h = activations[i]
                delta = net.layers[i].weights.matvec(SparseEntries(dense: delta)).logisticPullback(result: h)
            }
        }
        return gradient
    }
}
