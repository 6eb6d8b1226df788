import CSparseKernels

/// The outer product `u vᵀ` of a matrix whose entries have not been written out: what
/// `Matrix.outer` returns, the gradient of a matrix-vector product with respect to the matrix.
///
/// A descent step adds it to the weights in one pass (`Matrix.add`: row by row; for a sparse
/// `v`, only the blocks of columns where `v` has nonzeros; for a sparse `u`, only the rows
/// where `u` has nonzeros), so that a per-sample step never forms, stores and re-reads a
/// weight-sized gradient. Reading the entries in any other way writes them out first
/// (`TensorStorage.pointer`), with the same values as the formed product.
@usableFromInline
final class PendingOuter<Scalar: TensorScalar>: Sendable {
    /// The column factor (one entry per row of the product).
    let u: SparseEntries<Scalar>
    /// The row factor (one entry per column). At most one of the two factors is sparse.
    let v: SparseEntries<Scalar>

    init(_ u: SparseEntries<Scalar>, _ v: SparseEntries<Scalar>) {
        precondition(!(u.isSparse && v.isSparse), "PendingOuter: at most one sparse factor")
        self.u = u
        self.v = v
    }

    var rows: Int { u.count }

    /// Writes the product's entries (row-major, `rows x v.count`) to `out`: `u[r] * v[j]`.
    @_specialize(where Scalar == Float)
    @_specialize(where Scalar == Double)
    func write(into out: UnsafeMutablePointer<Scalar>) {
        let n = v.count
        if let ud = u.dense, let vd = v.dense {
            ud.withUnsafeBufferPointer { u in
                vd.withUnsafeBufferPointer { values in
                    for r in 0..<u.count { Scalar.scale(values.baseAddress!, by: u[r], into: out + r * n, count: n) }
                }
            }
            return
        }
        UnsafeMutableRawPointer(out).initializeMemory(as: UInt8.self, repeating: 0,
                                                      count: u.count * n * MemoryLayout<Scalar>.stride)
        // 0 + (1 * u[r]) * v[j] is u[r] * v[j] exactly.
        add(into: out, scaledBy: 1)
    }

    /// Adds `alpha * u vᵀ` to the row-major `rows x v.count` matrix at `w`.
    @_specialize(where Scalar == Float)
    @_specialize(where Scalar == Double)
    func add(into w: UnsafeMutablePointer<Scalar>, scaledBy alpha: Scalar) {
        let n = v.count
        if let ud = u.dense {
            ud.withUnsafeBufferPointer { u in
                if let vd = v.dense {
                    // Not BLAS `ger`: for the small layers of a per-sample step, its call and
                    // per-column overhead cost more than the arithmetic.
                    vd.withUnsafeBufferPointer { values in
                        SparseKernels.denseRowsGer(Int32(u.count), Int32(n), w, Int64(n), alpha, values.baseAddress!,
                                                   u.baseAddress!)
                    }
                } else {
                    SparseKernels.blockGer(Int32(u.count), w, Int64(n), alpha, u.baseAddress!, v.blocked!)
                }
            }
        } else {
            v.dense!.withUnsafeBufferPointer { values in
                SparseKernels.blockRowsGer(Int32(n), w, Int64(n), alpha, values.baseAddress!, u.blocked!)
            }
        }
    }
}

/// A vector as the blocks of 32 bytes (8 floats, 4 doubles) that hold a nonzero, when it is
/// sparse enough for products to pay for skipping the other blocks (an MNIST image keeps 39%
/// of its blocks), else as all its entries. Products with the blocked form run at full SIMD
/// width over the kept blocks (`sk_block_*` in CSparseKernels).
///
/// `Matrix.matvec` and `Matrix.outer` make one from a `Vector` by themselves; make it once and
/// pass it to both when a vector is used in both (the gradient of a matrix-vector product).
public struct SparseEntries<Scalar: TensorScalar>: @unchecked Sendable {
    /// The vector's length.
    public let count: Int
    /// The vector itself, when it is kept dense.
    let dense: Vector<Scalar>?
    /// The blocked form (nil when dense): never mutated after `init`.
    let blocked: BlockedVector?

    /// Entries per block.
    static var lanes: Int { 32 / MemoryLayout<Scalar>.stride }
    /// Vectors shorter than this stay dense: too little work to gain from skipping.
    static var minimumSparseLength: Int { 64 }
    /// At most this share of the entries in kept blocks for the blocked form. A choice, not a
    /// measured break-even: images (39% on MNIST) go blocked, and vectors with most blocks
    /// nonzero (hidden activations) stay with BLAS.
    static var maximumKeptShare: Double { 0.5 }

    /// `x`, blocked when it is long and sparse enough.
    @_specialize(where Scalar == Float)
    @_specialize(where Scalar == Double)
    public init(_ x: Vector<Scalar>) {
        let n = x.count
        count = n
        // A quick count first: a dense vector (hidden activations) is seen within its first
        // blocks, without allocating or copying anything. At most `limit` kept blocks (the
        // tail's counted as one) means at most the kept share of the entries.
        let limit = Int32(Self.maximumKeptShare * Double(n) / Double(Self.lanes))
        guard n >= Self.minimumSparseLength,
              x.withUnsafeBufferPointer({ SparseKernels.blockCount($0.baseAddress!, Int32(n), limit) }) <= limit else {
            dense = x
            blocked = nil
            return
        }
        let b = BlockedVector(count: n, scalarStride: MemoryLayout<Scalar>.stride, lanes: Self.lanes)
        x.withUnsafeBufferPointer { SparseKernels.blockCompress($0.baseAddress!, Int32(n), into: b) }
        dense = nil
        blocked = b
    }

    /// `x` kept dense, without looking at its entries (a gradient, a hidden activation).
    public init(dense x: Vector<Scalar>) {
        count = x.count
        dense = x
        blocked = nil
    }

    /// Whether only the blocks with nonzeros are kept.
    public var isSparse: Bool { dense == nil }
}

/// The memory of a blocked vector (`sk_block_compress_*`): block positions and values, tail
/// positions and values, in one allocation. Not generic (its scalar size is a number), so
/// making and freeing one needs no generic metadata at run time.
@usableFromInline
final class BlockedVector {
    let memory: UnsafeMutableRawPointer
    let blocks: UnsafeMutablePointer<Int32>
    let tailIndices: UnsafeMutablePointer<Int32>
    let values: UnsafeMutableRawPointer
    let tailValues: UnsafeMutableRawPointer
    var blockCount: Int32 = 0
    var tailCount: Int32 = 0

    init(count n: Int, scalarStride: Int, lanes: Int) {
        let indexBytes = (n / lanes + lanes) * 4
        let valueOffset = (indexBytes + 63) & ~63
        memory = UnsafeMutableRawPointer.allocate(byteCount: valueOffset + (n + lanes) * scalarStride, alignment: 64)
        blocks = memory.bindMemory(to: Int32.self, capacity: n / lanes + lanes)
        tailIndices = blocks + n / lanes
        values = memory + valueOffset
        tailValues = values + n * scalarStride
    }

    deinit { memory.deallocate() }
}

extension SparseKernels {
    static func blockCount<S: TensorScalar>(_ x: UnsafePointer<S>, _ n: Int32, _ stopAbove: Int32) -> Int32 {
        if S.self == Float.self {
            sk_block_count_f(typed(x, Float.self), n, stopAbove)
        } else if S.self == Double.self {
            sk_block_count_d(typed(x, Double.self), n, stopAbove)
        } else {
            fatalError("sparse kernels support Float and Double, not \(S.self)")
        }
    }

    static func blockCompress<S: TensorScalar>(_ x: UnsafePointer<S>, _ n: Int32, into b: BlockedVector) {
        if S.self == Float.self {
            sk_block_compress_f(typed(x, Float.self), n, b.blocks, b.values.assumingMemoryBound(to: Float.self),
                                &b.blockCount, b.tailIndices, b.tailValues.assumingMemoryBound(to: Float.self), &b.tailCount)
        } else if S.self == Double.self {
            sk_block_compress_d(typed(x, Double.self), n, b.blocks, b.values.assumingMemoryBound(to: Double.self),
                                &b.blockCount, b.tailIndices, b.tailValues.assumingMemoryBound(to: Double.self), &b.tailCount)
        } else {
            fatalError("sparse kernels support Float and Double, not \(S.self)")
        }
    }

    static func blockGer<S: TensorScalar>(_ rows: Int32, _ w: UnsafeMutablePointer<S>, _ ldw: Int64, _ alpha: S,
                                          _ u: UnsafePointer<S>, _ v: BlockedVector) {
        if S.self == Float.self {
            sk_block_ger_f(rows, typed(w, Float.self), ldw, alpha as! Float, typed(u, Float.self), v.blockCount, v.blocks,
                           v.values.assumingMemoryBound(to: Float.self), v.tailCount, v.tailIndices,
                           v.tailValues.assumingMemoryBound(to: Float.self))
        } else if S.self == Double.self {
            sk_block_ger_d(rows, typed(w, Double.self), ldw, alpha as! Double, typed(u, Double.self), v.blockCount, v.blocks,
                           v.values.assumingMemoryBound(to: Double.self), v.tailCount, v.tailIndices,
                           v.tailValues.assumingMemoryBound(to: Double.self))
        } else {
            fatalError("sparse kernels support Float and Double, not \(S.self)")
        }
    }

    static func denseRowsGer<S: TensorScalar>(_ n: Int32, _ cols: Int32, _ w: UnsafeMutablePointer<S>, _ ldw: Int64,
                                              _ alpha: S, _ u: UnsafePointer<S>, _ x: UnsafePointer<S>) {
        if S.self == Float.self {
            sk_dense_rows_ger_f(n, cols, typed(w, Float.self), ldw, alpha as! Float, typed(u, Float.self), typed(x, Float.self))
        } else if S.self == Double.self {
            sk_dense_rows_ger_d(n, cols, typed(w, Double.self), ldw, alpha as! Double, typed(u, Double.self), typed(x, Double.self))
        } else {
            fatalError("sparse kernels support Float and Double, not \(S.self)")
        }
    }

    static func denseVecmat<S: TensorScalar>(_ n: Int32, _ cols: Int32, _ w: UnsafePointer<S>, _ ldw: Int64,
                                             _ x: UnsafePointer<S>, _ bias: UnsafePointer<S>?, _ y: UnsafeMutablePointer<S>) {
        if S.self == Float.self {
            sk_dense_vecmat_f(n, cols, typed(w, Float.self), ldw, typed(x, Float.self), typed(bias, Float.self), typed(y, Float.self))
        } else if S.self == Double.self {
            sk_dense_vecmat_d(n, cols, typed(w, Double.self), ldw, typed(x, Double.self), typed(bias, Double.self), typed(y, Double.self))
        } else {
            fatalError("sparse kernels support Float and Double, not \(S.self)")
        }
    }

    static func blockRowsGer<S: TensorScalar>(_ cols: Int32, _ w: UnsafeMutablePointer<S>, _ ldw: Int64, _ alpha: S,
                                              _ u: UnsafePointer<S>, _ x: BlockedVector) {
        if S.self == Float.self {
            sk_block_rows_ger_f(cols, typed(w, Float.self), ldw, alpha as! Float, typed(u, Float.self), x.blockCount,
                                x.blocks, x.values.assumingMemoryBound(to: Float.self), x.tailCount, x.tailIndices,
                                x.tailValues.assumingMemoryBound(to: Float.self))
        } else if S.self == Double.self {
            sk_block_rows_ger_d(cols, typed(w, Double.self), ldw, alpha as! Double, typed(u, Double.self), x.blockCount,
                                x.blocks, x.values.assumingMemoryBound(to: Double.self), x.tailCount, x.tailIndices,
                                x.tailValues.assumingMemoryBound(to: Double.self))
        } else {
            fatalError("sparse kernels support Float and Double, not \(S.self)")
        }
    }

    static func blockVecmat<S: TensorScalar>(_ cols: Int32, _ w: UnsafePointer<S>, _ ldw: Int64, _ x: BlockedVector,
                                             _ bias: UnsafePointer<S>?, _ y: UnsafeMutablePointer<S>) {
        if S.self == Float.self {
            sk_block_vecmat_f(cols, typed(w, Float.self), ldw, x.blockCount, x.blocks,
                              x.values.assumingMemoryBound(to: Float.self), x.tailCount, x.tailIndices,
                              x.tailValues.assumingMemoryBound(to: Float.self), typed(bias, Float.self), typed(y, Float.self))
        } else if S.self == Double.self {
            sk_block_vecmat_d(cols, typed(w, Double.self), ldw, x.blockCount, x.blocks,
                              x.values.assumingMemoryBound(to: Double.self), x.tailCount, x.tailIndices,
                              x.tailValues.assumingMemoryBound(to: Double.self), typed(bias, Double.self), typed(y, Double.self))
        } else {
            fatalError("sparse kernels support Float and Double, not \(S.self)")
        }
    }

    static func blockMatvec<S: TensorScalar>(_ rows: Int32, _ w: UnsafePointer<S>, _ ldw: Int64,
                                             _ v: BlockedVector, _ y: UnsafeMutablePointer<S>) {
        if S.self == Float.self {
            sk_block_matvec_f(rows, typed(w, Float.self), ldw, v.blockCount, v.blocks,
                              v.values.assumingMemoryBound(to: Float.self), v.tailCount, v.tailIndices,
                              v.tailValues.assumingMemoryBound(to: Float.self), typed(y, Float.self))
        } else if S.self == Double.self {
            sk_block_matvec_d(rows, typed(w, Double.self), ldw, v.blockCount, v.blocks,
                              v.values.assumingMemoryBound(to: Double.self), v.tailCount, v.tailIndices,
                              v.tailValues.assumingMemoryBound(to: Double.self), typed(y, Double.self))
        } else {
            fatalError("sparse kernels support Float and Double, not \(S.self)")
        }
    }
}
