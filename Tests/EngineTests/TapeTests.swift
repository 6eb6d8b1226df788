import Engine
import Foundation
import Synchronization
import Testing

// How the tape records and replays: fan-out, constants, lenses, lifetimes, one tape per call.

/// Counts how often pullbacks run (a class, so that the closures share it).
final class PullbackCounter {
    var calls = 0
}

/// An object whose lifetime the tests watch.
final class Tracked {
    let scale: Double
    init(scale: Double) { self.scale = scale }
}

// MARK: - Fan-out

@Test("a variable used twice gets the sum of both gradients")
func fanOutSumsGradients() {
    #expect(gradBP({ product($0, $0) }, 3.0) == 6.0)
    #expect(gradBP({ exp($0) + $0 }, 0.5) == Foundation.exp(0.5) + 1)
    let v = Vector<Double>([1, -2, 0.5, 4])
    // d/dv (v·v + sum v) = 2v + 1.
    #expect(gradBP({ $0.dot($0) + $0.sum() }, v) == Vector([3, -3, 2, 9]))
    // Three uses, through different operations.
    let g = gradBP({ x in product(x, x) + 2 * x - log(x) }, 2.0)
    #expect(abs(g - (2 * 2 + 2 - 1.0 / 2)) <= 1e-15)
}

@Test("a weight matrix used in two branches of a network gets both branches' gradients")
func fanOutAcrossBranches() {
    var rng = TestRandom(seed: 51)
    let w: Matrix<Double> = rng.matrix(4, 4)
    let x: Vector<Double> = rng.vector(4)
    let probe: Vector<Double> = rng.vector(4)
    // The same square layer twice (tied weights): out = W logistic(W x), and a skip branch W x.
    func network(_ first: BVar<Matrix<Double>>, _ second: BVar<Matrix<Double>>) -> BVar<Double> {
        let hidden = matvec(first, constVar(x))
        let out = matvec(second, logistic(hidden)) + hidden
        return out.dot(constVar(probe))
    }
    let tied = gradBP({ network($0, $0) }, w)
    let firstOnly = gradBP({ network($0, constVar(w)) }, w)
    let secondOnly = gradBP({ network(constVar(w), $0) }, w)
    let sum = firstOnly + secondOnly
    for i in 0..<4 {
        for j in 0..<4 {
            #expect(abs(tied[i, j] - sum[i, j]) <= 1e-15 * max(1, abs(sum[i, j])),
                    "entry (\(i), \(j)): tied \(tied[i, j]), sum of branches \(sum[i, j])")
        }
    }
    #expect(firstOnly != .zeros(rows: 4, columns: 4) && secondOnly != .zeros(rows: 4, columns: 4))
}

@Test("a lens read and a use of the whole value both reach the input's gradient")
func fanOutThroughLensAndWhole() {
    var rng = TestRandom(seed: 52)
    let affine = Affine.random(inputs: 2, outputs: 3, &rng)
    let replacement: Matrix<Double> = rng.matrix(3, 2)
    let g = gradBP({ a in
        let biases = a.biases
        let whole = a.setting(\.weights, to: constVar(replacement))
        return biases.sum() + whole.biases.sum() + whole.weights.sum()
    }, affine)
    #expect(g.biases == Vector(repeating: 2, count: 3))
    #expect(g.weights == .zeros(rows: 3, columns: 2))
    #expect(g.name == affine.name)
}

// MARK: - Constants

@Test("a constant argument gets no gradient and its pullback is never run")
func constantArgumentsSkipPullbacks() {
    let counterA = PullbackCounter(), counterB = PullbackCounter()
    let product = op2 { (a: Double, b: Double) in
        (a * b, { g in counterA.calls += 1; return g * b }, { g in counterB.calls += 1; return g * a })
    }
    #expect(gradBP({ x in product(x, constVar(3.0)) }, 2.0) == 3.0)
    #expect(counterA.calls == 1)
    #expect(counterB.calls == 0)
    #expect(gradBP({ x in product(constVar(5.0), x) }, 2.0) == 5.0)
    #expect(counterA.calls == 1)
    #expect(counterB.calls == 1)

    // Both arguments constant: the result is a constant, nothing is recorded.
    let both = gradBP({ x in product(constVar(5.0), constVar(7.0)) + x }, 2.0)
    #expect(both == 1)
    #expect(counterA.calls == 1 && counterB.calls == 1)

    let counters = (PullbackCounter(), PullbackCounter(), PullbackCounter())
    let fused = op3 { (a: Double, b: Double, c: Double) in
        (a * b + c,
         { g in counters.0.calls += 1; return g * b },
         { g in counters.1.calls += 1; return g * a },
         { g in counters.2.calls += 1; return g })
    }
    let (ga, gc) = gradBP2({ a, c in fused(a, constVar(4.0), c) }, 1.5, 2.5)
    #expect(ga == 4 && gc == 1)
    #expect(counters.0.calls == 1 && counters.1.calls == 0 && counters.2.calls == 1)

    let unary = PullbackCounter()
    let square = op1 { (a: Double) in (a * a, { g in unary.calls += 1; return 2 * a * g }) }
    let g = gradBP({ x in
        let c = square(constVar(3.0))
        #expect(c.isConstant)
        #expect(c.value == 9)
        return product(x, c)
    }, 2.0)
    #expect(g == 9)
    #expect(unary.calls == 0)
}

@Test("constants and results of constants stay constant; variables do not")
func constancyPropagates() {
    _ = gradBP({ (x: BVar<Vector<Double>>) -> BVar<Double> in
        let c = constVar(Vector<Double>([1, 2, 3]))
        #expect(!x.isConstant)
        #expect(c.isConstant)
        #expect((c * c).isConstant)
        #expect(exp(c).sum().isConstant)
        #expect(!(x * c).isConstant)
        #expect(!(c + x).isConstant)
        return (x * c).sum()
    }, Vector([4, 5, 6]))
    let pair = constVar(Pair(1.0, 2.0))
    #expect(pair.first.isConstant)
    #expect(pair.setting(\.second, to: constVar(3.0)).isConstant)
}

@Test("evalBP and evalBP2 record nothing and run no pullback")
func evalRecordsNothing() {
    let counter = PullbackCounter()
    let square = op1 { (a: Double) in (a * a, { g in counter.calls += 1; return 2 * a * g }) }
    let value = evalBP({ x in
        #expect(x.isConstant)
        return square(x) + 1
    }, 3.0)
    #expect(value == 10)
    #expect(counter.calls == 0)
    let value2 = evalBP2({ x, y in
        #expect(x.isConstant && y.isConstant)
        return product(square(x), y)
    }, 2.0, 5.0)
    #expect(value2 == 20)
    #expect(counter.calls == 0)
    // The same function under gradBP does run the pullback, once.
    #expect(gradBP({ square($0) + 1 }, 3.0) == 6)
    #expect(counter.calls == 1)
}

@Test("the gradient of a function that ignores its input is zero, shaped like the input")
func ignoredInputHasZeroGradient() {
    let v = Vector<Double>([1, 2, 3])
    let result = backprop({ (_: BVar<Vector<Double>>) in constVar(3.0) }, v)
    #expect(result.value == 3)
    #expect(result.gradient == .zeros(3))
    // Using only the value (not the variable) is ignoring it too.
    #expect(gradBP({ x in constVar(x.value).sum() }, v) == .zeros(3))
    var rng = TestRandom(seed: 53)
    let affine = Affine.random(inputs: 3, outputs: 2, name: "kept", &rng)
    let g = gradBP({ (_: BVar<Affine>) in constVar(1.0) }, affine)
    #expect(g == affine.zero())
    #expect(g.name == "kept")
    let (gx, gy) = gradBP2({ x, _ in x.sum() }, v, Matrix<Double>(rows: 2, columns: 5, repeating: 7))
    #expect(gx == Vector(repeating: 1, count: 3))
    #expect(gy == .zeros(rows: 2, columns: 5))
}

// MARK: - Lenses

@Test("a lens's gradient lands in its field; the other fields get zeros")
func lensGradientLandsInItsField() {
    var rng = TestRandom(seed: 54)
    let affine = Affine.random(inputs: 3, outputs: 2, name: "lens", &rng)
    let g = gradBP({ $0.biases.sum() }, affine)
    #expect(g.biases == Vector(repeating: 1, count: 2))
    #expect(g.weights == .zeros(rows: 2, columns: 3))
    #expect(g.name == "lens")
    let h = gradBP({ $0[\.weights].sum() }, affine)
    #expect(h.weights == Matrix(rows: 2, columns: 3, repeating: 1))
    #expect(h.biases == .zeros(2))

    let p = gradBP({ $0.second * 3 }, Pair(Vector<Double>([1, 2]), 5.0))
    #expect(p.first == .zeros(2) && p.second == 3)
}

@Test("a nested lens (\\.layers[1].biases) reaches only that field")
func nestedLensGradient() {
    var rng = TestRandom(seed: 55)
    let stack = AffineStack.random(sizes: [2, 3, 4, 2], &rng)
    let probe: Vector<Double> = rng.vector(4)
    let viaKeyPath = gradBP({ $0[\.layers[1].biases].dot(constVar(probe)) }, stack)
    let viaChain = gradBP({ $0.layers[\.[1]].biases.dot(constVar(probe)) }, stack)
    let viaIndex = gradBP({ $0.layers[1].biases.dot(constVar(probe)) }, stack)
    for g in [viaKeyPath, viaChain, viaIndex] {
        #expect(g.layers.count == 3)
        #expect(g.layers[1].biases == probe)
        #expect(g.layers[1].weights == .zeros(rows: 4, columns: 3))
        for i in [0, 2] {
            #expect(g.layers[i] == stack.layers[i].zero(), "layer \(i) got a gradient")
        }
        #expect(g.layers.map(\.name) == stack.layers.map(\.name))
    }
}

/// A struct with a computed field, for lenses without a stored offset.
struct Aliased: Backprop, Equatable {
    var raw: Vector<Double>
    /// `raw` under another name (computed, so its key path has no offset).
    var alias: Vector<Double> {
        get { raw }
        set { raw = newValue }
    }
    func zero() -> Aliased { Aliased(raw: raw.zero()) }
    func one() -> Aliased { Aliased(raw: raw.one()) }
    mutating func add(_ other: Aliased) { raw.add(other.raw) }
}

@Test("a StoredField reads the same field as its key path, stored or computed")
func storedFieldLenses() {
    var rng = TestRandom(seed: 57)
    let affine = Affine.random(inputs: 3, outputs: 2, name: "field", &rng)
    let biases = StoredField(\Affine.biases)
    #expect(biases.offset != nil)
    let probe: Vector<Double> = rng.vector(2)
    let viaField = gradBP({ $0[biases].dot(constVar(probe)) }, affine)
    let viaKeyPath = gradBP({ $0[\.biases].dot(constVar(probe)) }, affine)
    #expect(viaField == viaKeyPath && viaField.biases == probe)

    let alias = StoredField(\Aliased.alias)
    #expect(alias.offset == nil)
    let x = Aliased(raw: Vector([1, 2]))
    #expect(evalBP({ $0[alias] }, x) == Vector([1, 2]))
    let g = gradBP({ ($0[alias] * $0[alias]).sum() }, x)   // fan-out through a computed lens
    #expect(g.raw == Vector([2, 4]))
}

@Test("stored fields of stored fields and elements of elements reach only their part")
func deepLensPaths() {
    // A field of a field: one offset into the root's gradient.
    let nested = gradBP({ $0.first.second * 2 + $0.second }, Pair(Pair(1.0, 2.0), 3.0))
    #expect(nested.first.first == 0 && nested.first.second == 2 && nested.second == 1)
    // An element of an element, and a field of an element of a field.
    let grid = gradBP({ $0[1][0] * 3 + $0[0][1] }, [[1.0, 2.0], [3.0, 4.0]])
    #expect(grid == [[0, 1], [3, 0]])
    let pairs = gradBP({ $0.second[1].first * 5 }, Pair(1.0, [Pair(1.0, 2.0), Pair(3.0, 4.0)]))
    #expect(pairs.first == 0 && pairs.second.map(\.first) == [0, 5] && pairs.second.map(\.second) == [0, 0])
}

// MARK: - Lifetimes

@Test("nothing a pullback captured outlives the gradient computation")
func noRetainCycles() {
    weak var watched: Tracked?
    weak var unused: Tracked?
    let counter = PullbackCounter()
    let g = gradBP({ (x: BVar<Vector<Double>>) -> BVar<Double> in
        let tracked = Tracked(scale: 2)
        watched = tracked
        let scaled = op1 { (v: Vector<Double>) in
            (tracked.scale * v, { g in counter.calls += 1; return tracked.scale * g })
        }
        // A branch whose result is dropped: its step is recorded but gets no gradient.
        let dropped = Tracked(scale: 3)
        unused = dropped
        _ = op1 { (v: Vector<Double>) in (dropped.scale * v, { dropped.scale * $0 }) }(x)
        return scaled(x).sum()
    }, Vector([1, 2, 3]))
    #expect(g == Vector(repeating: 2, count: 3))
    #expect(counter.calls == 1)
    #expect(watched == nil, "an object captured by a pullback is still alive after gradBP")
    #expect(unused == nil, "an object captured by an unused pullback is still alive after gradBP")

    // A function whose result is constant never runs backward; its tape must still go away.
    weak var constantCase: Tracked?
    _ = gradBP({ (x: BVar<Double>) -> BVar<Double> in
        let tracked = Tracked(scale: 1)
        constantCase = tracked
        _ = op1 { (v: Double) in (v, { tracked.scale * $0 }) }(x)
        return constVar(1.0)
    }, 1.0)
    #expect(constantCase == nil, "the tape of a constant result is still alive after gradBP")
}

@Test("a variable that escapes its call stays readable, and an operation on it records nothing")
func escapedVariablesAreSafe() {
    var escaped: BVar<Pair<Vector<Double>, Double>>?
    var escapedResult: BVar<Vector<Double>>?
    let g = gradBP({ (p: BVar<Pair<Vector<Double>, Double>>) -> BVar<Double> in
        escaped = p
        let y = p.second * exp(p.first)
        escapedResult = y
        return y.sum()
    }, Pair(Vector([0, 1]), 2.0))
    #expect(g.first == Vector([2, 2 * Foundation.exp(1)]) && g.second == 1 + Foundation.exp(1))
    // After the call: values and lenses read as before; operations make constants.
    let p = escaped!, y = escapedResult!
    #expect(p.first.value == Vector([0, 1]) && !p.first.isConstant)
    #expect(y.value == Vector([2, 2 * Foundation.exp(1)]))
    #expect(exp(y).isConstant && (y * p.first).isConstant && p.first.sum().isConstant)
    // An element of an escaped array: its value reads, it takes no gradient any more.
    var escapedArray: BVar<[Double]>?
    #expect(gradBP({ (a: BVar<[Double]>) in escapedArray = a; return a[1] * a[0] }, [2.0, 3.0]) == [3, 2])
    #expect(escapedArray![1].value == 3 && escapedArray![1].isConstant)
    // Later calls on this thread reuse the tape; the escaped variables do not join them.
    for x in [1.0, 2.0] {
        #expect(gradBP({ $0 * $0 }, x) == 2 * x)
        #expect(exp(y).isConstant && exp(y).value == y.value.exp())
    }
}

// MARK: - One tape per call

@Test("gradient computations on different threads do not interfere")
func concurrentGradientsMatchSequential() async {
    var rng = TestRandom(seed: 56)
    let stack = AffineStack.random(sizes: [6, 8, 5, 3], &rng)   // shared by every task
    let inputs: [Vector<Double>] = (0..<8).map { _ in rng.vector(6) }
    let probe: Vector<Double> = rng.vector(3)
    @Sendable func gradient(_ x: Vector<Double>) -> AffineStack {
        gradBP({ runStack($0, constVar(x)).dot(constVar(probe)) }, stack)
    }
    let sequential = inputs.map(gradient)
    for round in 0..<3 {
        let concurrent = await withTaskGroup(of: (Int, AffineStack).self) { group in
            for (i, x) in inputs.enumerated() {
                group.addTask {
                    var g = gradient(x)
                    for _ in 0..<4 { g = gradient(x) }   // keep the tasks overlapping
                    return (i, g)
                }
            }
            var results = [AffineStack?](repeating: nil, count: inputs.count)
            for await (i, g) in group { results[i] = g }
            return results
        }
        for i in inputs.indices {
            #expect(concurrent[i] == sequential[i], "round \(round), input \(i): concurrent gradient differs")
        }
    }
    // The inputs differ, so the gradients must too (the check above is not vacuous).
    #expect(sequential[0] != sequential[1])
}

@Test("a gradient computed inside another's function has its own tape")
func nestedCallsHaveTheirOwnTapes() {
    let outer = backprop({ (x: BVar<Double>) -> BVar<Double> in
        // Inside: d/dy (y * y * x) at y = 3, with x's value a constant: 6x.
        let inner = gradBP({ (y: BVar<Double>) in y * y * constVar(x.value) }, 3.0)
        return x * x * constVar(inner)
    }, 2.0)
    #expect(outer.value == 48)       // x^2 * 6x at 2, the inner result taken as a constant
    #expect(outer.gradient == 48)    // d/dx (x^2 * 12) = 24x
    // Calls after a nested one still get clean tapes.
    for x in [1.0, 2.0, 3.0] {
        #expect(gradBP({ $0 * $0 }, x) == 2 * x)
    }
}

@Test("tapes that move between threads (nested calls, threads that end) give every call its own right gradient")
func tapesMovingBetweenThreads() {
    // A nested call's tape and the spare tape of a thread that ends go to a process-wide pool,
    // from which other threads take them; variables refer to their tape without a count, so a
    // tape handed to the wrong call would show here as a wrong gradient (or a crash).
    @Sendable func nested(_ x: Double) -> Double {
        backprop({ (v: BVar<Double>) -> BVar<Double> in
            // d/dy (y * y * v) at y = x + 1, with v's value a constant: 2 (x + 1) v.
            let inner = gradBP({ (y: BVar<Double>) in y * y * constVar(v.value) }, x + 1)
            return v * v * constVar(inner)
        }, x).gradient
    }
    let xs = (0..<12).map { 0.5 + Double($0) / 4 }
    let expected = xs.map(nested)
    #expect(expected[3] == 4 * (xs[3] + 1) * xs[3] * xs[3])   // d/dv (v^2 * 2 (x + 1) x) at v = x
    for round in 0..<3 {
        let results = Mutex([[Double]](repeating: [], count: xs.count))
        let done = DispatchGroup()
        for (i, x) in xs.enumerated() {
            done.enter()
            // A thread of its own, which ends when its work is done (its spare tape goes to the pool).
            Thread {
                let values = (0..<20).map { _ in nested(x) }
                results.withLock { $0[i] = values }
                done.leave()
            }.start()
        }
        done.wait()
        let got = results.withLock { $0 }
        for i in xs.indices {
            #expect(got[i].count == 20 && got[i].allSatisfy { $0 == expected[i] },
                    "round \(round), x = \(xs[i]): \(got[i].prefix(3)) instead of \(expected[i])")
        }
    }
}

// MARK: - Shape descriptions

@Test("shape descriptions name the shapes that mismatch messages report")
func shapeDescriptions() {
    #expect(Matrix<Double>.zeros(rows: 2, columns: 3).shapeDescription == "Matrix[2x3]")
    #expect(Matrix<Float>.zeros(rows: 0, columns: 5).shapeDescription == "Matrix[0x5]")
    #expect(Vector<Double>.zeros(4).description.hasPrefix("Vector[4]("))
    #expect(Matrix<Double>.zeros(rows: 3, columns: 3).description.hasPrefix("Matrix[3x3]("))
}

// MARK: - Nodes kept for the next call

@Test("an operation whose value shares a parameter's storage leaves it unshared after the call (an update is in place)")
func keptNodesHoldNothingOfTheirCall() {
    // The identity shares its input's storage: the node of its result must not keep it.
    let identity = op1 { (v: Vector<Double>) in (v, { $0 }) }
    var parameter = Vector<Double>([1, 2, 3])
    let address = parameter.withUnsafeMutableBufferPointer { UInt(bitPattern: $0.baseAddress) }
    for round in 1...3 {
        let g = gradBP({ (p: BVar<Vector<Double>>) in (identity(p) * p).sum() }, parameter)
        #expect(g == 2 * parameter, "round \(round)")
        // A descent step: in place only if no kept node still holds the parameter's storage.
        parameter.withUnsafeMutableBufferPointer { values in
            #expect(UInt(bitPattern: values.baseAddress) == address, "round \(round): the parameter was copied")
            for i in values.indices { values[i] -= 0.1 * g[i] }
        }
    }
    // The same when the call's result is constant, so that no backward step runs.
    _ = gradBP({ (p: BVar<Vector<Double>>) -> BVar<Double> in _ = identity(p); return constVar(0) }, parameter)
    parameter.withUnsafeMutableBufferPointer { #expect(UInt(bitPattern: $0.baseAddress) == address) }
}

@Test("calls that record different operations one after another on one thread get their own gradients")
func keptNodesOfOtherTypesAreReplaced() {
    // Different sequences of Op1 and Op2 nodes, longer and shorter than the last call's.
    let cases: [(String, (BVar<Double>) -> BVar<Double>, (Double) -> Double)] = [
        ("x*x + exp(x)", { $0 * $0 + exp($0) }, { 2 * $0 + Foundation.exp($0) }),
        ("log(x) * x", { log($0) * $0 }, { Foundation.log($0) + 1 }),
        ("exp(x*x)", { exp($0 * $0) }, { 2 * $0 * Foundation.exp($0 * $0) }),
        ("x", { $0 }, { _ in 1 }),
        ("((x*x)*x)*x - x", { (($0 * $0) * $0) * $0 - $0 }, { 4 * $0 * $0 * $0 - 1 }),
    ]
    for round in 0..<3 {
        for (i, (name, f, derivative)) in cases.enumerated() {
            let x = 0.5 + Double(i + round) / 4
            let g = gradBP(f, x)
            #expect(abs(g - derivative(x)) <= 1e-12 * max(1, abs(derivative(x))), "\(name) at \(x): \(g)")
        }
    }
}
