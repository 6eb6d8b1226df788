import Engine
import Testing

// Finite-difference checks, in Double, of every primitive of the engine: each analytic
// gradient (from `backprop`, `gradBP`, `backprop2`, `gradBP2`) is compared coordinate by
// coordinate with central differences of `evalBP`/`evalBP2`; a failure prints the coordinate
// and both numbers. Tensor results are contracted with a random probe so every entry counts.

// MARK: - Element-wise operations on scalars, vectors and matrices

/// The shapes the element-wise operations are checked on.
enum ElementwiseShape: String, CaseIterable, Sendable {
    case scalar, vector, matrix
}

/// Runs `body` once per shape, with a template value of that shape (`body` must be generic,
/// hence the protocol).
protocol ElementwiseCheck {
    func run<V: ElementwiseArithmetic & Nudgeable>(template: V, shape: ElementwiseShape,
                                                   _ rng: inout TestRandom) where V.Scalar == Double
}

extension ElementwiseCheck {
    func runForEveryShape(seed: UInt64) {
        var rng = TestRandom(seed: seed)
        run(template: 0.0, shape: .scalar, &rng)
        run(template: Vector<Double>.zeros(5), shape: .vector, &rng)
        run(template: Matrix<Double>.zeros(rows: 3, columns: 4), shape: .matrix, &rng)
    }
}

/// A value shaped like `template`, entries uniform in `range`.
func random<V: ElementwiseArithmetic>(like template: V, in range: ClosedRange<Double>,
                                      _ rng: inout TestRandom) -> V where V.Scalar == Double {
    template.map { _ in rng.uniform(range) }
}

/// The one-argument element-wise operations: unary functions and a variable with a constant
/// scalar on either side.
enum UnaryOperation: String, CaseIterable, Sendable {
    case negate, exp, log, logistic
    case plusScalar, scalarPlus, minusScalar, scalarMinus
    case timesScalar, scalarTimes, dividedByScalar, scalarDividedBy
    case squareByFanOut

    func apply<V: ElementwiseArithmetic>(_ x: BVar<V>) -> BVar<V> where V.Scalar == Double {
        switch self {
        case .negate: -x
        case .exp: Engine.exp(x)
        case .log: Engine.log(x)
        case .logistic: Engine.logistic(x)
        case .plusScalar: x + 1.75
        case .scalarPlus: -0.5 + x
        case .minusScalar: x - 2.25
        case .scalarMinus: 3.5 - x
        case .timesScalar: x * -1.25
        case .scalarTimes: 2.5 * x
        case .dividedByScalar: x / 1.6
        case .scalarDividedBy: 1.3 / x
        case .squareByFanOut: x * x
        }
    }

    /// Inputs where the operation is smooth and well conditioned.
    var inputRange: ClosedRange<Double> {
        switch self {
        case .log, .scalarDividedBy: 0.5...2
        case .exp: -2...2
        case .logistic: -4...4
        default: -2...2
        }
    }
}

@Test("element-wise unary operations and scalar constants", arguments: UnaryOperation.allCases)
func elementwiseUnaryGradient(_ operation: UnaryOperation) {
    struct Check: ElementwiseCheck {
        let operation: UnaryOperation
        func run<V: ElementwiseArithmetic & Nudgeable>(template: V, shape: ElementwiseShape,
                                                       _ rng: inout TestRandom) where V.Scalar == Double {
            let x = random(like: template, in: operation.inputRange, &rng)
            checkGradient("\(operation) on \(shape)", of: { operation.apply($0) }, at: x, rng: &rng)
        }
    }
    Check(operation: operation).runForEveryShape(seed: 11)
}

/// The two-argument element-wise operations, both arguments variables.
enum BinaryOperation: String, CaseIterable, Sendable {
    case plus, minus, times, dividedBy

    func apply<V: ElementwiseArithmetic>(_ x: BVar<V>, _ y: BVar<V>) -> BVar<V> {
        switch self {
        case .plus: x + y
        case .minus: x - y
        case .times: x * y
        case .dividedBy: x / y
        }
    }
}

@Test("element-wise binary operations, through the two-argument runners",
      arguments: BinaryOperation.allCases)
func elementwiseBinaryGradient(_ operation: BinaryOperation) {
    struct Check: ElementwiseCheck {
        let operation: BinaryOperation
        func run<V: ElementwiseArithmetic & Nudgeable>(template: V, shape: ElementwiseShape,
                                                       _ rng: inout TestRandom) where V.Scalar == Double {
            let x = random(like: template, in: -2...2, &rng)
            // Divisors stay away from zero.
            let y = template.map { _ in rng.signed(0.5...2) }
            checkGradient2("\(operation) on \(shape)", of: { operation.apply($0, $1) },
                           at: x, y, rng: &rng)
        }
    }
    Check(operation: operation).runForEveryShape(seed: 12)
}

@Test("sum and dot reduce to a scalar")
func reductionGradients() {
    struct Check: ElementwiseCheck {
        func run<V: ElementwiseArithmetic & Nudgeable>(template: V, shape: ElementwiseShape,
                                                       _ rng: inout TestRandom) where V.Scalar == Double {
            let x = random(like: template, in: -2...2, &rng)
            let y = random(like: template, in: -2...2, &rng)
            checkGradient("sum on \(shape)", of: { $0.sum() }, at: x, rng: &rng)
            checkGradient2("dot on \(shape)", of: { $0.dot($1) }, at: x, y, rng: &rng)
            checkGradient("dot with itself on \(shape)", of: { $0.dot($0) }, at: x, rng: &rng)
        }
    }
    Check().runForEveryShape(seed: 13)
}

@Test("a scalar variable times a tensor variable, and konst")
func scalarTimesTensorGradient() {
    var rng = TestRandom(seed: 14)
    let v: Vector<Double> = rng.vector(6, in: -2...2)
    let m: Matrix<Double> = rng.matrix(3, 5, in: -2...2)
    checkGradient2("scalar * vector", of: { $0 * $1 }, at: 1.7, v, rng: &rng)
    checkGradient2("scalar * matrix", of: { $0 * $1 }, at: -0.8, m, rng: &rng)
    checkGradient2("scalar * scalar (as a tensor)", of: { scaled($0, $1) }, at: -0.8, 1.3, rng: &rng)
    checkGradient("konst to 4 entries", of: { konst($0, count: 4) }, at: 0.9, rng: &rng)
    checkGradient("konst to 1 entry", of: { konst($0, count: 1) }, at: -1.1, rng: &rng)
    // The tutorial's use: a scalar broadcast, then multiplied element-wise.
    checkGradient2("konst(c) * v", of: { konst($0, count: 6) * $1 }, at: 0.6, v, rng: &rng)
}

@Test("gradBP of a tensor-valued function is the gradient of the sum of its entries")
func gradientOfTensorResultIsGradientOfSum() {
    var rng = TestRandom(seed: 15)
    let x: Vector<Double> = rng.vector(7, in: -2...2)
    let f = { (v: BVar<Vector<Double>>) in exp(v) * v }
    let direct = gradBP(f, x)
    let viaSum = gradBP({ f($0).sum() }, x)
    #expect(direct == viaSum)
    expectGradientMatches("gradBP of exp(v) * v", analytic: direct,
                          objective: { evalBP(f, $0).sum }, at: x, rng: &rng)
}

// MARK: - Linear algebra

@Test("matvec")
func matvecGradient() {
    var rng = TestRandom(seed: 21)
    for (rows, columns) in [(3, 4), (1, 1), (1, 6), (5, 1), (9, 7)] {
        let m: Matrix<Double> = rng.matrix(rows, columns)
        let x: Vector<Double> = rng.vector(columns)
        checkGradient2("matvec \(rows)x\(columns)", of: { matvec($0, $1) }, at: m, x, rng: &rng)
    }
}

/// The four transpose combinations of `matmul`.
struct TransposeCase: Sendable, CustomTestStringConvertible {
    var transposeA: Bool
    var transposeB: Bool
    var testDescription: String { "A\(transposeA ? "ᵀ" : "") B\(transposeB ? "ᵀ" : "")" }
    static let all = [false, true].flatMap { a in [false, true].map { TransposeCase(transposeA: a, transposeB: $0) } }
}

@Test("matmul, every transpose combination", arguments: TransposeCase.all)
func matmulGradient(_ t: TransposeCase) {
    var rng = TestRandom(seed: 22)
    // m, k, n all different, so that a transposition mistake is a shape mismatch too.
    for (m, k, n) in [(3, 4, 2), (1, 1, 1), (1, 5, 1), (4, 1, 3), (2, 6, 5)] {
        let a: Matrix<Double> = t.transposeA ? rng.matrix(k, m) : rng.matrix(m, k)
        let b: Matrix<Double> = t.transposeB ? rng.matrix(n, k) : rng.matrix(k, n)
        checkGradient2("matmul \(t.testDescription) m\(m) k\(k) n\(n)",
                       of: { matmul($0, $1, transposeA: t.transposeA, transposeB: t.transposeB) },
                       at: a, b, rng: &rng)
    }
}

@Test("addingToEachRow")
func addingToEachRowGradient() {
    var rng = TestRandom(seed: 23)
    for (rows, columns) in [(3, 4), (1, 1), (1, 5), (6, 1)] {
        let m: Matrix<Double> = rng.matrix(rows, columns)
        let v: Vector<Double> = rng.vector(columns)
        checkGradient2("addingToEachRow \(rows)x\(columns)", of: { addingToEachRow($0, $1) },
                       at: m, v, rng: &rng)
    }
}

@Test("affine: samples times weights (inputs x outputs) plus biases on every row")
func affineGradient() {
    var rng = TestRandom(seed: 29)
    for (n, i, o) in [(3, 4, 2), (1, 1, 1), (5, 3, 6)] {
        let x: Matrix<Double> = rng.matrix(n, i)
        let w: Matrix<Double> = rng.matrix(i, o)
        let b: Vector<Double> = rng.vector(o)
        // Weights and biases vary (samples constant), then samples and weights (biases constant):
        // between them every pullback of the primitive is checked.
        checkGradient2("affine weights, biases \(n)x\(i)->\(o)", of: { affine(constVar(x), $0, $1) },
                       at: w, b, rng: &rng)
        checkGradient2("affine samples, weights \(n)x\(i)->\(o)", of: { affine($0, $1, constVar(b)) },
                       at: x, w, rng: &rng)
        #expect(Matrix.affine(x, w, b) == Matrix.matmul(x, w).addingToEachRow(b)
                || zip(Matrix.affine(x, w, b).scalars, Matrix.matmul(x, w).addingToEachRow(b).scalars)
                    .allSatisfy { abs($0 - $1) <= 1e-12 * max(1, abs($1)) })
    }
}

// MARK: - Softmax and cross-entropy

@Test("softMax")
func softMaxGradient() {
    var rng = TestRandom(seed: 31)
    for count in [1, 2, 5, 10] {
        let x: Vector<Double> = rng.vector(count, in: -3...3)
        checkGradient("softMax of \(count)", of: { softMax($0) }, at: x, rng: &rng)
    }
    // Large logits: the stable form gives the same gradient as the shifted ones.
    let x: Vector<Double> = rng.vector(5, in: -3...3)
    let probe: Vector<Double> = randomProbe(shapedLike: x, &rng)
    let g = gradBP({ contracted(softMax($0), with: probe) }, x)
    let shifted = gradBP({ contracted(softMax($0), with: probe) }, x + 700)
    for i in 0..<5 {
        #expect(abs(g[i] - shifted[i]) <= 1e-12, "softMax gradient entry \(i): \(g[i]) at x, \(shifted[i]) at x + 700")
    }
}

@Test("crossEntropy, alone and after softMax")
func crossEntropyGradient() {
    var rng = TestRandom(seed: 32)
    let raw: Vector<Double> = rng.vector(4, in: 0.1...1)
    let target = (1 / raw.sum) * raw
    let p: Vector<Double> = rng.vector(4, in: 0.1...1)
    checkGradient("crossEntropy wrt probabilities", of: { crossEntropy(target, $0) }, at: p, rng: &rng)
    let z: Vector<Double> = rng.vector(4, in: -3...3)
    let result = checkGradient("crossEntropy after softMax", of: { crossEntropy(target, softMax($0)) },
                               at: z, rng: &rng)
    #expect(result.checked == 4)
    // Closed form: softMax(z) - target (the target sums to one).
    let g = gradBP({ crossEntropy(target, softMax($0)) }, z)
    let expected = z.softMax() - target
    for i in 0..<4 {
        #expect(abs(g[i] - expected[i]) <= 1e-12, "entry \(i): \(g[i]) vs softMax - target \(expected[i])")
    }
}

/// Expects a fused softmax-cross-entropy `fused` to have, at `z`, the value and gradient of the
/// composition it stands for, `crossEntropy(target, softMax(z))`, within 1e-12.
func expectFusedMatchesComposition(_ name: String, _ fused: (BVar<Vector<Double>>) -> BVar<Double>,
                                   target: Vector<Double>, at z: Vector<Double>) {
    let f = backprop(fused, z)
    let composed = backprop({ crossEntropy(target, softMax($0)) }, z)
    #expect(abs(f.value - composed.value) <= 1e-12 * max(1, abs(composed.value)),
            "\(name): fused loss \(f.value), composed \(composed.value)")
    #expect(f.gradient.count == z.count)
    for i in 0..<z.count {
        #expect(abs(f.gradient[i] - composed.gradient[i]) <= 1e-12,
                "\(name) entry \(i): fused \(f.gradient[i]), composed \(composed.gradient[i])")
    }
}

@Test("softMaxCrossEntropy of one sample, every label", arguments: 0..<5)
func softMaxCrossEntropyVectorGradient(label: Int) {
    var rng = TestRandom(seed: 33 + UInt64(label))
    let z: Vector<Double> = rng.vector(5, in: -3...3)
    checkGradient("softMaxCrossEntropy label \(label)",
                  of: { softMaxCrossEntropy(logits: $0, label: label) }, at: z, rng: &rng)
    // Same value and gradient as the composition it stands for.
    var oneHot = Vector<Double>.zeros(5)
    oneHot[label] = 1
    expectFusedMatchesComposition("label \(label)", { softMaxCrossEntropy(logits: $0, label: label) },
                                  target: oneHot, at: z)
    // Stable for large logits, where the composition would overflow: check at z + 800 with an
    // absolute step (a relative one would be far too large there).
    checkGradient("softMaxCrossEntropy label \(label) at logits + 800",
                  of: { softMaxCrossEntropy(logits: $0, label: label) }, at: z + 800, rng: &rng,
                  stepScale: 1e-5 / 803)
}

@Test("softMaxCrossEntropy against a target distribution, soft and one-hot")
func softMaxCrossEntropyTargetGradient() {
    var rng = TestRandom(seed: 39)
    let raw: Vector<Double> = rng.vector(5, in: 0.1...1)
    var oneHot = Vector<Double>.zeros(5)
    oneHot[3] = 1
    // A target that does not sum to one too (the loss is linear in the target).
    for (name, target) in [("soft", (1 / raw.sum) * raw), ("one-hot", oneHot), ("unnormalised", raw)] {
        let z: Vector<Double> = rng.vector(5, in: -3...3)
        checkGradient("softMaxCrossEntropy \(name) target",
                      of: { softMaxCrossEntropy(logits: $0, target: target) }, at: z, rng: &rng)
        // Same value and gradient as the composition it stands for.
        expectFusedMatchesComposition("\(name) target", { softMaxCrossEntropy(logits: $0, target: target) },
                                      target: target, at: z)
        checkGradient("softMaxCrossEntropy \(name) target at logits + 800",
                      of: { softMaxCrossEntropy(logits: $0, target: target) }, at: z + 800, rng: &rng,
                      stepScale: 1e-5 / 803)
    }
    // With a one-hot target it is the label form, bit for bit.
    let z: Vector<Double> = rng.vector(5, in: -3...3)
    let byTarget = backprop({ softMaxCrossEntropy(logits: $0, target: oneHot) }, z)
    let byLabel = backprop({ softMaxCrossEntropy(logits: $0, label: 3) }, z)
    #expect(byTarget.value == byLabel.value, "target \(byTarget.value), label \(byLabel.value)")
    #expect(byTarget.gradient == byLabel.gradient, "target \(byTarget.gradient), label \(byLabel.gradient)")
}

@Test("softMaxCrossEntropy of a batch, odd shapes")
func softMaxCrossEntropyMatrixGradient() {
    var rng = TestRandom(seed: 34)
    let cases: [(rows: Int, classes: Int)] = [(4, 3), (1, 3), (5, 2), (3, 1), (1, 1), (7, 10)]
    for (rows, classes) in cases {
        let z: Matrix<Double> = rng.matrix(rows, classes, in: -3...3)
        let labels = (0..<rows).map { _ in Int(rng.next() % UInt64(classes)) }
        checkGradient("softMaxCrossEntropy batch \(rows)x\(classes) labels \(labels)",
                      of: { softMaxCrossEntropy(logits: $0, labels: labels) }, at: z, rng: &rng)
        // The batch loss is the sum of the per-row losses.
        let batch = evalBP({ softMaxCrossEntropy(logits: $0, labels: labels) }, z)
        let perRow = (0..<rows).reduce(0.0) { sum, i in
            sum + evalBP({ softMaxCrossEntropy(logits: $0, label: labels[i]) }, z.row(i))
        }
        #expect(abs(batch - perRow) <= 1e-12 * max(1, abs(perRow)), "batch \(batch) vs rows \(perRow)")
    }
}

// MARK: - Lenses and setting

@Test("key-path lens reads on a BackpropFields struct, a Pair and an Array")
func lensReadGradient() {
    var rng = TestRandom(seed: 41)
    let affine = Affine.random(inputs: 4, outputs: 3, &rng)
    let x: Vector<Double> = rng.vector(4)
    let checked = checkGradient("affine through lenses",
                                of: { a in matvec(a.weights, constVar(x)) + a[\.biases] },
                                at: affine, rng: &rng)
    #expect(checked.total == 15)
    checkGradient("the same field read twice",
                  of: { a in a.biases * exp(a[\.biases]) }, at: affine, rng: &rng)

    let pair = Pair(rng.vector(3) as Vector<Double>, rng.matrix(2, 3) as Matrix<Double>)
    checkGradient("Pair lenses", of: { p in matvec(p.second, p.first) }, at: pair, rng: &rng)

    let list: [Vector<Double>] = [rng.vector(3), rng.vector(3), rng.vector(3)]
    checkGradient("Array element lenses",
                  of: { xs in xs[\.[0]] * xs[\.[2]] - logistic(xs[\.[1]]) }, at: list, rng: &rng)
    checkGradient("Array index subscripts",
                  of: { xs in xs[0] * xs[2] - logistic(xs[1]) + xs[0] }, at: list, rng: &rng)

    let stack = AffineStack.random(sizes: [3, 4, 2], &rng)
    let input: Vector<Double> = rng.vector(3)
    checkGradient("nested lenses through a stack of layers",
                  of: { s in runStack(s, constVar(input)) }, at: stack, rng: &rng)
    checkGradient("a field of an element, read twice through different lenses",
                  of: { s in s.layers[1].biases * s[\.layers[1].biases] + s.layers[0].biases.sum() * s.layers[1].biases },
                  at: stack, rng: &rng)
}

@Test("setting a field: gradient flows to the new field value and the rest of the whole")
func settingGradient() {
    var rng = TestRandom(seed: 42)
    let affine = Affine.random(inputs: 3, outputs: 4, &rng)
    let v: Vector<Double> = rng.vector(4)
    let x: Vector<Double> = rng.vector(3)
    let f = { (a: BVar<Affine>, v: BVar<Vector<Double>>) -> BVar<Vector<Double>> in
        let s = a.setting(\.biases, to: exp(v))
        return matvec(s.weights, constVar(x)) * s.biases + s.biases
    }
    checkGradient2("setting biases", of: f, at: affine, v, rng: &rng)
    // The replaced field gets no gradient at all, and the non-parameter field rides along.
    let (ga, _) = gradBP2({ f($0, $1).sum() }, affine, v)
    #expect(ga.biases == .zeros(4))
    #expect(ga.name == affine.name)

    // Setting a field of a stack through a nested key path.
    let stack = AffineStack.random(sizes: [2, 3, 2], &rng)
    let input: Vector<Double> = rng.vector(2)
    let w: Matrix<Double> = rng.matrix(2, 3)
    checkGradient2("setting layers[1].weights",
                   of: { s, w in runStack(s.setting(\.layers[1].weights, to: w), constVar(input)) },
                   at: stack, w, rng: &rng)
}

// MARK: - The checker itself

@Test("the gradient checker reports a wrong pullback, with the coordinate and both numbers")
func checkerCatchesWrongPullback() throws {
    var rng = TestRandom(seed: 51)
    let x: Vector<Double> = rng.vector(4, in: 0.5...2)
    // d/dx x^2 is 2x; this pullback says 2.001x.
    let almostSquare = op1 { (v: Vector<Double>) in (v * v, { g in 2.001 * (g * v) }) }
    var result: GradientCheckResult?
    withKnownIssue("a pullback off by 0.05% must fail the check") {
        result = checkGradient("deliberately wrong square", of: { almostSquare($0) }, at: x, rng: &rng)
    }
    // The relative error is 0.001 / 2.001 on every coordinate.
    let maxError = try #require(result).maxRelativeError
    #expect(abs(maxError - 0.001 / 2.001) <= 1e-7, "reported \(maxError)")
}
