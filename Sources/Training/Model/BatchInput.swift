import Engine

/// A batch of input samples as the first layer reads it: dense rows, or sparse rows when most
/// inputs are exact zeros (MNIST: ~19% of the pixels are nonzero).
///
/// `LabeledDataSet.batchInput(_:as:)` chooses by the batch's measured density against
/// `sparseDensityLimit`; `logits(_:batch:)` and `batchLoss` take either. The choice changes only
/// the rounding of the first layer, and depends only on the batch's pixels, so a shard's
/// gradient stays the same bits on every worker.
public enum BatchInput<Scalar: TensorScalar>: Sendable {
    /// One sample per row of a dense matrix.
    case dense(Matrix<Scalar>)
    /// One sample per row of a sparse matrix.
    case sparse(SparseMatrix<Scalar>)

    /// Batches at most this dense (nonzero inputs over all inputs) go sparse. Measured with
    /// `engine-bench --only sparse` on the 784-300 first layer (BENCHMARKS.md): the sparse
    /// forward-and-weight-gradient breaks even with the two dense GEMMs at about 50% density on
    /// one and on two threads (MNIST batches: 19%); the limit was set when that was ~30% and ~19%.
    public static var sparseDensityLimit: Double { 0.25 }

    /// Number of samples.
    public var rows: Int {
        switch self {
        case .dense(let m): m.rows
        case .sparse(let s): s.rows
        }
    }

    /// Whether the batch is held as sparse rows.
    public var isSparse: Bool {
        if case .sparse = self { return true }
        return false
    }

    /// The batch as a dense matrix (a copy when sparse).
    public var dense: Matrix<Scalar> {
        switch self {
        case .dense(let m): m
        case .sparse(let s): s.dense()
        }
    }
}

extension LabeledDataSet {
    /// The samples at `indices` (pixel intensities in 0...1) as the first layer should read
    /// them: sparse rows when at most `BatchInput.sparseDensityLimit` of their pixels are
    /// nonzero, else a dense matrix.
    @_specialize(exported: true, where S == Float)
    @_specialize(exported: true, where S == Double)
    public func batchInput<S: TensorScalar>(_ indices: [Int], as: S.Type = S.self,
                                            densityLimit: Double = BatchInput<S>.sparseDensityLimit) -> BatchInput<S> {
        if let sparse = batchSparse(indices, as: S.self, maximumDensity: densityLimit) { return .sparse(sparse) }
        return .dense(batchMatrix(indices, as: S.self))
    }

    /// The samples at `indices` as sparse rows (pixel intensities in 0...1, black pixels left
    /// out), or `nil` when more than `maximumDensity` of their pixels are nonzero. Copied from
    /// `sparsePixels` (indexed on the first call).
    @_specialize(exported: true, where S == Float)
    @_specialize(exported: true, where S == Double)
    public func batchSparse<S: TensorScalar>(_ indices: [Int], as: S.Type = S.self,
                                             maximumDensity: Double = 1) -> SparseMatrix<S>? {
        for index in indices {
            precondition(index >= 0 && index < count, "sample \(index) out of range for a data set of \(count)")
        }
        if let index = sparsePixels {
            return SparseMatrix(gatheringRowsOf: index, indices: indices, scale: 1 / 255, maximumDensity: maximumDensity)
        }
        return pixels.withUnsafeBufferPointer { bytes in
            SparseMatrix(gatheringRowsOf: bytes, rowLength: featureCount, indices: indices,
                         scale: 1 / 255, maximumDensity: maximumDensity)
        }
    }
}

/// A layer applied to a sparse batch (one sample per row): `X * weights + biases` on every
/// row, with work in proportion to the nonzeros of `X`.
@_specialize(exported: true, where S == Float)
@_specialize(exported: true, where S == Double)
public func runLayer<S>(_ layer: BVar<Layer<S>>, sparseBatch x: SparseMatrix<S>) -> BVar<Matrix<S>> {
    sparseAffine(x, layer[Lenses.weights()], layer[Lenses.biases()])
}

/// The logits of a batch given as dense or sparse rows (a sparse batch goes through
/// `sparseAffine` in the first layer).
@_specialize(exported: true, where S == Float)
@_specialize(exported: true, where S == Double)
public func logits<S>(_ net: BVar<Network<S>>, batch x: BatchInput<S>) -> BVar<Matrix<S>> {
    switch x {
    case .dense(let m): logits(net, batch: constVar(m))
    case .sparse(let s): logits(net) { runLayer($0, sparseBatch: s) }
    }
}

/// `batchLoss` on a batch given as dense or sparse rows: the summed softmax cross-entropy
/// against the labels.
@_specialize(exported: true, where S == Float)
@_specialize(exported: true, where S == Double)
public func batchLoss<S>(_ net: BVar<Network<S>>, _ x: BatchInput<S>, labels: [Int]) -> BVar<S> {
    softMaxCrossEntropy(logits: logits(net, batch: x), labels: labels)
}
