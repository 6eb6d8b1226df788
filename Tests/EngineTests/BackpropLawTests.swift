import Engine
import Testing

// The laws of `Backprop` (see its doc comment), written once as generic checks and run for
// every conforming type of the Engine: Float, Double, Vector, Matrix, Array, Pair and a user
// struct conformed through `BackpropFields`. (Layer and Network live in Training; their laws
// run in TrainingTests/NetworkBackpropLawTests.swift, which cannot share this file.)

/// How the law checks look into a value: its shape, and its entries as `Double`s.
protocol LawSubject: Backprop, Equatable {
    var lawShape: String { get }
    var lawEntries: [Double] { get }
}

extension Float: LawSubject {
    var lawShape: String { "scalar" }
    var lawEntries: [Double] { [Double(self)] }
}

extension Double: LawSubject {
    var lawShape: String { "scalar" }
    var lawEntries: [Double] { [self] }
}

extension Vector: LawSubject {
    var lawShape: String { "Vector[\(count)]" }
    var lawEntries: [Double] { scalars.map { Double($0) } }
}

extension Matrix: LawSubject {
    var lawShape: String { shapeDescription }
    var lawEntries: [Double] { scalars.map { Double($0) } }
}

extension Array: LawSubject where Element: LawSubject {
    var lawShape: String { "[" + map(\.lawShape).joined(separator: ", ") + "]" }
    var lawEntries: [Double] { flatMap(\.lawEntries) }
}

extension Pair: LawSubject where First: LawSubject, Second: LawSubject {
    var lawShape: String { "Pair(\(first.lawShape), \(second.lawShape))" }
    var lawEntries: [Double] { first.lawEntries + second.lawEntries }
}

extension Affine: LawSubject {
    var lawShape: String { "Affine(\(weights.lawShape), \(biases.lawShape), \(name))" }
    var lawEntries: [Double] { weights.lawEntries + biases.lawEntries }
}

extension AffineStack: LawSubject {
    var lawShape: String { layers.lawShape }
    var lawEntries: [Double] { layers.lawEntries }
}

/// Checks the five laws of `Backprop` on `trials` random triples made by `make` (which must
/// make values of one shape). `roundoff` is the unit roundoff of the entries, for
/// associativity, which holds only up to rounding.
func expectBackpropLaws<T: LawSubject>(
    _ name: String, seed: UInt64, trials: Int = 6, roundoff: Double = Double.ulpOfOne / 2,
    sourceLocation: SourceLocation = #_sourceLocation,
    _ make: (inout TestRandom) -> T
) {
    var rng = TestRandom(seed: seed)
    for trial in 0..<trials {
        let x = make(&rng), y = make(&rng), z = make(&rng)
        let context = "\(name), trial \(trial), shape \(x.lawShape)"
        guard x.lawShape == y.lawShape, y.lawShape == z.lawShape else {
            Issue.record("\(context): the maker gave shapes \(x.lawShape), \(y.lawShape), \(z.lawShape)",
                         sourceLocation: sourceLocation)
            return
        }

        // 1. Identity.
        #expect(x.adding(y.zero()) == x, "\(context): x + 0 != x", sourceLocation: sourceLocation)
        #expect(x.zero().adding(x) == x, "\(context): 0 + x != x", sourceLocation: sourceLocation)
        #expect(x.zero().lawEntries.allSatisfy { $0 == 0 }, "\(context): zero() has non-zero entries",
                sourceLocation: sourceLocation)
        #expect(x.one().lawEntries.allSatisfy { $0 == 1 }, "\(context): one() has entries other than 1",
                sourceLocation: sourceLocation)

        // 2. Commutativity (exact: each entry is one IEEE addition).
        #expect(x.adding(y) == y.adding(x), "\(context): x + y != y + x", sourceLocation: sourceLocation)

        // 3. Associativity, up to rounding.
        let left = x.adding(y).adding(z).lawEntries, right = x.adding(y.adding(z)).lawEntries
        let (xe, ye, ze) = (x.lawEntries, y.lawEntries, z.lawEntries)
        #expect(left.count == xe.count && right.count == xe.count, "\(context): sums changed shape",
                sourceLocation: sourceLocation)
        for i in 0..<min(left.count, right.count, xe.count) {
            let bound = 4 * roundoff * (abs(xe[i]) + abs(ye[i]) + abs(ze[i]))
            #expect(abs(left[i] - right[i]) <= bound,
                    "\(context): entry \(i): (x + y) + z = \(left[i]), x + (y + z) = \(right[i])",
                    sourceLocation: sourceLocation)
        }

        // 4. Shape, and independence from the entries.
        #expect(x.zero().lawShape == x.lawShape, "\(context): zero() has shape \(x.zero().lawShape)",
                sourceLocation: sourceLocation)
        #expect(x.one().lawShape == x.lawShape, "\(context): one() has shape \(x.one().lawShape)",
                sourceLocation: sourceLocation)
        #expect(x.zero() == y.zero(), "\(context): zero() depends on the entries", sourceLocation: sourceLocation)
        #expect(x.one() == y.one(), "\(context): one() depends on the entries", sourceLocation: sourceLocation)

        // 5. `add` agrees with `adding`, and changes neither its argument nor copies of the
        //    value it mutates (value semantics under copy-on-write storage).
        var sum = x
        sum.add(y)
        #expect(sum == x.adding(y), "\(context): add disagrees with adding", sourceLocation: sourceLocation)
        #expect(x.lawEntries == xe, "\(context): add changed a copy of the value it mutated",
                sourceLocation: sourceLocation)
        #expect(y.lawEntries == ye, "\(context): add changed its argument", sourceLocation: sourceLocation)
        var zero = x.zero()
        zero.add(y)
        #expect(zero == y && x.zero() == y.zero(), "\(context): zero() shares storage with the value",
                sourceLocation: sourceLocation)
    }
}

// MARK: - Scalars

@Test("Backprop laws: Float and Double")
func scalarLaws() {
    expectBackpropLaws("Float", seed: 61, roundoff: Double(Float.ulpOfOne) / 2) {
        $0.uniform(Float(-100)...100)
    }
    expectBackpropLaws("Double", seed: 62) { $0.uniform(-100.0...100) }
    // Magnitudes far apart, where rounding shows.
    expectBackpropLaws("Double, mixed magnitudes", seed: 63) { rng in
        rng.uniform(-1.0...1) * [1e-8, 1, 1e8][Int(rng.next() % 3)]
    }
}

// MARK: - Tensors

@Test("Backprop laws: Vector", arguments: [0, 1, 7, 33, 4100])
func vectorLaws(count: Int) {
    expectBackpropLaws("Vector<Float>", seed: 64, roundoff: Double(Float.ulpOfOne) / 2) {
        $0.vector(count, in: Float(-10)...10)
    }
    expectBackpropLaws("Vector<Double>", seed: 65) { $0.vector(count, in: -10.0...10) }
}

@Test("Backprop laws: Matrix", arguments: [(0, 0), (1, 1), (3, 5), (0, 4), (6, 1)])
func matrixLaws(rows: Int, columns: Int) {
    expectBackpropLaws("Matrix<Float>", seed: 66, roundoff: Double(Float.ulpOfOne) / 2) {
        $0.matrix(rows, columns, in: Float(-10)...10)
    }
    expectBackpropLaws("Matrix<Double>", seed: 67) { $0.matrix(rows, columns, in: -10.0...10) }
}

// MARK: - Containers

@Test("Backprop laws: Array of Vector")
func arrayLaws() {
    expectBackpropLaws("[Vector<Double>] of lengths 2, 0, 5", seed: 68) { rng in
        [rng.vector(2, in: -10.0...10), rng.vector(0), rng.vector(5, in: -10.0...10)]
    }
    expectBackpropLaws("[Vector<Float>], one entry", seed: 69, roundoff: Double(Float.ulpOfOne) / 2) { rng in
        [rng.vector(4, in: Float(-10)...10)]
    }
    expectBackpropLaws("empty [Vector<Double>]", seed: 70, trials: 1) { _ in [Vector<Double>]() }
    expectBackpropLaws("[[Double]]", seed: 71) { rng in
        [[rng.uniform(-1.0...1)], [rng.uniform(-1.0...1), rng.uniform(-1.0...1)]]
    }
}

@Test("Backprop laws: Pair")
func pairLaws() {
    expectBackpropLaws("Pair<Vector<Float>, Matrix<Float>>", seed: 72,
                       roundoff: Double(Float.ulpOfOne) / 2) { rng in
        Pair(rng.vector(3, in: Float(-10)...10), rng.matrix(2, 4, in: Float(-10)...10))
    }
    expectBackpropLaws("Pair<Double, [Vector<Double>]>", seed: 73) { rng in
        Pair(rng.uniform(-10.0...10), [rng.vector(3, in: -10.0...10), rng.vector(1, in: -10.0...10)])
    }
    expectBackpropLaws("Pair<Pair<Double, Double>, Vector<Double>>", seed: 74) { rng in
        Pair(Pair(rng.uniform(-10.0...10), rng.uniform(-10.0...10)), rng.vector(2, in: -10.0...10))
    }
}

// MARK: - BackpropFields

@Test("Backprop laws: a user struct conformed through BackpropFields")
func backpropFieldsLaws() {
    expectBackpropLaws("Affine", seed: 75) { Affine.random(inputs: 3, outputs: 2, name: "kept", &$0) }
    expectBackpropLaws("AffineStack", seed: 76) { AffineStack.random(sizes: [3, 4, 1], &$0) }
    // Fields that are not parameters ride along unchanged.
    var rng = TestRandom(seed: 77)
    let x = Affine.random(inputs: 2, outputs: 2, name: "hyper", &rng)
    #expect(x.zero().name == "hyper")
    #expect(x.one().name == "hyper")
    var y = x
    y.add(Affine.random(inputs: 2, outputs: 2, name: "other", &rng))
    #expect(y.name == "hyper")
}
