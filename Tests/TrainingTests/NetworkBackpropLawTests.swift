import Engine
import Testing
import Training

// The laws of `Backprop` (see its doc comment) for Training's conformances, Layer and Network.
// The generic check is EngineTests/BackpropLawTests.swift's `expectBackpropLaws`, repeated
// here because test targets cannot share code without a support target in Package.swift.

/// Checks the five laws of `Backprop` on `trials` random triples of one shape made by `make`.
/// `entries` lists a value's entries and `shape` describes its shape.
func expectTrainingBackpropLaws<T: Backprop & Equatable>(
    _ name: String, seed: UInt64, trials: Int = 5, roundoff: Double,
    entries: (T) -> [Double], shape: (T) -> String,
    sourceLocation: SourceLocation = #_sourceLocation,
    _ make: (inout SeededGenerator) -> T
) {
    var rng = SeededGenerator(seed: seed)
    for trial in 0..<trials {
        let x = make(&rng), y = make(&rng), z = make(&rng)
        let context = "\(name), trial \(trial), shape \(shape(x))"
        // 1. Identity.
        #expect(x.adding(y.zero()) == x, "\(context): x + 0 != x", sourceLocation: sourceLocation)
        #expect(x.zero().adding(x) == x, "\(context): 0 + x != x", sourceLocation: sourceLocation)
        #expect(entries(x.zero()).allSatisfy { $0 == 0 }, "\(context): zero() has non-zero entries",
                sourceLocation: sourceLocation)
        #expect(entries(x.one()).allSatisfy { $0 == 1 }, "\(context): one() has entries other than 1",
                sourceLocation: sourceLocation)
        // 2. Commutativity.
        #expect(x.adding(y) == y.adding(x), "\(context): x + y != y + x", sourceLocation: sourceLocation)
        // 3. Associativity, up to rounding.
        let left = entries(x.adding(y).adding(z)), right = entries(x.adding(y.adding(z)))
        let (xe, ye, ze) = (entries(x), entries(y), entries(z))
        for i in xe.indices {
            let bound = 4 * roundoff * (abs(xe[i]) + abs(ye[i]) + abs(ze[i]))
            #expect(abs(left[i] - right[i]) <= bound,
                    "\(context): entry \(i): (x + y) + z = \(left[i]), x + (y + z) = \(right[i])",
                    sourceLocation: sourceLocation)
        }
        // 4. Shape, and independence from the entries.
        #expect(shape(x.zero()) == shape(x) && shape(x.one()) == shape(x), "\(context): zero/one changed shape",
                sourceLocation: sourceLocation)
        #expect(x.zero() == y.zero() && x.one() == y.one(), "\(context): zero/one depend on the entries",
                sourceLocation: sourceLocation)
        // 5. `add` agrees with `adding` and changes neither its argument nor copies.
        var sum = x
        sum.add(y)
        #expect(sum == x.adding(y), "\(context): add disagrees with adding", sourceLocation: sourceLocation)
        #expect(entries(x) == xe && entries(y) == ye, "\(context): add changed a copy or its argument",
                sourceLocation: sourceLocation)
    }
}

@Test("Backprop laws: Layer", arguments: [(1, 1), (7, 5), (3, 1)])
func layerLaws(inputs: Int, outputs: Int) {
    expectTrainingBackpropLaws("Layer<Double>", seed: 121, roundoff: Double.ulpOfOne / 2,
                               entries: { $0.weights.scalars + $0.biases.scalars },
                               shape: { "\($0.weights.shapeDescription) + Vector[\($0.biases.count)]" }) {
        Layer<Double>(inputs: inputs, outputs: outputs, uniformIn: -10...10, using: &$0)
    }
    expectTrainingBackpropLaws("Layer<Float>", seed: 122, roundoff: Double(Float.ulpOfOne) / 2,
                               entries: { ($0.weights.scalars + $0.biases.scalars).map { Double($0) } },
                               shape: { "\($0.weights.shapeDescription) + Vector[\($0.biases.count)]" }) {
        Layer<Float>(inputs: inputs, outputs: outputs, uniformIn: -10...10, using: &$0)
    }
}

@Test("Backprop laws: Network", arguments: [[7, 5, 4, 3], [1, 1], [2, 9, 1, 4]])
func networkLaws(sizes: [Int]) {
    expectTrainingBackpropLaws("Network<Double>", seed: 123, roundoff: Double.ulpOfOne / 2,
                               entries: { $0.flattened() }, shape: { "\($0.sizes)" }) {
        Network<Double>(sizes: sizes, uniformIn: -10...10, using: &$0)
    }
    expectTrainingBackpropLaws("Network<Float>", seed: 124, roundoff: Double(Float.ulpOfOne) / 2,
                               entries: { $0.flattened().map { Double($0) } }, shape: { "\($0.sizes)" }) {
        Network<Float>(sizes: sizes, uniformIn: -10...10, using: &$0)
    }
}

@Test("Network.add(_:scaledBy:) is add of the scaled gradient")
func networkScaledAdd() {
    var rng = SeededGenerator(seed: 125)
    let net = Network<Double>(sizes: [3, 4, 2], using: &rng)
    let step = Network<Double>(sizes: [3, 4, 2], using: &rng)
    var scaled = net
    scaled.add(step, scaledBy: -0.25)
    let expected = zip(net.flattened(), step.flattened()).map { $0 + -0.25 * $1 }
    for (i, (got, want)) in zip(scaled.flattened(), expected).enumerated() {
        // axpy may fuse the multiply-add: one rounding instead of two.
        #expect(abs(got - want) <= 2 * Double.ulpOfOne * (abs(want) + 1), "parameter \(i): \(got) vs \(want)")
    }
    var unscaled = net
    unscaled.add(step)
    #expect(unscaled == net.adding(step))
    #expect(net.flattened() != scaled.flattened())
}
