import Engine
import Testing

/// A value whose entries can be listed and rebuilt, so that a finite-difference check can
/// nudge one entry at a time.
protocol Nudgeable: Backprop {
    /// The entries, in a fixed order.
    var entries: [Double] { get }
    /// A value shaped like this one holding the next entries of `source`.
    func rebuilt(from source: inout ArraySlice<Double>) -> Self
}

extension Nudgeable {
    /// A value shaped like this one holding `entries`.
    func rebuilt(from entries: [Double]) -> Self {
        var source = entries[...]
        let value = rebuilt(from: &source)
        precondition(source.isEmpty, "\(source.count) entries left over")
        return value
    }
}

extension Double: Nudgeable {
    var entries: [Double] { [self] }
    func rebuilt(from source: inout ArraySlice<Double>) -> Double { source.removeFirst() }
}

extension Vector: Nudgeable where Scalar == Double {
    var entries: [Double] { scalars }
    func rebuilt(from source: inout ArraySlice<Double>) -> Vector {
        defer { source.removeFirst(count) }
        return Vector(Array(source.prefix(count)))
    }
}

extension Matrix: Nudgeable where Scalar == Double {
    var entries: [Double] { scalars }
    func rebuilt(from source: inout ArraySlice<Double>) -> Matrix {
        defer { source.removeFirst(count) }
        return Matrix(rows: rows, columns: columns, scalars: Array(source.prefix(count)))
    }
}

extension Pair: Nudgeable where First: Nudgeable, Second: Nudgeable {
    var entries: [Double] { first.entries + second.entries }
    func rebuilt(from source: inout ArraySlice<Double>) -> Pair {
        let a = first.rebuilt(from: &source)
        return Pair(a, second.rebuilt(from: &source))
    }
}

extension Array: Nudgeable where Element: Nudgeable {
    var entries: [Double] { flatMap(\.entries) }
    func rebuilt(from source: inout ArraySlice<Double>) -> [Element] {
        map { $0.rebuilt(from: &source) }
    }
}

/// What one gradient check saw.
struct GradientCheckResult {
    /// Coordinates nudged, and the number of coordinates of the input.
    var checked: Int
    var total: Int
    /// The largest per-entry relative error `|a - n| / max(|a|, |n|, floor)`.
    var maxRelativeError: Double
    /// `‖a - n‖ / max(‖a‖, ‖n‖)` over the nudged coordinates.
    var normRelativeError: Double
}

/// `y · probe` as a primitive of its own, so that reducing a tensor result to a scalar does
/// not go through the operations under test (every entry of `y` counts, with its own weight).
func contracted<B: ElementwiseArithmetic>(_ y: BVar<B>, with probe: B) -> BVar<B.Scalar> {
    op1 { (y: B) in (y.dot(probe), { g in g * probe }) }(y)
}

/// A random value shaped like `y`, entries of magnitude 0.5...1.5 and random sign.
func randomProbe<B: ElementwiseArithmetic>(shapedLike y: B, _ rng: inout TestRandom) -> B
where B.Scalar == Double {
    y.map { _ in rng.signed(0.5...1.5) }
}

/// Compares `analytic` with central differences of `objective` at `x`, coordinate by
/// coordinate (all of them, or `maxCoordinates` chosen at random), and records a failure that
/// names the coordinate and both numbers for every entry off by more than `tolerance`.
///
/// The step is `stepScale * max(1, |x_i|)`; the error of an entry is relative to the larger of
/// the two numbers, or to a thousandth of the largest gradient entry for entries near zero
/// (where central differences cannot be relatively accurate).
@discardableResult
func expectGradientMatches<A: Nudgeable>(
    _ name: String, analytic: A, objective: (A) -> Double, at x: A,
    rng: inout TestRandom, maxCoordinates: Int = 80, stepScale: Double = 1e-5,
    tolerance: Double = 1e-6, sourceLocation: SourceLocation = #_sourceLocation
) -> GradientCheckResult {
    let xs = x.entries, gs = analytic.entries
    guard gs.count == xs.count else {
        Issue.record("\(name): gradient has \(gs.count) entries, input has \(xs.count)",
                     sourceLocation: sourceLocation)
        return GradientCheckResult(checked: 0, total: xs.count, maxRelativeError: .infinity,
                                   normRelativeError: .infinity)
    }
    let indices = rng.sampleIndices(maxCoordinates, of: xs.count)
    var numeric = [Double]()
    for i in indices {
        let h = stepScale * max(1, abs(xs[i]))
        var plus = xs, minus = xs
        plus[i] += h
        minus[i] -= h
        let fPlus = objective(x.rebuilt(from: plus)), fMinus = objective(x.rebuilt(from: minus))
        numeric.append((fPlus - fMinus) / (plus[i] - minus[i]))
    }
    let picked = indices.map { gs[$0] }
    let largest = zip(picked, numeric).map { max(abs($0), abs($1)) }.max() ?? 0
    let floor = max(1e-3 * largest, 1e-300)
    var worst = (error: 0.0, index: -1, analytic: 0.0, numeric: 0.0)
    var failures = 0
    for (k, i) in indices.enumerated() {
        let a = picked[k], n = numeric[k]
        let error = abs(a - n) / max(abs(a), abs(n), floor)
        if error > worst.error || worst.index < 0 { worst = (error, i, a, n) }
        if !(error <= tolerance) {
            failures += 1
            if failures <= 6 {
                Issue.record("""
                    \(name): coordinate \(i) of \(xs.count) (x = \(xs[i])): analytic \(a), \
                    numeric \(n), relative error \(error) > \(tolerance)
                    """, sourceLocation: sourceLocation)
            }
        }
    }
    if failures > 6 {
        Issue.record("\(name): \(failures) of \(indices.count) coordinates off in all",
                     sourceLocation: sourceLocation)
    }
    var diff = 0.0, normA = 0.0, normN = 0.0
    for (a, n) in zip(picked, numeric) {
        diff += (a - n) * (a - n)
        normA += a * a
        normN += n * n
    }
    let normError = diff == 0 ? 0 : diff.squareRoot() / max(normA, normN).squareRoot()
    #expect(normError <= tolerance, "\(name): norm relative error \(normError)",
            sourceLocation: sourceLocation)
    print("""
        gradient check \(name): \(indices.count)/\(xs.count) coordinates, max relative error \
        \(worst.error) at \(worst.index) (analytic \(worst.analytic), numeric \(worst.numeric)), \
        norm relative error \(normError)
        """)
    return GradientCheckResult(checked: indices.count, total: xs.count,
                               maxRelativeError: worst.error, normRelativeError: normError)
}

/// Checks the gradient of `f` at `x`: the result is contracted with a random probe, the
/// analytic gradient comes from `backprop` (and must equal `gradBP`'s exactly, the value
/// `evalBP`'s), the numeric one from central differences of `evalBP`.
@discardableResult
func checkGradient<A: Nudgeable, B: ElementwiseArithmetic>(
    _ name: String, of f: (BVar<A>) -> BVar<B>, at x: A, rng: inout TestRandom,
    maxCoordinates: Int = 80, stepScale: Double = 1e-5, tolerance: Double = 1e-6,
    sourceLocation: SourceLocation = #_sourceLocation
) -> GradientCheckResult where B.Scalar == Double {
    let y = evalBP(f, x)
    let probe = randomProbe(shapedLike: y, &rng)
    let (value, analytic) = backprop({ contracted(f($0), with: probe) }, x)
    #expect(value == y.dot(probe), "\(name): backprop's value differs from evalBP's",
            sourceLocation: sourceLocation)
    let viaGradBP = gradBP({ contracted(f($0), with: probe) }, x)
    #expect(viaGradBP.entries == analytic.entries, "\(name): gradBP differs from backprop",
            sourceLocation: sourceLocation)
    return expectGradientMatches(name, analytic: analytic,
                                 objective: { evalBP(f, $0).dot(probe) }, at: x, rng: &rng,
                                 maxCoordinates: maxCoordinates, stepScale: stepScale,
                                 tolerance: tolerance, sourceLocation: sourceLocation)
}

/// `checkGradient` for a function of two arguments, through `backprop2`, `gradBP2` and
/// `evalBP2`; the two gradients are checked together, as one `Pair`.
@discardableResult
func checkGradient2<A: Nudgeable, B: Nudgeable, C: ElementwiseArithmetic>(
    _ name: String, of f: (BVar<A>, BVar<B>) -> BVar<C>, at x: A, _ y: B,
    rng: inout TestRandom, maxCoordinates: Int = 80, stepScale: Double = 1e-5,
    tolerance: Double = 1e-6, sourceLocation: SourceLocation = #_sourceLocation
) -> GradientCheckResult where C.Scalar == Double {
    let z = evalBP2(f, x, y)
    let probe = randomProbe(shapedLike: z, &rng)
    let (value, (gx, gy)) = backprop2({ contracted(f($0, $1), with: probe) }, x, y)
    #expect(value == z.dot(probe), "\(name): backprop2's value differs from evalBP2's",
            sourceLocation: sourceLocation)
    let (hx, hy) = gradBP2({ contracted(f($0, $1), with: probe) }, x, y)
    #expect(hx.entries == gx.entries && hy.entries == gy.entries,
            "\(name): gradBP2 differs from backprop2", sourceLocation: sourceLocation)
    return expectGradientMatches(name, analytic: Pair(gx, gy),
                                 objective: { evalBP2(f, $0.first, $0.second).dot(probe) },
                                 at: Pair(x, y), rng: &rng, maxCoordinates: maxCoordinates,
                                 stepScale: stepScale, tolerance: tolerance,
                                 sourceLocation: sourceLocation)
}

/// The element-wise product `a * b`. On `BVar<Double>` (and `BVar<Float>`) the operator `*` is
/// ambiguous: the element-wise product and "a scalar variable times a tensor variable" have the
/// same signature when the value is itself a scalar, so scalar code calls this generic function.
func product<V: ElementwiseArithmetic>(_ a: BVar<V>, _ b: BVar<V>) -> BVar<V> { a * b }

/// "A scalar variable times a tensor variable", callable with a scalar as the tensor.
func scaled<V: ElementwiseArithmetic>(_ c: BVar<V.Scalar>, _ a: BVar<V>) -> BVar<V> { scale(a, by: c) }
