@testable import Engine
import Testing

// The sparse dense-layer primitive `sparseAffine`: its gradient by central differences (in
// Double), its value and weight gradient against the dense `affine` on random sparse inputs of
// odd shapes, and the same bits on 1 and 2 threads and with the portable kernels.

/// A random matrix where each entry is nonzero with probability `density`; rows listed in
/// `emptyRows` are all zero, rows in `denseRows` all nonzero.
func randomSparse<S: TensorScalar>(_ rows: Int, _ columns: Int, density: Double, emptyRows: Set<Int> = [],
                                   denseRows: Set<Int> = [], _ rng: inout TestRandom) -> Matrix<S> {
    Matrix(rows: rows, columns: columns) { out in
        for r in 0..<rows {
            for c in 0..<columns {
                let keep = denseRows.contains(r) || (!emptyRows.contains(r) && rng.uniform(0.0...1.0) < density)
                let v: S = rng.signed(0.05...1)
                out[r * columns + c] = keep ? v : 0
            }
        }
    }
}

/// The odd shapes the sparse layer is checked on: (rows, inputs, outputs, density, empty rows,
/// dense rows).
let sparseShapes: [(Int, Int, Int, Double, Set<Int>, Set<Int>)] = [
    (1, 1, 1, 1, [], []),
    (3, 5, 2, 0.5, [1], []),
    (7, 13, 9, 0.3, [0, 6], [3]),
    (37, 101, 67, 0.2, [5, 36], [7]),
    (130, 50, 300, 0.25, [0, 64, 129], [65]),
    (70, 31, 83, 0.0, [], []),            // an all-zero batch
    (66, 9, 8, 1.0, [], []),              // fully dense
]

@Test("sparseAffine gradient (weights, biases) by central differences")
func sparseAffineGradient() {
    var rng = TestRandom(seed: 71)
    for (n, i, o) in [(3, 4, 2), (1, 1, 1), (5, 7, 6), (9, 11, 13)] {
        let x = SparseMatrix<Double>(randomSparse(n, i, density: 0.4, emptyRows: [n - 1], &rng))
        let w: Matrix<Double> = rng.matrix(i, o)
        let b: Vector<Double> = rng.vector(o)
        checkGradient2("sparseAffine \(n)x\(i)->\(o), \(x.nonzeroCount) nonzeros", of: { sparseAffine(x, $0, $1) },
                       at: w, b, rng: &rng)
    }
}

@Test("sparse affine and weight gradient equal the dense ones (Float and Double, 1 and 2 threads)")
func sparseMatchesDense() {
    func check<S: TensorScalar>(_: S.Type, tolerance: S) {
        var rng = TestRandom(seed: 73)
        for (n, i, o, density, empty, dense) in sparseShapes {
            let xd: Matrix<S> = randomSparse(n, i, density: density, emptyRows: empty, denseRows: dense, &rng)
            let x = SparseMatrix(xd)
            #expect(x.dense() == xd)
            let w: Matrix<S> = rng.matrix(i, o)
            let b: Vector<S> = rng.vector(o)
            let g: Matrix<S> = rng.matrix(n, o)
            let expected = Matrix.affine(xd, w, b)
            let expectedGradient = Matrix.matmul(xd, g, transposeA: true)
            for threads in [1, 2] {
                let z = x.affine(w, b, threads: threads)
                let gw = x.weightGradient(g, threads: threads)
                let label = "\(S.self) \(n)x\(i)->\(o) density \(density), \(threads) thread(s)"
                #expect(z.rows == n && z.columns == o && gw.rows == i && gw.columns == o, "\(label): shapes")
                let zError = zip(z.scalars, expected.scalars).map { abs($0 - $1) }.max() ?? 0
                let gError = zip(gw.scalars, expectedGradient.scalars).map { abs($0 - $1) }.max() ?? 0
                #expect(zError <= tolerance * S(i + 1), "\(label): affine off by \(zError)")
                #expect(gError <= tolerance * S(n + 1), "\(label): weight gradient off by \(gError)")
            }
        }
    }
    check(Float.self, tolerance: 1e-6)
    check(Double.self, tolerance: 1e-14)
}

/// The bytes of a matrix's entries (bit-for-bit comparison).
func bytes<S: TensorScalar>(_ m: Matrix<S>) -> [UInt8] {
    m.withUnsafeBufferPointer { Array(UnsafeRawBufferPointer($0)) }
}

@Test("sparse kernels: the same bits on 1 and 2 threads and with the portable kernels")
func sparseKernelsAreDeterministic() {
    func check<S: TensorScalar>(_: S.Type) {
        var rng = TestRandom(seed: 79)
        for (n, i, o, density, empty, dense) in sparseShapes + [(300, 784, 300, 0.19, [], [])] {
            let x = SparseMatrix<S>(randomSparse(n, i, density: density, emptyRows: empty, denseRows: dense, &rng))
            let w: Matrix<S> = rng.matrix(i, o)
            let b: Vector<S> = rng.vector(o)
            let g: Matrix<S> = rng.matrix(n, o)
            let z1 = x.affine(w, b, threads: 1), g1 = x.weightGradient(g, threads: 1)
            let z2 = x.affine(w, b, threads: 2), g2 = x.weightGradient(g, threads: 2)
            #expect(bytes(z1) == bytes(z2), "\(S.self) \(n)x\(i)->\(o): affine")
            #expect(bytes(g1) == bytes(g2), "\(S.self) \(n)x\(i)->\(o): gradient")
            if SparseKernels.usesAVX2 {
                // Other tests may run kernels meanwhile; they get the same bits either way.
                SparseKernels.usesAVX2 = false
                let zp = x.affine(w, b, threads: 1), gp = x.weightGradient(g, threads: 2)
                SparseKernels.usesAVX2 = true
                #expect(bytes(z1) == bytes(zp), "\(S.self) \(n)x\(i)->\(o): portable affine")
                #expect(bytes(g1) == bytes(gp), "\(S.self) \(n)x\(i)->\(o): portable gradient")
            }
        }
    }
    check(Float.self)
    check(Double.self)
}

@Test("SparseMatrix gathered from bytes equals the dense conversion; a density limit refuses")
func sparseGatherFromBytes() {
    var rng = TestRandom(seed: 83)
    let rowLength = 29, total = 40
    let bytes: [UInt8] = (0..<(rowLength * total)).map { _ in rng.uniform(0.0...1.0) < 0.3 ? UInt8(rng.next() % 255 + 1) : 0 }
    let indices = [3, 0, 39, 3, 17]
    let sparse = bytes.withUnsafeBufferPointer {
        SparseMatrix<Float>(gatheringRowsOf: $0, rowLength: rowLength, indices: indices, scale: 1 / 255)
    }!
    let dense = Matrix<Float>(rows: indices.count, columns: rowLength) { out in
        for (r, index) in indices.enumerated() {
            for c in 0..<rowLength { out[r * rowLength + c] = Float(bytes[index * rowLength + c]) * (1 / 255) }
        }
    }
    #expect(sparse.dense() == dense)
    #expect(sparse.nonzeroCount == dense.scalars.filter { $0 != 0 }.count)
    let refused = bytes.withUnsafeBufferPointer {
        SparseMatrix<Float>(gatheringRowsOf: $0, rowLength: rowLength, indices: indices, scale: 1 / 255,
                            maximumDensity: sparse.density / 2)
    }
    #expect(refused == nil)
    let empty = bytes.withUnsafeBufferPointer {
        SparseMatrix<Double>(gatheringRowsOf: $0, rowLength: rowLength, indices: [], scale: 1)
    }!
    #expect(empty.rows == 0 && empty.nonzeroCount == 0 && empty.affine(.zeros(rows: rowLength, columns: 3), .zeros(3)).rows == 0)
}

@Test("SparseMatrix gathered through a SparseByteRows index: the same rows, blocks and products as from the bytes")
func sparseGatherThroughIndex() {
    func check<S: TensorScalar>(_: S.Type) {
        var rng = TestRandom(seed: 91)
        // 130 rows of 97 bytes (more than two blocks of rows), some rows all zero, some full.
        let rowLength = 97, total = 130
        var bytes: [UInt8] = (0..<(rowLength * total)).map { _ in rng.uniform(0.0...1.0) < 0.2 ? UInt8(rng.next() % 255 + 1) : 0 }
        for c in 0..<rowLength { bytes[5 * rowLength + c] = 0; bytes[9 * rowLength + c] = UInt8(c % 255 + 1) }
        let index = bytes.withUnsafeBufferPointer { SparseByteRows($0, rowLength: rowLength) }
        #expect(index.rows == total && index.nonzeroCount == bytes.filter { $0 != 0 }.count)
        let indices = (0..<150).map { _ in Int(rng.next() % UInt64(total)) } + [5, 9, 5]
        let scale = 1 / S(255)
        let fromBytes = bytes.withUnsafeBufferPointer {
            SparseMatrix<S>(gatheringRowsOf: $0, rowLength: rowLength, indices: indices, scale: scale)
        }!
        let fromIndex = SparseMatrix<S>(gatheringRowsOf: index, indices: indices, scale: scale)!
        #expect(fromIndex.rows == fromBytes.rows && fromIndex.columns == fromBytes.columns)
        #expect(fromIndex.nonzeroCount == fromBytes.nonzeroCount)
        #expect(fromIndex.columnBlocks.colStarts == fromBytes.columnBlocks.colStarts)
        #expect(fromIndex.columnBlocks.rowIndices == fromBytes.columnBlocks.rowIndices)
        #expect(fromIndex.columnBlocks.values == fromBytes.columnBlocks.values)
        #expect(fromIndex.rowStarts == fromBytes.rowStarts)
        #expect(fromIndex.columnIndices == fromBytes.columnIndices)
        #expect(fromIndex.values == fromBytes.values)
        #expect(fromIndex.dense() == fromBytes.dense())
        let w: Matrix<S> = rng.matrix(rowLength, 11)
        let b: Vector<S> = rng.vector(11)
        #expect(fromIndex.affine(w, b).scalars == fromBytes.affine(w, b).scalars)
        let g: Matrix<S> = rng.matrix(indices.count, 11)
        #expect(fromIndex.weightGradient(g).scalars == fromBytes.weightGradient(g).scalars)
        // The density limit refuses as the gather from bytes does; no rows gives an empty matrix.
        #expect(SparseMatrix<S>(gatheringRowsOf: index, indices: indices, scale: scale,
                                maximumDensity: fromBytes.density / 2) == nil)
        let empty = SparseMatrix<S>(gatheringRowsOf: index, indices: [], scale: scale)!
        #expect(empty.rows == 0 && empty.nonzeroCount == 0 && empty.rowStarts == [0])
    }
    check(Float.self)
    check(Double.self)
}

@Test("sparse affine: the bits of the bias plus each row's nonzeros added in column order")
func sparseAffineSummationOrder() {
    func check<S: TensorScalar>(_: S.Type) {
        var rng = TestRandom(seed: 83)
        for (n, i, o, density, empty, dense) in sparseShapes + [(200, 784, 300, 0.19, [], [])] {
            let x = SparseMatrix<S>(randomSparse(n, i, density: density, emptyRows: empty, denseRows: dense, &rng))
            let w: Matrix<S> = rng.matrix(i, o)
            let b: Vector<S> = rng.vector(o)
            let z = x.affine(w, b, threads: 1)
            var expected = [S](repeating: 0, count: n * o)
            for r in 0..<n {
                for k in 0..<o {
                    var sum = b[k]
                    for e in Int(x.rowStarts[r])..<Int(x.rowStarts[r + 1]) {
                        let product = x.values[e] * w[Int(x.columnIndices[e]), k]
                        sum = sum + product
                    }
                    expected[r * o + k] = sum
                }
            }
            #expect(z.scalars == expected, "\(S.self) \(n)x\(i)->\(o)")
        }
    }
    check(Float.self)
    check(Double.self)
}
