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

/// A layer applied to one sample: `weightsᵀ * x + biases`.
@_specialize(exported: true, where S == Float)
@_specialize(exported: true, where S == Double)
public func runLayer<S>(_ layer: BVar<Layer<S>>, _ x: BVar<Vector<S>>) -> BVar<Vector<S>> {
    transposedMatvec(layer[Lenses.weights()], x, plus: layer[Lenses.biases()])
}

/// A layer applied to a batch (one sample per row): `X * weights + biases` on every row.
@_specialize(exported: true, where S == Float)
@_specialize(exported: true, where S == Double)
public func runLayer<S>(_ layer: BVar<Layer<S>>, batch x: BVar<Matrix<S>>) -> BVar<Matrix<S>> {
    affine(x, layer[Lenses.weights()], layer[Lenses.biases()])
}
