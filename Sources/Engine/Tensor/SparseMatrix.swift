import CSparseKernels
import Dispatch
import Synchronization

/// A batch of samples stored as compressed sparse rows: per row, the columns of its nonzero
/// entries (in increasing order) and their values.
///
/// For a network's input when most inputs are exact zeros (an MNIST image is ~81% black
/// pixels): a dense layer on it, `sparseAffine`, does work in proportion to the nonzeros instead
/// of to `rows x columns`. The matrix is a constant of the computation: no gradient flows into
/// it. Build one from a dense matrix (`init(_:)`) or straight from bytes
/// (`init(gatheringRowsOf:rowLength:indices:scale:maximumDensity:)`).
public struct SparseMatrix<Scalar: TensorScalar>: Sendable {
    /// Number of rows (samples).
    public let rows: Int
    /// Number of columns (inputs per sample).
    public let columns: Int
    /// Number of stored entries.
    public let nonzeroCount: Int
    /// The entries by blocks of `SparseKernels.blockRows` rows, each block's by column then
    /// row: what both kernels of `affine` and `weightGradient` read.
    let columnBlocks: ColumnBlocks<Scalar>
    /// The entries row by row: given, or derived from the column blocks when first asked for
    /// (a batch gathered from a `SparseByteRows` index is built as column blocks only).
    private let rowForm: RowForm<Scalar>

    /// `rowStarts[i] ..< rowStarts[i + 1]` are the entries of row `i`; `rows + 1` entries.
    public var rowStarts: [Int32] { rowForm.arrays(columnBlocks, rows, columns).rowStarts }
    /// The column of each nonzero entry, increasing within a row.
    public var columnIndices: [Int32] { rowForm.arrays(columnBlocks, rows, columns).columnIndices }
    /// The value of each nonzero entry.
    public var values: [Scalar] { rowForm.arrays(columnBlocks, rows, columns).values }

    /// Fraction of the entries that are stored, `nonzeroCount / (rows * columns)` (0 for an
    /// empty matrix).
    public var density: Double {
        rows * columns == 0 ? 0 : Double(nonzeroCount) / Double(rows * columns)
    }

    /// The shape as text, for messages.
    public var shapeDescription: String { "SparseMatrix[\(rows)x\(columns), \(nonzeroCount) nonzeros]" }

    /// A sparse matrix from its three arrays (checked: monotone row starts, columns in range and
    /// increasing within each row).
    public init(rows: Int, columns: Int, rowStarts: [Int32], columnIndices: [Int32], values: [Scalar]) {
        precondition(rows >= 0 && columns >= 0 && columns <= Int(Int32.max),
                     "sparse matrix shape out of range: \(rows)x\(columns)")
        precondition(rowStarts.count == rows + 1 && rowStarts.first == 0
                     && Int(rowStarts.last!) == values.count && columnIndices.count == values.count,
                     "inconsistent sparse matrix arrays: \(rowStarts.count) row starts for \(rows) rows, "
                     + "\(columnIndices.count) columns, \(values.count) values")
        for r in 0..<rows {
            let range = Int(rowStarts[r])..<Int(rowStarts[r + 1])
            precondition(range.lowerBound <= range.upperBound, "row starts decrease at row \(r)")
            var previous: Int32 = -1
            for e in range {
                precondition(columnIndices[e] > previous && Int(columnIndices[e]) < columns,
                             "row \(r): column \(columnIndices[e]) out of order or out of range for \(columns) columns")
                previous = columnIndices[e]
            }
        }
        self.init(unchecked: rows, columns, rowStarts, columnIndices, values)
    }

    init(unchecked rows: Int, _ columns: Int, _ rowStarts: [Int32], _ columnIndices: [Int32], _ values: [Scalar]) {
        self.rows = rows
        self.columns = columns
        self.nonzeroCount = values.count
        self.columnBlocks = ColumnBlocks(rows, columns, rowStarts, columnIndices, values)
        self.rowForm = RowForm((rowStarts, columnIndices, values))
    }

    /// A matrix given by its column blocks only.
    init(rows: Int, columns: Int, columnBlocks: ColumnBlocks<Scalar>) {
        self.rows = rows
        self.columns = columns
        self.nonzeroCount = columnBlocks.values.count
        self.columnBlocks = columnBlocks
        self.rowForm = RowForm(nil)
    }

    /// The nonzero entries of `dense` (exact zeros are dropped).
    public init(_ dense: Matrix<Scalar>) {
        var starts: [Int32] = [0], cols = [Int32](), vals = [Scalar]()
        dense.withUnsafeBufferPointer { p in
            for r in 0..<dense.rows {
                for c in 0..<dense.columns where p[r * dense.columns + c] != 0 {
                    cols.append(Int32(c))
                    vals.append(p[r * dense.columns + c])
                }
                precondition(vals.count <= Int(Int32.max), "too many nonzeros for a SparseMatrix")
                starts.append(Int32(vals.count))
            }
        }
        self.init(unchecked: dense.rows, dense.columns, starts, cols, vals)
    }

    /// Rows `indices` of a row-major matrix of bytes with `rowLength` columns, each byte times
    /// `scale` (pixels to intensities), keeping the nonzero bytes only; `nil` when the rows'
    /// density (nonzero bytes over all bytes) exceeds `maximumDensity`, in which case only the
    /// counting was done and a dense matrix is the better choice.
    @_specialize(exported: true, where Scalar == Float)
    @_specialize(exported: true, where Scalar == Double)
    public init?(gatheringRowsOf bytes: UnsafeBufferPointer<UInt8>, rowLength: Int, indices: [Int],
                 scale: Scalar, maximumDensity: Double = 1) {
        precondition(rowLength >= 0 && rowLength <= Int(Int32.max) && indices.count < Int(Int32.max),
                     "sparse gather of \(indices.count) rows of \(rowLength) out of range")
        for index in indices {
            precondition(index >= 0 && (index + 1) * rowLength <= bytes.count,
                         "row \(index) out of range for \(bytes.count / max(rowLength, 1)) rows of \(rowLength) bytes")
        }
        let n = indices.count
        let offsets = indices.map { Int64($0) }
        var counts = [Int32](repeating: 0, count: n)
        let total = counts.withUnsafeMutableBufferPointer { c in
            Int(sk_count_nonzero_bytes(bytes.baseAddress, offsets, Int32(n), Int32(rowLength), c.baseAddress))
        }
        if n * rowLength > 0 && Double(total) > maximumDensity * Double(n * rowLength) { return nil }
        precondition(total <= Int(Int32.max), "too many nonzeros for a SparseMatrix: \(total)")
        var starts = [Int32](repeating: 0, count: n + 1)
        for i in 0..<n { starts[i + 1] = starts[i] + counts[i] }
        let (cols, vals) = uninitializedArrays(total, total) { (cp: UnsafeMutableBufferPointer<Int32>, vp: UnsafeMutableBufferPointer<Scalar>) in
            starts.withUnsafeBufferPointer { sp in
                let shared = UncheckedSendable((sp.baseAddress!, cp.baseAddress, vp.baseAddress))
                ParallelLoop.forEachChunk(n, minimumPerThread: 256) { rows in
                    let (s, c, v) = shared.value
                    SparseKernels.gather(bytes.baseAddress, offsets, Int32(rows.lowerBound),
                                         Int32(rows.upperBound), Int32(rowLength), scale, s, c, v)
                }
            }
        }
        self.init(unchecked: n, rowLength, starts, cols, vals)
    }

    /// The same matrix, dense.
    public func dense() -> Matrix<Scalar> {
        let (rowStarts, columnIndices, values) = rowForm.arrays(columnBlocks, rows, columns)
        return Matrix(rows: rows, columns: columns) { out in
            out.initialize(repeating: 0)
            for r in 0..<rows {
                for e in Int(rowStarts[r])..<Int(rowStarts[r + 1]) {
                    out[r * columns + Int(columnIndices[e])] = values[e]
                }
            }
        }
    }
}

// MARK: - A dense layer on sparse rows

extension SparseMatrix {
    /// `self * weights + biases` on every row (a dense layer on a sparse batch; `weights` is
    /// inputs x outputs, stored by input): the same result as `Matrix.affine(dense(), weights,
    /// biases)` up to rounding. Each entry is the bias plus the row's nonzeros times the
    /// weights, added in column order, so the result is the same bits whatever the thread count.
    public func affine(_ weights: Matrix<Scalar>, _ biases: Vector<Scalar>) -> Matrix<Scalar> {
        affine(weights, biases, threads: nil)
    }

    /// `affine` on exactly `threads` threads (at most one per 8 outputs), or as `BLASRuntime`
    /// allows when `nil`.
    func affine(_ weights: Matrix<Scalar>, _ biases: Vector<Scalar>, threads: Int?) -> Matrix<Scalar> {
        precondition(weights.rows == columns && weights.columns == biases.count,
                     "shape mismatch in sparse affine: \(shapeDescription) times \(weights.shapeDescription) plus Vector[\(biases.count)]")
        let n = weights.columns
        let ldw = (n + 7) / 8 * 8
        // The kernel reads whole vectors of 8 outputs: rows padded to a multiple of 8 (a copy
        // only when the outputs are not one already), the biases alike.
        let padded = ldw == n ? weights : Matrix<Scalar>(rows: columns, columns: ldw) { t in
            weights.withUnsafeBufferPointer { w in
                for j in 0..<columns {
                    (t.baseAddress! + j * ldw).update(from: w.baseAddress! + j * n, count: n)
                    (t.baseAddress! + j * ldw + n).update(repeating: 0, count: ldw - n)
                }
            }
        }
        var bias = [Scalar](repeating: 0, count: ldw)
        biases.withUnsafeBufferPointer { b in for i in 0..<n { bias[i] = b[i] } }
        let blocks = columnBlocks
        return Matrix(rows: rows, columns: n) { out in
            if n == 0 || rows == 0 { return }
            let o = UncheckedSendable(out.baseAddress!)
            blocks.colStarts.withUnsafeBufferPointer { cs in
                blocks.rowIndices.withUnsafeBufferPointer { ri in
                    blocks.values.withUnsafeBufferPointer { bv in
                        padded.withUnsafeBufferPointer { t in
                            bias.withUnsafeBufferPointer { b in
                                let p = UncheckedSendable((cs.baseAddress!, ri.baseAddress, bv.baseAddress,
                                                           t.baseAddress, b.baseAddress!))
                                SparseKernels.forEachOutputRange(n, work: nonzeroCount * n, threads: threads) { o0, o1 in
                                    let (cs, ri, bv, t, b) = p.value
                                    SparseKernels.affine(Int32(rows), Int32(columns), Int32(SparseKernels.blockRows),
                                                         cs, ri, bv, t, Int32(ldw), b, o.value, Int32(n), o0, o1)
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    /// `selfᵀ * g` (columns x outputs, stored by input like the weights): the gradient of
    /// `affine` with respect to its weights when `g` (rows x outputs) is the gradient of its
    /// result. Each entry adds the rows' contributions in row order, so the result is the same
    /// bits whatever the thread count.
    public func weightGradient(_ g: Matrix<Scalar>) -> Matrix<Scalar> {
        weightGradient(g, threads: nil)
    }

    /// `weightGradient` on exactly `threads` threads (at most one per 8 outputs), or as
    /// `BLASRuntime` allows when `nil`.
    func weightGradient(_ g: Matrix<Scalar>, threads: Int?) -> Matrix<Scalar> {
        precondition(g.rows == rows,
                     "shape mismatch in sparse weight gradient: \(shapeDescription)ᵀ times \(g.shapeDescription)")
        let n = g.columns
        if rows == 0 || n == 0 || columns == 0 { return .zeros(rows: columns, columns: n) }
        // Each block's nonzeros by column, so that an input's gradient row is summed in
        // registers over the block while the block's rows of g stay in the cache.
        let blockRows = SparseKernels.blockRows
        let blocks = columnBlocks
        return Matrix(rows: columns, columns: n) { out in
            let o = UncheckedSendable(out.baseAddress!)
            g.withUnsafeBufferPointer { gp in
                blocks.colStarts.withUnsafeBufferPointer { cs in
                    blocks.rowIndices.withUnsafeBufferPointer { ri in
                        blocks.values.withUnsafeBufferPointer { bv in
                            let p = UncheckedSendable((cs.baseAddress!, ri.baseAddress, bv.baseAddress, gp.baseAddress!))
                            SparseKernels.forEachOutputRange(n, work: nonzeroCount * n, threads: threads) { o0, o1 in
                                let (cs, ri, bv, gp) = p.value
                                SparseKernels.weightGradient(Int32(rows), Int32(columns), Int32(blockRows),
                                                             cs, ri, bv, gp, Int32(n), o.value, Int64(n), o0, o1)
                            }
                        }
                    }
                }
            }
        }
    }
}

/// A sparse matrix's entries by blocks of `SparseKernels.blockRows` rows, each block's ordered by
/// column then row (compressed sparse columns per block; `sk_column_blocks_*`): built once with
/// the matrix, read by both the forward pass and the weight gradient.
final class ColumnBlocks<Scalar: TensorScalar>: Sendable {
    /// Block b's column j is entries `colStarts[b * (columns + 1) + j] ..< colStarts[b * (columns + 1) + j + 1]`.
    let colStarts: [Int32]
    /// The row of each entry.
    let rowIndices: [Int32]
    /// The value of each entry.
    let values: [Scalar]

    /// The blocks of a `rows` x `columns` matrix with `entries` nonzeros, written by `fill` into
    /// the three arrays, allocated and not initialised: `fill` (a `sk_column_blocks*` kernel)
    /// must write every entry (each block's column starts, each nonzero once). Not called for
    /// no rows.
    init(rows: Int, columns: Int, entries: Int,
         fill: (UnsafeMutablePointer<Int32>, UnsafeMutablePointer<Int32>?, UnsafeMutablePointer<Scalar>?) -> Void) {
        let blockRows = SparseKernels.blockRows
        let startCount = (rows + blockRows - 1) / blockRows * (columns + 1)
        (colStarts, rowIndices, values) = uninitializedArrays(startCount, entries, entries) {
            (cs: UnsafeMutableBufferPointer<Int32>, ri: UnsafeMutableBufferPointer<Int32>, bv: UnsafeMutableBufferPointer<Scalar>) in
            if startCount > 0 { fill(cs.baseAddress!, ri.baseAddress, bv.baseAddress) }
        }
    }

    /// The blocks of the matrix given by its compressed sparse rows.
    convenience init(_ rows: Int, _ columns: Int, _ rowStarts: [Int32], _ columnIndices: [Int32], _ values: [Scalar]) {
        self.init(rows: rows, columns: columns, entries: values.count) { cs, ri, bv in
            rowStarts.withUnsafeBufferPointer { rs in
                columnIndices.withUnsafeBufferPointer { ci in
                    values.withUnsafeBufferPointer { vs in
                        SparseKernels.columnBlocks(Int32(rows), Int32(columns), rs.baseAddress!, ci.baseAddress,
                                                   vs.baseAddress, Int32(SparseKernels.blockRows), cs, ri, bv)
                    }
                }
            }
        }
    }
}

/// A sparse matrix's compressed sparse rows, kept once known: built with the matrix, or from its
/// column blocks on first use.
final class RowForm<Scalar: TensorScalar>: Sendable {
    typealias Arrays = (rowStarts: [Int32], columnIndices: [Int32], values: [Scalar])
    private let state: Mutex<UncheckedSendable<Arrays>?>

    init(_ arrays: Arrays?) {
        state = Mutex(arrays.map(UncheckedSendable.init))
    }

    /// The rows, derived from `blocks` (of a `rows` x `columns` matrix) the first time.
    func arrays(_ blocks: ColumnBlocks<Scalar>, _ rows: Int, _ columns: Int) -> Arrays {
        state.withLock { stored in
            if let stored { return stored.value }
            let total = blocks.values.count
            let arrays: Arrays = uninitializedArrays(rows + 1, total, total) {
                (rs: UnsafeMutableBufferPointer<Int32>, ci: UnsafeMutableBufferPointer<Int32>, vs: UnsafeMutableBufferPointer<Scalar>) in
                blocks.colStarts.withUnsafeBufferPointer { cs in
                    blocks.rowIndices.withUnsafeBufferPointer { ri in
                        blocks.values.withUnsafeBufferPointer { bv in
                            SparseKernels.rowsFromColumnBlocks(Int32(rows), Int32(columns), Int32(SparseKernels.blockRows),
                                                               cs.baseAddress, ri.baseAddress, bv.baseAddress,
                                                               rs.baseAddress!, ci.baseAddress, vs.baseAddress)
                        }
                    }
                }
            }
            stored = UncheckedSendable(arrays)
            return arrays
        }
    }
}

/// The C kernels behind `SparseMatrix`, routed by scalar type.
@usableFromInline
enum SparseKernels {
    /// Rows per block of both kernels: a block's rows of a 64-column slice of `g` (gradient) or of
    /// the sums (forward), 16 KB in Float, stay in L1 (measured on MNIST: 64 and 128 alike, 256
    /// and 512 slower, 32 slower in the forward pass).
    static let blockRows = 64

    /// Calls `body` on output ranges that split `0..<outputs` at multiples of 8 between
    /// `threads` threads, or when `nil` up to `BLASRuntime.threadCount` (one range, on this
    /// thread, when `work` is small); never more than one thread per 8 outputs.
    static func forEachOutputRange(_ outputs: Int, work: Int, threads requested: Int?,
                                   _ body: (Int32, Int32) -> Void) {
        let groups = (outputs + 7) / 8
        let wanted = requested ?? (work < 1 << 15 ? 1 : BLASRuntime.threadCount)
        let threads = min(wanted, groups)
        if threads <= 1 { body(0, Int32(outputs)); return }
        withoutActuallyEscaping(body) { body in
            let shared = UncheckedSendable(body)
            DispatchQueue.concurrentPerform(iterations: threads) { t in
                let g0 = groups * t / threads, g1 = groups * (t + 1) / threads
                shared.value(Int32(g0 * 8), Int32(min(g1 * 8, outputs)))
            }
        }
    }

    static func typed<S, T>(_ p: UnsafePointer<S>?, _: T.Type) -> UnsafePointer<T>? {
        p.map { UnsafeRawPointer($0).assumingMemoryBound(to: T.self) }
    }
    static func typed<S, T>(_ p: UnsafeMutablePointer<S>?, _: T.Type) -> UnsafeMutablePointer<T>? {
        p.map { UnsafeMutableRawPointer($0).assumingMemoryBound(to: T.self) }
    }

    static func affine<S: TensorScalar>(_ rows: Int32, _ inputs: Int32, _ blockRows: Int32,
                                        _ cs: UnsafePointer<Int32>, _ ri: UnsafePointer<Int32>?,
                                        _ bv: UnsafePointer<S>?, _ wt: UnsafePointer<S>?, _ ldw: Int32,
                                        _ bias: UnsafePointer<S>, _ out: UnsafeMutablePointer<S>, _ ldo: Int32,
                                        _ o0: Int32, _ o1: Int32) {
        if S.self == Float.self {
            sk_affine_f(rows, inputs, blockRows, cs, ri, typed(bv, Float.self), typed(wt, Float.self), ldw,
                        typed(bias, Float.self), typed(out, Float.self), ldo, o0, o1)
        } else if S.self == Double.self {
            sk_affine_d(rows, inputs, blockRows, cs, ri, typed(bv, Double.self), typed(wt, Double.self), ldw,
                        typed(bias, Double.self), typed(out, Double.self), ldo, o0, o1)
        } else {
            fatalError("SparseMatrix supports Float and Double, not \(S.self)")
        }
    }

    static func columnBlocks<S: TensorScalar>(_ rows: Int32, _ inputs: Int32, _ rs: UnsafePointer<Int32>,
                                              _ ci: UnsafePointer<Int32>?, _ vs: UnsafePointer<S>?,
                                              _ blockRows: Int32, _ cs: UnsafeMutablePointer<Int32>,
                                              _ ri: UnsafeMutablePointer<Int32>?, _ bv: UnsafeMutablePointer<S>?) {
        if S.self == Float.self {
            sk_column_blocks_f(rows, inputs, rs, ci, typed(vs, Float.self), blockRows, cs, ri, typed(bv, Float.self))
        } else if S.self == Double.self {
            sk_column_blocks_d(rows, inputs, rs, ci, typed(vs, Double.self), blockRows, cs, ri, typed(bv, Double.self))
        } else {
            fatalError("SparseMatrix supports Float and Double, not \(S.self)")
        }
    }

    static func weightGradient<S: TensorScalar>(_ rows: Int32, _ inputs: Int32, _ blockRows: Int32,
                                                _ cs: UnsafePointer<Int32>, _ ri: UnsafePointer<Int32>?,
                                                _ bv: UnsafePointer<S>?, _ g: UnsafePointer<S>, _ ldg: Int32,
                                                _ gw: UnsafeMutablePointer<S>, _ ldgw: Int64, _ o0: Int32, _ o1: Int32) {
        if S.self == Float.self {
            sk_weight_gradient_f(rows, inputs, blockRows, cs, ri, typed(bv, Float.self), typed(g, Float.self),
                                 ldg, typed(gw, Float.self), ldgw, o0, o1)
        } else if S.self == Double.self {
            sk_weight_gradient_d(rows, inputs, blockRows, cs, ri, typed(bv, Double.self), typed(g, Double.self),
                                 ldg, typed(gw, Double.self), ldgw, o0, o1)
        } else {
            fatalError("SparseMatrix supports Float and Double, not \(S.self)")
        }
    }

    static func gather<S: TensorScalar>(_ src: UnsafePointer<UInt8>?, _ indices: UnsafePointer<Int64>,
                                        _ row0: Int32, _ row1: Int32, _ length: Int32, _ scale: S,
                                        _ rs: UnsafePointer<Int32>, _ ci: UnsafeMutablePointer<Int32>?,
                                        _ vs: UnsafeMutablePointer<S>?) {
        if S.self == Float.self {
            sk_gather_bytes_f(src, indices, row0, row1, length, scale as! Float, rs, ci, typed(vs, Float.self))
        } else if S.self == Double.self {
            sk_gather_bytes_d(src, indices, row0, row1, length, scale as! Double, rs, ci, typed(vs, Double.self))
        } else {
            fatalError("SparseMatrix supports Float and Double, not \(S.self)")
        }
    }

    static func rowsFromColumnBlocks<S: TensorScalar>(_ rows: Int32, _ inputs: Int32, _ blockRows: Int32,
                                                      _ cs: UnsafePointer<Int32>?, _ ri: UnsafePointer<Int32>?,
                                                      _ bv: UnsafePointer<S>?, _ rs: UnsafeMutablePointer<Int32>,
                                                      _ ci: UnsafeMutablePointer<Int32>?, _ vs: UnsafeMutablePointer<S>?) {
        if S.self == Float.self {
            sk_rows_from_column_blocks_f(rows, inputs, blockRows, cs, ri, typed(bv, Float.self), rs, ci, typed(vs, Float.self))
        } else if S.self == Double.self {
            sk_rows_from_column_blocks_d(rows, inputs, blockRows, cs, ri, typed(bv, Double.self), rs, ci, typed(vs, Double.self))
        } else {
            fatalError("SparseMatrix supports Float and Double, not \(S.self)")
        }
    }

    /// Whether the AVX2 kernels are in use (else the portable ones, which give the same bits);
    /// tests turn them off to check that (not while a kernel runs).
    static var usesAVX2: Bool {
        get { sk_uses_avx2() != 0 }
        set { sk_disable_avx2(newValue ? 0 : 1) }
    }
}
