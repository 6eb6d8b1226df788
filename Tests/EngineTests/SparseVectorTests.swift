@testable import Engine
import Foundation
import Testing

// Products with a mostly-zero vector (an image) and outer products that are written out only
// when read: `Matrix.matvec` and `Matrix.outer` choose the blocked form by themselves, so
// these tests build vectors on both sides of that choice and compare with naive loops.

/// A vector of `count` entries, each nonzero with probability `density` (entries listed in
/// `nonzero` always), values in ±[0.05, 1].
func sparseVector<S: TensorScalar>(_ count: Int, density: Double, nonzero: Set<Int> = [],
                                   _ rng: inout TestRandom) -> Vector<S> {
    Vector(count: count) { out in
        for j in 0..<count {
            let keep = nonzero.contains(j) || rng.uniform(0.0...1.0) < density
            let v: S = rng.signed(0.05...1)
            out[j] = keep ? v : 0
        }
    }
}

/// (rows, columns, density, always-nonzero columns): blocked and dense forms, tails of every
/// length, all-zero and full vectors.
let sparseVectorShapes: [(Int, Int, Double, Set<Int>)] = [
    (3, 64, 0.1, [63]),          // shortest blocked length; a nonzero in the last block
    (7, 70, 0.1, [66, 69]),      // a tail of 6 entries (Float) with nonzeros
    (300, 784, 0.19, []),        // an MNIST-like image
    (5, 101, 0.0, []),           // all zero
    (9, 99, 1.0, []),            // full: dense form
    (4, 200, 0.3, [0, 199]),     // around the density limit
    (1, 5, 0.5, []),             // too short for the blocked form
]

@Test("matvec with a sparse vector equals the naive product (Float and Double, AVX2 and portable: same bits)")
func sparseMatvecMatchesNaive() {
    func check<S: TensorScalar>(_: S.Type, tolerance: Double) {
        var rng = TestRandom(seed: 81)
        for (rows, columns, density, nonzero) in sparseVectorShapes {
            let w: Matrix<S> = rng.matrix(rows, columns)
            let x: Vector<S> = sparseVector(columns, density: density, nonzero: nonzero, &rng)
            let y = w.matvec(x)
            for r in 0..<rows {
                var exact = 0.0
                for j in 0..<columns { exact += Double(w[r, j]) * Double(x[j]) }
                #expect(abs(Double(y[r]) - exact) <= tolerance * (1 + abs(exact)),
                        "\(S.self) \(rows)x\(columns) density \(density), row \(r): \(y[r]) vs \(exact)")
            }
            let avx2 = SparseKernels.usesAVX2
            SparseKernels.usesAVX2 = false
            let portable = w.matvec(x)
            SparseKernels.usesAVX2 = avx2
            #expect(portable.scalars == y.scalars, "\(S.self) \(rows)x\(columns): portable kernels gave other bits")
        }
    }
    check(Float.self, tolerance: 1e-5)
    check(Double.self, tolerance: 1e-12)
}

@Test("outer products: written out on reading, equal to u[r] * v[j]; added in place like the formed matrix")
func pendingOuterProducts() {
    func check<S: TensorScalar>(_: S.Type, tolerance: Double) {
        var rng = TestRandom(seed: 83)
        for (rows, columns, density, nonzero) in sparseVectorShapes {
            let u: Vector<S> = rng.vector(rows)
            let v: Vector<S> = sparseVector(columns, density: density, nonzero: nonzero, &rng)
            let w: Matrix<S> = rng.matrix(rows, columns)
            let alpha: S = -0.37

            // Added before ever being read: one pass over w, the product never formed.
            var added = w
            let outer = Matrix.outer(u, v)
            added.add(outer, scaledBy: alpha)
            #expect(outer.storage.pendingOuter != nil || rows * columns == 0,
                    "\(rows)x\(columns): adding the product wrote it out")

            // Read: every entry is u[r] * v[j] exactly (up to the sign of zero).
            for r in 0..<rows {
                for j in 0..<columns {
                    #expect(outer[r, j] == u[r] * v[j], "\(S.self) \(rows)x\(columns) entry (\(r), \(j))")
                    let expected = Double(w[r, j]) + Double(alpha) * Double(u[r]) * Double(v[j])
                    #expect(abs(Double(added[r, j]) - expected) <= tolerance * (1 + abs(expected)),
                            "\(S.self) \(rows)x\(columns) added entry (\(r), \(j))")
                }
            }
            #expect(outer.storage.pendingOuter == nil, "reading the entries wrote the product out")

            // A zero gradient takes the product as it is (still pending); adding it to a
            // written-out copy of itself doubles it.
            var gradient = Matrix<S>.zeros(rows: rows, columns: columns)
            gradient.add(Matrix.outer(u, v))
            var twice = Matrix(rows: rows, columns: columns, scalars: outer.scalars)
            twice.add(gradient)
            for i in 0..<(rows * columns) {
                #expect(abs(Double(twice.scalars[i]) - 2 * Double(outer.scalars[i])) <= tolerance * (1 + abs(Double(outer.scalars[i]))))
            }
        }
    }
    check(Float.self, tolerance: 1e-6)
    check(Double.self, tolerance: 1e-14)
}

@Test("a pending outer product read by several threads at once is written out once, the same for all")
func pendingOuterConcurrentReads() async {
    var rng = TestRandom(seed: 85)
    let u: Vector<Float> = rng.vector(300)
    let v: Vector<Float> = sparseVector(784, density: 0.2, &rng)
    let expected = Matrix.outer(u, v).scalars
    for _ in 0..<20 {
        let shared = Matrix.outer(u, v)
        let sums = await withTaskGroup(of: [Float].self) { group in
            for _ in 0..<4 { group.addTask { shared.scalars } }
            var all = [[Float]]()
            for await s in group { all.append(s) }
            return all
        }
        #expect(sums.count == 4 && sums.allSatisfy { $0 == expected })
    }
}

@Test("matvec gradient by central differences with a sparse vector (blocked form, with a tail)")
func sparseMatvecGradient() {
    var rng = TestRandom(seed: 87)
    for (rows, columns) in [(3, 70), (2, 64), (5, 131)] {
        let m: Matrix<Double> = rng.matrix(rows, columns)
        let x: Vector<Double> = sparseVector(columns, density: 0.1, nonzero: [columns - 1], &rng)
        #expect(SparseEntries(x).isSparse, "\(columns) entries at 10%: the blocked form is used")
        checkGradient("matvec \(rows)x\(columns) with a constant sparse vector", of: { matvec($0, constVar(x)) },
                      at: m, rng: &rng)
        checkGradient2("matvec \(rows)x\(columns), sparse vector a variable", of: { matvec($0, $1) },
                       at: m, x, rng: &rng)
    }
}

@Test("matvec plus a bias (one primitive) by central differences, dense and sparse vectors")
func matvecPlusGradient() {
    var rng = TestRandom(seed: 89)
    for (rows, columns, density) in [(3, 4, 1.0), (4, 70, 0.1), (2, 131, 0.2), (5, 9, 0.5)] {
        let m: Matrix<Double> = rng.matrix(rows, columns)
        let x: Vector<Double> = sparseVector(columns, density: density, nonzero: [0], &rng)
        let b: Vector<Double> = rng.vector(rows)
        checkGradient2("matvec \(rows)x\(columns) plus bias: matrix and bias", of: { matvec($0, constVar(x), plus: $1) },
                       at: m, b, rng: &rng)
        checkGradient2("matvec \(rows)x\(columns) plus bias: vector and bias", of: { matvec(constVar(m), $0, plus: $1) },
                       at: x, b, rng: &rng)
        let fused = evalBP2({ matvec($0, constVar(x), plus: $1) }, m, b)
        let separate = evalBP2({ matvec($0, constVar(x)) + $1 }, m, b)
        #expect(fused.scalars == separate.scalars, "\(rows)x\(columns): the fused primitive gives the bits of matvec then +")
    }
}

// MARK: - Weights stored by input: `transposedMatvec` and outer products with a sparse row factor

@Test("transposedMatvec plus a bias, sparse and dense vectors: the bias plus the nonzeros' products in column order, same bits portable")
func sparseTransposedMatvecMatchesNaive() {
    func check<S: TensorScalar>(_: S.Type) {
        var rng = TestRandom(seed: 91)
        // (inputs, outputs) pairs: outputs below, at and around the kernels' vector widths.
        for (_, columns, density, nonzero) in sparseVectorShapes {
            for outputs in [1, 3, 8, 13, 64, 67, 300] {
                let w: Matrix<S> = rng.matrix(columns, outputs)
                let x: Vector<S> = sparseVector(columns, density: density, nonzero: nonzero, &rng)
                let b: Vector<S> = rng.vector(outputs)
                let entries = SparseEntries(x)
                let y = w.transposedMatvec(entries, plus: b)
                let unbiased = w.transposedMatvec(entries, plus: nil)
                var expected = [S](), expectedUnbiased = [S]()
                for o in 0..<outputs {
                    var sum = b[o], plain: S = 0
                    for j in 0..<columns where x[j] != 0 {
                        let product = x[j] * w[j, o]
                        sum = sum + product
                        plain = plain + product
                    }
                    expected.append(sum)
                    expectedUnbiased.append(plain)
                }
                let label = "\(S.self) \(columns)->\(outputs) density \(density) (\(entries.isSparse ? "blocked" : "dense"))"
                #expect(y.scalars == expected, "\(label): the kernel's order of summation")
                #expect(unbiased.scalars == expectedUnbiased, "\(label): without a bias")
                let avx2 = SparseKernels.usesAVX2
                SparseKernels.usesAVX2 = false
                let portable = w.transposedMatvec(entries, plus: b)
                SparseKernels.usesAVX2 = avx2
                #expect(portable.scalars == y.scalars, "\(label): portable kernels gave other bits")
            }
        }
    }
    check(Float.self)
    check(Double.self)
}

@Test("a sample's transposedMatvec is the same bits as its row of the sparse batch layer")
func sampleMatchesBatchRow() {
    var rng = TestRandom(seed: 93)
    // Image-like rows: nonzeros only in a band of columns (row 3 all zero), so that each row
    // takes the blocked form, as MNIST images do.
    let samples = Matrix<Float>(rows: 20, columns: 784) { out in
        for r in 0..<20 {
            for c in 0..<784 {
                let v: Float = rng.signed(0.05...1)
                out[r * 784 + c] = r != 3 && (200..<480).contains(c) && rng.uniform(0.0...1.0) < 0.5 ? v : 0
            }
        }
    }
    let w: Matrix<Float> = rng.matrix(784, 300)
    let b: Vector<Float> = rng.vector(300)
    let batch = SparseMatrix(samples).affine(w, b)
    for r in 0..<samples.rows {
        let entries = SparseEntries(samples.row(r))
        #expect(entries.isSparse, "row \(r) takes the blocked form")
        let y = w.transposedMatvec(entries, plus: b)
        #expect(y.scalars == batch.row(r).scalars, "row \(r)")
    }
}

@Test("outer products with a sparse row factor: written out exactly, added to only the nonzeros' rows")
func pendingOuterSparseRows() {
    func check<S: TensorScalar>(_: S.Type, tolerance: Double) {
        var rng = TestRandom(seed: 95)
        for (_, columns, density, nonzero) in sparseVectorShapes {
            for outputs in [1, 7, 8, 67, 300, 520] {
                let x: Vector<S> = sparseVector(columns, density: density, nonzero: nonzero, &rng)
                let g: Vector<S> = rng.vector(outputs)
                let w: Matrix<S> = rng.matrix(columns, outputs)
                let alpha: S = -0.37
                let entries = SparseEntries(x)
                var added = w
                let outer = Matrix.outer(entries, g)
                added.add(outer, scaledBy: alpha)
                #expect(outer.storage.pendingOuter != nil, "adding the product wrote it out")
                for j in 0..<columns {
                    for o in 0..<outputs {
                        #expect(outer[j, o] == x[j] * g[o], "\(S.self) \(columns)x\(outputs) entry (\(j), \(o))")
                        if x[j] == 0 {
                            #expect(added[j, o] == w[j, o], "a zero input's row is left as it was")
                        } else {
                            let expected = Double(w[j, o]) + Double(alpha) * Double(g[o]) * Double(x[j])
                            #expect(abs(Double(added[j, o]) - expected) <= tolerance * (1 + abs(expected)),
                                    "\(S.self) \(columns)x\(outputs) added entry (\(j), \(o))")
                        }
                    }
                }
                if entries.isSparse && SparseKernels.usesAVX2 {
                    var portable = w
                    SparseKernels.usesAVX2 = false
                    portable.add(Matrix.outer(entries, g), scaledBy: alpha)
                    SparseKernels.usesAVX2 = true
                    #expect(portable.scalars == added.scalars, "\(S.self) \(columns)x\(outputs): portable kernels gave other bits")
                }
            }
        }
    }
    check(Float.self, tolerance: 1e-6)
    check(Double.self, tolerance: 1e-14)
}

@Test("transposedMatvec plus a bias (one primitive) by central differences, dense and sparse vectors")
func transposedMatvecPlusGradient() {
    var rng = TestRandom(seed: 97)
    for (columns, outputs, density) in [(4, 3, 1.0), (70, 4, 0.1), (131, 9, 0.2), (9, 5, 0.5)] {
        let m: Matrix<Double> = rng.matrix(columns, outputs)
        let x: Vector<Double> = sparseVector(columns, density: density, nonzero: [0], &rng)
        let b: Vector<Double> = rng.vector(outputs)
        checkGradient2("transposedMatvec \(columns)x\(outputs) plus bias: matrix and bias",
                       of: { transposedMatvec($0, constVar(x), plus: $1) }, at: m, b, rng: &rng)
        checkGradient2("transposedMatvec \(columns)x\(outputs) plus bias: vector and bias",
                       of: { transposedMatvec(constVar(m), $0, plus: $1) }, at: x, b, rng: &rng)
    }
}
