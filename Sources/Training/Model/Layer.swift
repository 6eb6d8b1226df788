import Engine

/// One fully connected layer: `weights` (outputs x inputs) and `biases` (outputs).
public struct Layer<Scalar: TensorScalar>: Backprop, Sendable, Equatable {
    public var weights: Matrix<Scalar>
    public var biases: Vector<Scalar>

    public init(weights: Matrix<Scalar>, biases: Vector<Scalar>) {
        precondition(weights.rows == biases.count,
                     "Layer: \(weights.shapeDescription) weights need \(weights.rows) biases, got Vector[\(biases.count)]")
        self.weights = weights
        self.biases = biases
    }

    /// A layer from `inputs` to `outputs` with every parameter drawn uniformly from `range`.
    public init(inputs: Int, outputs: Int, uniformIn range: ClosedRange<Scalar>,
                using generator: inout SeededGenerator) {
        let w = Matrix<Scalar>(rows: outputs, columns: inputs) { out in
            for i in 0..<out.count { out[i] = generator.uniform(range) }
        }
        let b = Vector<Scalar>(count: outputs) { out in
            for i in 0..<out.count { out[i] = generator.uniform(range) }
        }
        self.init(weights: w, biases: b)
    }

    /// Number of inputs.
    public var inputs: Int { weights.columns }
    /// Number of outputs.
    public var outputs: Int { weights.rows }

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

/// A layer applied to one sample: `weights * x + biases`.
@_specialize(exported: true, where S == Float)
@_specialize(exported: true, where S == Double)
public func runLayer<S>(_ layer: BVar<Layer<S>>, _ x: BVar<Vector<S>>) -> BVar<Vector<S>> {
    matvec(layer[Lenses.weights()], x, plus: layer[Lenses.biases()])
}

/// A layer applied to a batch (one sample per row): `X * weightsᵀ + biases` on every row.
@_specialize(exported: true, where S == Float)
@_specialize(exported: true, where S == Double)
public func runLayer<S>(_ layer: BVar<Layer<S>>, batch x: BVar<Matrix<S>>) -> BVar<Matrix<S>> {
    affine(x, layer[Lenses.weights()], layer[Lenses.biases()])
}
