/// A dense row-major matrix of `Float` or `Double` with value semantics.
///
/// A minibatch is a matrix with one sample per row, so a layer applied to a batch is one GEMM
/// (`matmul`). Shapes are checked at run time; a mismatch names both shapes.
public struct Matrix<Scalar: TensorScalar>: Sendable {
    @usableFromInline nonisolated(unsafe) var storage: TensorStorage<Scalar>
    /// Number of rows.
    public let rows: Int
    /// Number of columns.
    public let columns: Int

    /// Number of entries, `rows * columns`.
    @inlinable public var count: Int { rows * columns }

    /// A matrix of `rows` by `columns` copies of `value`.
    @inlinable
    public init(rows: Int, columns: Int, repeating value: Scalar) {
        precondition(rows >= 0 && columns >= 0, "matrix shape must not be negative: \(rows)x\(columns)")
        self.rows = rows
        self.columns = columns
        storage = TensorStorage(repeating: value, count: rows * columns)
    }

    /// A matrix holding `scalars` in row-major order.
    @inlinable
    public init(rows: Int, columns: Int, scalars: [Scalar]) {
        precondition(scalars.count == rows * columns,
                     "Matrix \(rows)x\(columns) needs \(rows * columns) scalars, got \(scalars.count)")
        self.init(rows: rows, columns: columns) { out in
            scalars.withUnsafeBufferPointer { out.baseAddress!.update(from: $0.baseAddress!, count: $0.count) }
        }
    }

    /// A matrix whose row-major entries are written by `body`, which must set every one.
    @inlinable
    public init(rows: Int, columns: Int,
                initializingWith body: (UnsafeMutableBufferPointer<Scalar>) throws -> Void) rethrows {
        precondition(rows >= 0 && columns >= 0, "matrix shape must not be negative: \(rows)x\(columns)")
        self.rows = rows
        self.columns = columns
        storage = TensorStorage(uninitializedCount: rows * columns)
        try body(UnsafeMutableBufferPointer(start: storage.pointer, count: rows * columns))
    }

    @usableFromInline
    init(storage: TensorStorage<Scalar>, rows: Int, columns: Int) {
        self.storage = storage
        self.rows = rows
        self.columns = columns
    }

    /// A matrix of zeros (sharing one read-only zero buffer per size: free to make).
    @inlinable
    public static func zeros(rows: Int, columns: Int) -> Matrix {
        precondition(rows >= 0 && columns >= 0, "matrix shape must not be negative: \(rows)x\(columns)")
        return Matrix(storage: .sharedZeros(count: rows * columns), rows: rows, columns: columns)
    }

    /// The shape as text, `rows x columns`, for messages.
    @inlinable
    public var shapeDescription: String { "Matrix[\(rows)x\(columns)]" }

    /// The entries in row-major order.
    public var scalars: [Scalar] { Array(UnsafeBufferPointer(start: storage.pointer, count: count)) }

    @inlinable public subscript(row: Int, column: Int) -> Scalar {
        get {
            precondition(row >= 0 && row < rows && column >= 0 && column < columns,
                         "index (\(row), \(column)) out of range for \(shapeDescription)")
            return storage.pointer[row * columns + column]
        }
        set {
            precondition(row >= 0 && row < rows && column >= 0 && column < columns,
                         "index (\(row), \(column)) out of range for \(shapeDescription)")
            makeUnique()
            storage.pointer[row * columns + column] = newValue
        }
    }

    /// Row `index` as a vector (a copy).
    @inlinable
    public func row(_ index: Int) -> Vector<Scalar> {
        precondition(index >= 0 && index < rows, "row \(index) out of range for \(shapeDescription)")
        return Vector(count: columns) {
            $0.baseAddress!.update(from: storage.pointer + index * columns, count: columns)
        }
    }

    @inlinable
    public func withUnsafeBufferPointer<R>(_ body: (UnsafeBufferPointer<Scalar>) throws -> R) rethrows -> R {
        try body(UnsafeBufferPointer(start: storage.pointer, count: count))
    }

    @inlinable
    public mutating func withUnsafeMutableBufferPointer<R>(
        _ body: (UnsafeMutableBufferPointer<Scalar>) throws -> R
    ) rethrows -> R {
        makeUnique()
        return try body(UnsafeMutableBufferPointer(start: storage.pointer, count: count))
    }

    @inlinable mutating func makeUnique() {
        if storage.isSharedZero || !isKnownUniquelyReferenced(&storage) { storage = storage.copy() }
    }

    @usableFromInline
    func checkSameShape(_ other: Matrix, _ operation: String) {
        precondition(rows == other.rows && columns == other.columns,
                     "shape mismatch in \(operation): \(shapeDescription) vs \(other.shapeDescription)")
    }

    /// Adds `scale * other` to this matrix in place (BLAS axpy).
    @inlinable
    public mutating func add(_ other: Matrix, scaledBy scale: Scalar = 1) {
        checkSameShape(other, "add")
        if storage.isSharedZero && scale == 1 {
            storage = other.storage   // 0 + other: share other's storage (copy on write)
            return
        }
        makeUnique()
        if addPendingOuter(other, scaledBy: scale) { return }
        Scalar.axpy(count: count, alpha: scale, x: other.storage.pointer, y: storage.pointer)
    }

    /// When `other` is an outer product not written out (`Matrix.outer`), adds it in one pass
    /// over this matrix (`ger`) and returns true.
    @usableFromInline
    @_specialize(where Scalar == Float)
    @_specialize(where Scalar == Double)
    mutating func addPendingOuter(_ other: Matrix, scaledBy scale: Scalar) -> Bool {
        guard let outer = other.storage.pendingOuter else { return false }
        outer.add(into: storage.pointer, scaledBy: scale)
        return true
    }

    /// Multiplies every entry by `scale` in place.
    @inlinable
    public mutating func scale(by scale: Scalar) {
        makeUnique()
        let p = storage.pointer
        for i in 0..<count { p[i] *= scale }
    }

    /// A matrix of the same shape with `transform` applied to each pair of entries.
    @inlinable
    public func zipMap(_ other: Matrix, _ op: String = "element-wise operation",
                       _ transform: (Scalar, Scalar) -> Scalar) -> Matrix {
        checkSameShape(other, op)
        let a = storage.pointer, b = other.storage.pointer
        return Matrix(rows: rows, columns: columns) { out in
            for i in 0..<out.count { out[i] = transform(a[i], b[i]) }
        }
    }

    /// A matrix with `transform` applied to each entry.
    @inlinable
    public func map(_ transform: (Scalar) -> Scalar) -> Matrix {
        let a = storage.pointer
        return Matrix(rows: rows, columns: columns) { out in
            for i in 0..<out.count { out[i] = transform(a[i]) }
        }
    }
}

extension Matrix: Equatable {
    @inlinable
    public static func == (lhs: Matrix, rhs: Matrix) -> Bool {
        lhs.rows == rhs.rows && lhs.columns == rhs.columns && (lhs.storage === rhs.storage
            || (0..<lhs.count).allSatisfy { lhs.storage.pointer[$0] == rhs.storage.pointer[$0] })
    }
}

extension Matrix: CustomStringConvertible {
    public var description: String {
        let shown = scalars.prefix(8).map { "\($0)" }.joined(separator: ", ")
        return "\(shapeDescription)(\(shown)\(count > 8 ? ", …" : ""))"
    }
}

// MARK: - Element-wise arithmetic

extension Matrix {
    @inlinable public static func + (a: Matrix, b: Matrix) -> Matrix { a.zipMap(b, "+") { $0 + $1 } }
    @inlinable public static func - (a: Matrix, b: Matrix) -> Matrix { a.zipMap(b, "-") { $0 - $1 } }
    /// Element-wise (Hadamard) product.
    @inlinable public static func * (a: Matrix, b: Matrix) -> Matrix { a.zipMap(b, "*") { $0 * $1 } }
    @inlinable public static func / (a: Matrix, b: Matrix) -> Matrix { a.zipMap(b, "/") { $0 / $1 } }
    @inlinable public static prefix func - (a: Matrix) -> Matrix { a.map { -$0 } }
    @inlinable public static func * (s: Scalar, a: Matrix) -> Matrix { a.map { s * $0 } }
    @inlinable public static func + (a: Matrix, s: Scalar) -> Matrix { a.map { $0 + s } }

    /// Element-wise `e^x`.
    @inlinable
    public func exp() -> Matrix {
        Matrix(rows: rows, columns: columns) { Scalar.exp(storage.pointer, into: $0.baseAddress!, count: count) }
    }
    /// Element-wise natural logarithm.
    @inlinable
    public func log() -> Matrix {
        Matrix(rows: rows, columns: columns) { Scalar.log(storage.pointer, into: $0.baseAddress!, count: count) }
    }
    /// Element-wise logistic function.
    @inlinable
    public func logistic() -> Matrix {
        Matrix(rows: rows, columns: columns) {
            Scalar.logistic(storage.pointer, into: $0.baseAddress!, count: count)
        }
    }
    /// `self * y * (1 - y)` entry by entry (the logistic function's pullback, given its result).
    @inlinable
    public func logisticPullback(result y: Matrix) -> Matrix {
        checkSameShape(y, "logistic")
        return Matrix(rows: rows, columns: columns) {
            Scalar.logisticPullback(storage.pointer, y.storage.pointer, into: $0.baseAddress!, count: count)
        }
    }
    /// Sum of all entries.
    @inlinable
    public var sum: Scalar {
        let p = storage.pointer
        var s: Scalar = 0
        for i in 0..<count { s += p[i] }
        return s
    }
}

// MARK: - Linear algebra (BLAS)

extension Matrix {
    /// `op(a) * op(b)`, where `op` transposes when asked (one BLAS GEMM).
    @inlinable
    public static func matmul(_ a: Matrix, _ b: Matrix,
                              transposeA ta: Bool = false, transposeB tb: Bool = false) -> Matrix {
        let (m, k) = ta ? (a.columns, a.rows) : (a.rows, a.columns)
        let (k2, n) = tb ? (b.columns, b.rows) : (b.rows, b.columns)
        precondition(k == k2, "shape mismatch in matmul: \(a.shapeDescription)\(ta ? "ᵀ" : "") times "
                     + "\(b.shapeDescription)\(tb ? "ᵀ" : "") (inner sizes \(k) and \(k2))")
        return Matrix(rows: m, columns: n) { out in
            if k == 0 { out.initialize(repeating: 0); return }
            Scalar.gemm(transposeA: ta, transposeB: tb, m: m, n: n, k: k, alpha: 1,
                        a: a.storage.pointer, lda: a.columns, b: b.storage.pointer, ldb: b.columns,
                        beta: 0, c: out.baseAddress!, ldc: n)
        }
    }

    /// Matrix-vector product `self * x` (BLAS GEMV; for a long `x` that is mostly zeros, a
    /// loop over the blocks that hold its nonzeros, like an MNIST image: see `SparseEntries`).
    @inlinable
    public func matvec(_ x: Vector<Scalar>) -> Vector<Scalar> {
        precondition(columns == x.count,
                     "shape mismatch in matvec: \(shapeDescription) times Vector[\(x.count)]")
        return matvec(SparseEntries(x))
    }

    /// `self * x` for a vector already in its `SparseEntries` form.
    @_specialize(where Scalar == Float)
    @_specialize(where Scalar == Double)
    public func matvec(_ x: SparseEntries<Scalar>) -> Vector<Scalar> {
        precondition(columns == x.count,
                     "shape mismatch in matvec: \(shapeDescription) times Vector[\(x.count)]")
        if rows == 0 || columns == 0 { return .zeros(rows) }
        return Vector(count: rows) { out in
            if let dense = x.dense {
                Scalar.gemv(transpose: false, m: rows, n: columns, alpha: 1, a: storage.pointer,
                            lda: columns, x: dense.storage.pointer, beta: 0, y: out.baseAddress!)
            } else {
                SparseKernels.blockMatvec(Int32(rows), storage.pointer, Int64(columns), x.blocked!, out.baseAddress!)
            }
        }
    }

    /// Transposed matrix-vector product `selfᵀ * x` (BLAS GEMV; see
    /// `transposedMatvec(_:plus:)` for an `x` that is mostly zeros).
    @inlinable
    public func transposedMatvec(_ x: Vector<Scalar>) -> Vector<Scalar> {
        precondition(rows == x.count,
                     "shape mismatch in transposed matvec: \(shapeDescription)ᵀ times Vector[\(x.count)]")
        if rows == 0 || columns == 0 { return .zeros(columns) }
        return Vector(count: columns) { out in
            Scalar.gemv(transpose: true, m: rows, n: columns, alpha: 1, a: storage.pointer,
                        lda: columns, x: x.storage.pointer, beta: 0, y: out.baseAddress!)
        }
    }

    /// `selfᵀ * x + b` (no `b`: `selfᵀ * x`) for a vector already in its `SparseEntries` form:
    /// a dense layer on one sample when the matrix holds the weights by input (inputs x
    /// outputs). Only the rows of `x`'s nonzeros are read, each a contiguous run of weights;
    /// each output is `b`'s entry plus the nonzeros' products in column order, the same bits
    /// as that sample's row of `SparseMatrix.affine` (and the same with AVX2 or without).
    @_specialize(where Scalar == Float)
    @_specialize(where Scalar == Double)
    public func transposedMatvec(_ x: SparseEntries<Scalar>, plus b: Vector<Scalar>?) -> Vector<Scalar> {
        precondition(rows == x.count && (b == nil || b!.count == columns),
                     "shape mismatch in transposed matvec: \(shapeDescription)ᵀ times Vector[\(x.count)]"
                     + (b.map { " plus Vector[\($0.count)]" } ?? ""))
        if rows == 0 || columns == 0 { return b ?? .zeros(columns) }
        // Not BLAS `gemv` for a dense `x` either: for the small layers of a per-sample step its
        // call costs more than the arithmetic, and the bias comes for free here.
        let bias = b?.storage.pointer
        return Vector(count: columns) { out in
            if let blocked = x.blocked {
                SparseKernels.blockVecmat(Int32(columns), storage.pointer, Int64(columns), blocked, bias, out.baseAddress!)
            } else {
                SparseKernels.denseVecmat(Int32(rows), Int32(columns), storage.pointer, Int64(columns),
                                          x.dense!.storage.pointer, bias, out.baseAddress!)
            }
        }
    }

    /// Outer product `x yᵀ`. Its entries are written out when first read; adding it to a
    /// matrix (`add(_:scaledBy:)`, a descent step) is one pass over that matrix instead, over
    /// only the blocks of columns where `y` has nonzeros when `y` is sparse (see `PendingOuter`).
    @inlinable
    public static func outer(_ x: Vector<Scalar>, _ y: Vector<Scalar>) -> Matrix {
        outer(x, SparseEntries(y))
    }

    /// Outer product `x yᵀ` for a `y` already in its `SparseEntries` form (pending, like `outer`).
    @_specialize(where Scalar == Float)
    @_specialize(where Scalar == Double)
    public static func outer(_ x: Vector<Scalar>, _ y: SparseEntries<Scalar>) -> Matrix {
        let count = x.count * y.count
        if count == 0 { return .zeros(rows: x.count, columns: y.count) }
        return Matrix(storage: TensorStorage(pending: PendingOuter(SparseEntries(dense: x), y), count: count),
                      rows: x.count, columns: y.count)
    }

    /// Outer product `x yᵀ` for an `x` in its `SparseEntries` form (pending, like `outer`): the
    /// gradient of `transposedMatvec` with respect to the matrix. Added to a matrix, it touches
    /// only the rows of `x`'s nonzeros.
    @_specialize(where Scalar == Float)
    @_specialize(where Scalar == Double)
    public static func outer(_ x: SparseEntries<Scalar>, _ y: Vector<Scalar>) -> Matrix {
        let count = x.count * y.count
        if count == 0 { return .zeros(rows: x.count, columns: y.count) }
        return Matrix(storage: TensorStorage(pending: PendingOuter(x, SparseEntries(dense: y)), count: count),
                      rows: x.count, columns: y.count)
    }

    /// Adds `scale * x yᵀ` in place (BLAS GER).
    @inlinable
    public mutating func addOuter(_ x: Vector<Scalar>, _ y: Vector<Scalar>, scaledBy scale: Scalar = 1) {
        precondition(x.count == rows && y.count == columns,
                     "shape mismatch in addOuter: \(shapeDescription) vs Vector[\(x.count)] x Vector[\(y.count)]")
        if count == 0 { return }
        makeUnique()
        Scalar.ger(m: rows, n: columns, alpha: scale, x: x.storage.pointer, y: y.storage.pointer,
                   a: storage.pointer, lda: columns)
    }

    /// The transpose.
    @inlinable
    public func transposed() -> Matrix {
        let a = storage.pointer, r = rows, c = columns
        return Matrix(rows: c, columns: r) { out in
            for i in 0..<r { for j in 0..<c { out[j * r + i] = a[i * c + j] } }
        }
    }

    /// Adds `v` to every row (`v` has one entry per column).
    @inlinable
    public func addingToEachRow(_ v: Vector<Scalar>) -> Matrix {
        precondition(v.count == columns,
                     "shape mismatch in row broadcast: \(shapeDescription) plus Vector[\(v.count)] per row")
        let a = storage.pointer, b = v.storage.pointer, c = columns
        return Matrix(rows: rows, columns: columns) { out in
            let o = out.baseAddress!
            for i in 0..<rows {
                let src = a + i * c, dst = o + i * c
                for j in 0..<c { dst[j] = src[j] + b[j] }
            }
        }
    }

    /// Sums of the columns: one entry per column (the gradient of a row broadcast); one BLAS
    /// GEMV against a vector of ones.
    @inlinable
    public func columnSums() -> Vector<Scalar> {
        if rows == 0 || columns == 0 { return .zeros(columns) }
        let ones = Vector<Scalar>(repeating: 1, count: rows)
        return transposedMatvec(ones)
    }

    /// `a * b + v` on every row, in one GEMM on rows pre-filled with `v` (a dense layer on a
    /// batch: samples `a`, weights `b` stored by input (inputs x outputs), biases `v`).
    @inlinable
    public static func affine(_ a: Matrix, _ b: Matrix, _ v: Vector<Scalar>) -> Matrix {
        precondition(a.columns == b.rows && b.columns == v.count,
                     "shape mismatch in affine: \(a.shapeDescription) times \(b.shapeDescription) plus Vector[\(v.count)]")
        let m = a.rows, n = b.columns, k = a.columns
        return Matrix(rows: m, columns: n) { out in
            let o = out.baseAddress!, bias = v.storage.pointer
            for i in 0..<m { (o + i * n).update(from: bias, count: n) }
            if k == 0 || m == 0 || n == 0 { return }
            Scalar.gemm(transposeA: false, transposeB: false, m: m, n: n, k: k, alpha: 1,
                        a: a.storage.pointer, lda: k, b: b.storage.pointer, ldb: n,
                        beta: 1, c: o, ldc: n)
        }
    }

    /// Row-wise `softMax` (each row sums to one), computed stably.
    @inlinable
    public func softMaxRows() -> Matrix {
        let a = storage.pointer, c = columns
        var e = Matrix(rows: rows, columns: columns) { out in
            let o = out.baseAddress!
            for i in 0..<rows {
                let src = a + i * c, dst = o + i * c
                var m = src[0]
                for j in 1..<c where src[j] > m { m = src[j] }
                for j in 0..<c { dst[j] = src[j] - m }
            }
        }
        e = e.exp()
        let p = e.storage.pointer
        for i in 0..<rows {
            let row = p + i * c
            var s: Scalar = 0
            for j in 0..<c { s += row[j] }
            let inv = 1 / s
            for j in 0..<c { row[j] *= inv }
        }
        return e
    }

    /// For each row, the column of its largest entry.
    @inlinable
    public func indexOfMaximumPerRow() -> [Int] {
        let a = storage.pointer, c = columns
        return (0..<rows).map { i in
            let row = a + i * c
            var best = 0
            for j in 1..<c where row[j] > row[best] { best = j }
            return best
        }
    }
}
