import Engine

/// A user-defined parameter struct conformed through `BackpropFields`: two parameter fields and
/// one field (`name`) that is not a parameter and must ride along unchanged.
struct Affine: BackpropFields, Equatable, Sendable {
    var weights: Matrix<Double>
    var biases: Vector<Double>
    var name: String

    static let backpropFields: [BackpropField<Affine>] = [.init(\.weights), .init(\.biases)]

    static func random(inputs: Int, outputs: Int, name: String = "affine",
                       _ rng: inout TestRandom) -> Affine {
        Affine(weights: rng.matrix(outputs, inputs), biases: rng.vector(outputs), name: name)
    }
}

extension Affine: Nudgeable {
    var entries: [Double] { weights.entries + biases.entries }
    func rebuilt(from source: inout ArraySlice<Double>) -> Affine {
        let w = weights.rebuilt(from: &source)
        return Affine(weights: w, biases: biases.rebuilt(from: &source), name: name)
    }
}

/// Layers of `Affine`, for nested lenses (`\.layers[1].biases`).
struct AffineStack: BackpropFields, Equatable, Sendable {
    var layers: [Affine]

    static let backpropFields: [BackpropField<AffineStack>] = [.init(\.layers)]

    /// Layers of sizes `sizes` (inputs first).
    static func random(sizes: [Int], _ rng: inout TestRandom) -> AffineStack {
        AffineStack(layers: zip(sizes, sizes.dropFirst()).enumerated().map { i, shape in
            Affine.random(inputs: shape.0, outputs: shape.1, name: "layer \(i)", &rng)
        })
    }
}

extension AffineStack: Nudgeable {
    var entries: [Double] { layers.entries }
    func rebuilt(from source: inout ArraySlice<Double>) -> AffineStack {
        AffineStack(layers: layers.rebuilt(from: &source))
    }
}

/// The stack applied to `x`: logistic between layers, none after the last.
func runStack(_ stack: BVar<AffineStack>, _ x: BVar<Vector<Double>>) -> BVar<Vector<Double>> {
    let depth = stack.value.layers.count
    var h = x
    for i in 0..<depth {
        let layer = stack[\.layers[i]]
        let z = matvec(layer.weights, h) + layer.biases
        h = i == depth - 1 ? z : logistic(z)
    }
    return h
}
