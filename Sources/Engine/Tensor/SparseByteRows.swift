import CSparseKernels

/// The nonzero bytes of every row of a row-major byte matrix (a data set's pixels), found once.
///
/// Gathering a batch of rows into a `SparseMatrix` from this index copies each row's entries,
/// instead of reading all of its bytes to find them: an MNIST image has ~150 nonzero pixels out
/// of 784, so a shard's gather reads about a fifth of the bytes, none of them in vain (BENCHMARKS.md).
/// The index costs 3 bytes per nonzero (a 16-bit column and the byte), so rows may have at most
/// 65536 columns. It is immutable and can be shared between threads.
public final class SparseByteRows: Sendable {
    /// Number of rows indexed.
    public let rows: Int
    /// Bytes per row.
    public let rowLength: Int
    /// Row `i`'s entries are `starts[i] ..< starts[i + 1]` of `columns` and `values`.
    let starts: [Int64]
    /// The column of each nonzero byte, increasing within a row.
    let columns: [UInt16]
    /// Each nonzero byte.
    let values: [UInt8]

    /// The largest `rowLength` an index can hold.
    public static let maximumRowLength = 1 << 16

    /// Number of nonzero bytes in all rows.
    public var nonzeroCount: Int { Int(starts[rows]) }

    /// Number of nonzero bytes in row `row`.
    public func nonzeroCount(ofRow row: Int) -> Int { Int(starts[row + 1] - starts[row]) }

    /// Indexes the rows of `bytes`, a row-major matrix with `rowLength` bytes per row
    /// (`bytes.count` a multiple of it; `rowLength` at most `maximumRowLength`).
    public init(_ bytes: UnsafeBufferPointer<UInt8>, rowLength: Int) {
        precondition(rowLength > 0 && rowLength <= Self.maximumRowLength && bytes.count % rowLength == 0,
                     "cannot index \(bytes.count) bytes as rows of \(rowLength) (at most \(Self.maximumRowLength))")
        let rows = bytes.count / rowLength
        var counts = [Int32](repeating: 0, count: rows)
        let offsets = (0..<rows).map { Int64($0) }
        precondition(rows < Int(Int32.max), "too many rows to index: \(rows)")
        let total = counts.withUnsafeMutableBufferPointer { c in
            Int(sk_count_nonzero_bytes(bytes.baseAddress, offsets, Int32(rows), Int32(rowLength), c.baseAddress))
        }
        var starts = [Int64](repeating: 0, count: rows + 1)
        for i in 0..<rows { starts[i + 1] = starts[i] + Int64(counts[i]) }
        let (columns, values) = uninitializedArrays(total, total) { (c: UnsafeMutableBufferPointer<UInt16>, v: UnsafeMutableBufferPointer<UInt8>) in
            starts.withUnsafeBufferPointer { s in
                sk_index_bytes(bytes.baseAddress, Int64(rows), Int32(rowLength), s.baseAddress,
                               c.baseAddress, v.baseAddress)
            }
        }
        self.values = values
        self.rows = rows
        self.rowLength = rowLength
        self.starts = starts
        self.columns = columns
    }
}

extension SparseMatrix {
    /// Rows `indices` of the matrix that `index` indexes, each byte times `scale`: the same
    /// matrix, bit for bit, as `init(gatheringRowsOf:rowLength:indices:scale:maximumDensity:)`
    /// on the indexed bytes, built straight into the column blocks its products read (the rows
    /// are formed only if asked for). `nil` when the rows' density exceeds `maximumDensity`.
    @_specialize(exported: true, where Scalar == Float)
    @_specialize(exported: true, where Scalar == Double)
    public init?(gatheringRowsOf index: SparseByteRows, indices: [Int], scale: Scalar,
                 maximumDensity: Double = 1) {
        precondition(indices.count < Int(Int32.max), "sparse gather of \(indices.count) rows out of range")
        let n = indices.count, columns = index.rowLength
        var total = 0
        for row in indices {
            precondition(row >= 0 && row < index.rows, "row \(row) out of range for \(index.rows) indexed rows")
            total += index.nonzeroCount(ofRow: row)
        }
        precondition(total <= Int(Int32.max), "too many nonzeros for a SparseMatrix: \(total)")
        if n * columns > 0 && Double(total) > maximumDensity * Double(n * columns) { return nil }
        let offsets = indices.map { Int64($0) }
        let blocks = ColumnBlocks<Scalar>(rows: n, columns: columns, entries: total) { cs, ri, bv in
            index.starts.withUnsafeBufferPointer { s in
                index.columns.withUnsafeBufferPointer { ic in
                    index.values.withUnsafeBufferPointer { iv in
                        SparseKernels.columnBlocksIndexed(s.baseAddress!, ic.baseAddress, iv.baseAddress, offsets,
                                                          Int32(n), Int32(columns), scale, Int32(SparseKernels.blockRows),
                                                          cs, ri, bv)
                    }
                }
            }
        }
        self.init(rows: n, columns: columns, columnBlocks: blocks)
    }
}

extension SparseKernels {
    static func columnBlocksIndexed<S: TensorScalar>(_ starts: UnsafePointer<Int64>, _ ic: UnsafePointer<UInt16>?,
                                                     _ iv: UnsafePointer<UInt8>?, _ indices: UnsafePointer<Int64>,
                                                     _ rows: Int32, _ inputs: Int32, _ scale: S, _ blockRows: Int32,
                                                     _ cs: UnsafeMutablePointer<Int32>?, _ ri: UnsafeMutablePointer<Int32>?,
                                                     _ bv: UnsafeMutablePointer<S>?) {
        if S.self == Float.self {
            sk_column_blocks_indexed_f(starts, ic, iv, indices, rows, inputs, scale as! Float, blockRows, cs, ri,
                                       typed(bv, Float.self))
        } else if S.self == Double.self {
            sk_column_blocks_indexed_d(starts, ic, iv, indices, rows, inputs, scale as! Double, blockRows, cs, ri,
                                       typed(bv, Double.self))
        } else {
            fatalError("SparseMatrix supports Float and Double, not \(S.self)")
        }
    }
}
