import CSparseKernels
import Engine

/// A feed-forward classifier: logistic hidden layers and a softmax output, trained with
/// cross-entropy (the tutorial's 784-300-100-10 network, any number and size of layers).
///
/// Start with `Network(sizes: [784, 300, 100, 10], seed: 1)`; `runNetwork` and `netErr` are
/// the forward pass and loss for one sample, `batchLoss` and `ShardResult.compute` the
/// batched forms that training uses.
public struct Network<Scalar: TensorScalar>: Backprop, Sendable, Equatable {
    /// The layers, input side first.
    public var layers: [Layer<Scalar>]

    public init(layers: [Layer<Scalar>]) {
        Self.checkShapes(layers)
        self.layers = layers
    }

    /// Layers known to fit together (the shapes of another network's layers).
    private init(checkedLayers layers: [Layer<Scalar>]) {
        self.layers = layers
    }

    private static func checkShapes(_ layers: [Layer<Scalar>]) {
        precondition(!layers.isEmpty, "a Network needs at least one layer")
        for (a, b) in zip(layers, layers.dropFirst()) {
            precondition(a.outputs == b.inputs,
                         "Network: a layer with \(a.outputs) outputs cannot feed one with \(b.inputs) inputs")
        }
    }

    /// A network with layer sizes `sizes` (inputs first, classes last), every parameter drawn
    /// uniformly from `range` (the tutorial's initialisation: -0.5...0.5).
    @_specialize(where Scalar == Float)
    @_specialize(where Scalar == Double)
    public init(sizes: [Int], uniformIn range: ClosedRange<Scalar> = -0.5...0.5,
                using generator: inout SeededGenerator) {
        precondition(sizes.count >= 2 && sizes.allSatisfy { $0 > 0 },
                     "Network sizes must be at least two positive numbers, got \(sizes)")
        self.init(layers: zip(sizes, sizes.dropFirst()).map { i, o in
            Layer(inputs: i, outputs: o, uniformIn: range, using: &generator)
        })
    }

    /// The layer sizes, inputs first.
    public var sizes: [Int] { [layers[0].inputs] + layers.map(\.outputs) }

    /// Number of parameters (weights and biases).
    public var parameterCount: Int { layers.reduce(0) { $0 + $1.weights.count + $1.biases.count } }

    @_specialize(where Scalar == Float)
    @_specialize(where Scalar == Double)
    public func zero() -> Network { Network(checkedLayers: layers.map { $0.zero() }) }
    public func one() -> Network { Network(checkedLayers: layers.map { $0.one() }) }
    @_specialize(where Scalar == Float)
    @_specialize(where Scalar == Double)
    public mutating func add(_ other: Network) { add(other, scaledBy: 1) }

    /// Adds `scale * other` in place (one BLAS axpy per tensor): the descent step
    /// `net.add(gradient, scaledBy: -rate)`.
    @_specialize(where Scalar == Float)
    @_specialize(where Scalar == Double)
    public mutating func add(_ other: Network, scaledBy scale: Scalar) {
        precondition(layers.count == other.layers.count,
                     "shape mismatch in add: Network\(sizes) vs Network\(other.sizes)")
        for i in layers.indices {
            layers[i].weights.add(other.layers[i].weights, scaledBy: scale)
            layers[i].biases.add(other.layers[i].biases, scaledBy: scale)
        }
    }

    /// Calls `body` on each parameter tensor's memory in a fixed order (per layer: weights,
    /// then biases), for optimizers and serialisation.
    public mutating func withParameterBuffers(_ body: (Int, UnsafeMutableBufferPointer<Scalar>) throws -> Void) rethrows {
        var index = 0
        for i in layers.indices {
            try layers[i].weights.withUnsafeMutableBufferPointer { try body(index, $0) }
            try layers[i].biases.withUnsafeMutableBufferPointer { try body(index + 1, $0) }
            index += 2
        }
    }

    /// All parameters in one flat contiguous vector, in the order of `withParameterBuffers`.
    public func flattened() -> [Scalar] {
        [Scalar](unsafeUninitializedCapacity: parameterCount) { buffer, initialized in
            flatten(into: buffer)
            initialized = buffer.count
        }
    }

    /// Writes `flattened()` into `destination`, which holds exactly `parameterCount` values.
    public func flatten(into destination: UnsafeMutableBufferPointer<Scalar>) {
        precondition(destination.count == parameterCount,
                     "Network\(sizes) has \(parameterCount) parameters, room for \(destination.count)")
        var offset = 0
        func append(_ part: UnsafeBufferPointer<Scalar>) {
            if let source = part.baseAddress { (destination.baseAddress! + offset).initialize(from: source, count: part.count) }
            offset += part.count
        }
        for layer in layers {
            layer.weights.withUnsafeBufferPointer(append)
            layer.biases.withUnsafeBufferPointer(append)
        }
    }

    /// A network of layer sizes `sizes` holding the parameters of `flat` (as `flattened()` gives).
    public init(sizes: [Int], flattened flat: UnsafeBufferPointer<Scalar>) {
        let expected = zip(sizes, sizes.dropFirst()).reduce(0) { $0 + $1.0 * $1.1 + $1.1 }
        precondition(flat.count == expected,
                     "Network\(sizes) has \(expected) parameters, got \(flat.count)")
        var offset = 0
        var layers = [Layer<Scalar>]()
        for (i, o) in zip(sizes, sizes.dropFirst()) {
            let w = Matrix<Scalar>(rows: i, columns: o) { $0.baseAddress!.update(from: flat.baseAddress! + offset, count: i * o) }
            offset += i * o
            let b = Vector<Scalar>(count: o) { $0.baseAddress!.update(from: flat.baseAddress! + offset, count: o) }
            offset += o
            layers.append(Layer(weights: w, biases: b))
        }
        self.init(layers: layers)
    }
}

/// The network's output probabilities for one sample: logistic hidden layers, softmax output.
@_specialize(exported: true, where S == Float)
@_specialize(exported: true, where S == Double)
public func runNetwork<S>(_ net: BVar<Network<S>>, _ x: Vector<S>) -> BVar<Vector<S>> {
    softMax(logits(net, constVar(x)))
}

/// The output layer's inputs to the softmax (the logits) for one sample.
@_specialize(exported: true, where S == Float)
@_specialize(exported: true, where S == Double)
public func logits<S>(_ net: BVar<Network<S>>, _ x: BVar<Vector<S>>) -> BVar<Vector<S>> {
    let depth = net.value.layers.count
    let layers = net[Lenses.layers()]
    var h = x
    for i in 0..<depth {
        let z = runLayer(layers[i], h)
        h = i == depth - 1 ? z : logistic(z)
    }
    return h
}

/// The logits of a batch (one sample per row).
@_specialize(exported: true, where S == Float)
@_specialize(exported: true, where S == Double)
public func logits<S>(_ net: BVar<Network<S>>, batch x: BVar<Matrix<S>>) -> BVar<Matrix<S>> {
    logits(net) { runLayer($0, batch: x) }
}

/// The logits of a batch whose first layer is applied by `firstLayer` (to dense or sparse
/// rows); logistic after every layer but the last.
func logits<S>(_ net: BVar<Network<S>>, firstLayer: (BVar<Layer<S>>) -> BVar<Matrix<S>>) -> BVar<Matrix<S>> {
    let depth = net.value.layers.count
    let layers = net[Lenses.layers()]
    var h = firstLayer(layers[0])
    for i in 1..<max(depth, 1) { h = runLayer(layers[i], batch: logistic(h)) }
    return h
}

/// The tutorial's error function: cross-entropy of the network's output for `x` against the
/// target distribution `target` (a one-hot vector for a labelled sample). The softmax and the
/// cross-entropy are one stable primitive on the logits: the same function as
/// `crossEntropy(target, runNetwork(net, x))`, with one operation fewer on the tape.
@_specialize(exported: true, where S == Float)
@_specialize(exported: true, where S == Double)
public func netErr<S>(_ x: Vector<S>, _ target: Vector<S>, _ net: BVar<Network<S>>) -> BVar<S> {
    softMaxCrossEntropy(logits: logits(net, constVar(x)), target: target)
}

/// Sum over a batch of the softmax cross-entropy against the labels (the training loss of a
/// shard; divide by the batch size for the mean).
@_specialize(exported: true, where S == Float)
@_specialize(exported: true, where S == Double)
public func batchLoss<S>(_ net: BVar<Network<S>>, _ x: Matrix<S>, labels: [Int]) -> BVar<S> {
    softMaxCrossEntropy(logits: logits(net, batch: constVar(x)), labels: labels)
}

extension Network where Scalar == Float {
    /// Writes the flattened sum of two networks of the same shape into `destination` (exactly
    /// `parameterCount` values): each entry `a + b`, one Float addition, as
    /// `a.add(b); a.flatten(into:)` would give, in one pass over the three.
    public static func flattenSum(_ a: Network, _ b: Network, into destination: UnsafeMutableBufferPointer<Float>) {
        precondition(a.sizes == b.sizes, "shape mismatch in flattenSum: Network\(a.sizes) vs Network\(b.sizes)")
        precondition(destination.count == a.parameterCount,
                     "Network\(a.sizes) has \(a.parameterCount) parameters, room for \(destination.count)")
        var offset = 0
        func append(_ x: UnsafeBufferPointer<Float>, _ y: UnsafeBufferPointer<Float>) {
            if let p = x.baseAddress, let q = y.baseAddress { sk_sum_f(destination.baseAddress! + offset, p, q, Int64(x.count)) }
            offset += x.count
        }
        for (la, lb) in zip(a.layers, b.layers) {
            la.weights.withUnsafeBufferPointer { x in lb.weights.withUnsafeBufferPointer { y in append(x, y) } }
            la.biases.withUnsafeBufferPointer { x in lb.biases.withUnsafeBufferPointer { y in append(x, y) } }
        }
    }
}
