import Engine

/// One fully connected layer: `weights` (inputs x outputs) and `biases` (outputs).
///
/// The weights are stored by input, row `j` holding input `j`'s weight to every output (the
/// layout of `x * W` for a batch of row samples). A sparse input, such as an image with most
/// pixels black, then touches only the rows of its nonzero inputs, each one contiguous run of
/// weights, in the forward product and in a per-sample descent step alike.
public struct Layer<Scalar: TensorScalar>: Backprop, Sendable, Equatable {
    public var weights: Matrix<Scalar>
    public var biases: Vector<Scalar>

    public init(weights: Matrix<Scalar>, biases: Vector<Scalar>) {
        precondition(weights.columns == biases.count,
                     "Layer: \(weights.shapeDescription) weights (inputs x outputs) need \(weights.columns) biases, got Vector[\(biases.count)]")
        self.weights = weights
        self.biases = biases
    }

    /// A layer whose shapes are known to fit (a gradient made from this layer's shapes).
    init(checkedWeights weights: Matrix<Scalar>, biases: Vector<Scalar>) {
        self.weights = weights
        self.biases = biases
    }

    /// A layer from `inputs` to `outputs` with every parameter drawn uniformly from `range`.
    /// The weights are drawn output by output (each output's weights from every input, then
    /// the next output's), then the biases.
    @_specialize(where Scalar == Float)
    @_specialize(where Scalar == Double)
    public init(inputs: Int, outputs: Int, uniformIn range: ClosedRange<Scalar>,
                using generator: inout SeededGenerator) {
        let w = Matrix<Scalar>(rows: inputs, columns: outputs) { out in
            for o in 0..<outputs {
                for j in 0..<inputs { out[j * outputs + o] = generator.uniform(range) }
            }
        }
        let b = Vector<Scalar>(count: outputs) { out in
            for i in 0..<out.count { out[i] = generator.uniform(range) }
        }
        self.init(weights: w, biases: b)
    }

    /// Number of inputs.
    public var inputs: Int { weights.rows }
    /// Number of outputs.
    public var outputs: Int { weights.columns }

    @_specialize(where Scalar == Float)
    @_specialize(where Scalar == Double)
    public func zero() -> Layer { Layer(weights: weights.zero(), biases: biases.zero()) }
    public func one() -> Layer { Layer(weights: weights.one(), biases: biases.one()) }
    @_specialize(where Scalar == Float)
    @_specialize(where Scalar == Double)
    public mutating func add(_ other: Layer) {
        weights.add(other.weights)
        biases.add(other.biases)
    }
}

/// A layer applied to one sample: `weightsᵀ * x + biases`, as one primitive of the whole
/// layer, whose pullback gives the layer's gradient (the weights' as a pending outer product).
/// The same values as `transposedMatvec(layer.weights, x, plus: layer.biases)`; recorded as one
/// operation of the layer rather than one of its two fields, the gradient reaches the
/// network's with less bookkeeping per sample (this is the per-sample training loop's inner
/// step).
@_specialize(exported: true, where S == Float)
@_specialize(exported: true, where S == Double)
public func runLayer<S>(_ layer: BVar<Layer<S>>, _ x: BVar<Vector<S>>) -> BVar<Vector<S>> {
    op2 { (layer: Layer<S>, x: Vector<S>) in
        precondition(layer.inputs == x.count,
                     "shape mismatch in runLayer: a layer of \(layer.inputs) inputs applied to Vector[\(x.count)]")
        let saved = MatvecOperands(layer.weights, SparseEntries(x))
        let y = layer.weights.transposedMatvec(saved.x, plus: layer.biases)
        return (y, { g in Layer(checkedWeights: Matrix.outer(saved.x, g), biases: g) },
                { g in saved.m.matvec(SparseEntries(dense: g)) })
    }(layer, x)
}

/// A layer applied to a batch (one sample per row): `X * weights + biases` on every row.
@_specialize(exported: true, where S == Float)
@_specialize(exported: true, where S == Double)
public func runLayer<S>(_ layer: BVar<Layer<S>>, batch x: BVar<Matrix<S>>) -> BVar<Matrix<S>> {
    affine(x, layer[Lenses.weights()], layer[Lenses.biases()])
}
