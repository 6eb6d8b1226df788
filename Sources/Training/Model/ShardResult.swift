import Engine

/// What one shard of a batch contributes to a training step: the gradient of the summed loss
/// over its samples, the summed loss, and how many samples the network classified correctly.
///
/// Sums (not means) so that the shards of a batch can be added, along the `ShardTree`, into exactly
/// the gradient of the whole batch.
public struct ShardResult<Scalar: TensorScalar>: Sendable {
    /// Gradient of the summed cross-entropy over the shard's samples.
    public var gradient: Network<Scalar>
    /// Summed cross-entropy over the shard's samples.
    public var lossSum: Double
    /// Samples whose most probable class was their label.
    public var correct: Int
    /// Samples in the shard.
    public var count: Int

    public init(gradient: Network<Scalar>, lossSum: Double, correct: Int, count: Int) {
        self.gradient = gradient
        self.lossSum = lossSum
        self.correct = correct
        self.count = count
    }

    /// Adds `other`, the result of the shards that follow this one's in the batch: the sum of
    /// two nodes of the shard tree (`ShardTree`), entry by entry and in that order, as the
    /// coordinator's `GradientReducer` adds them.
    public mutating func add(_ other: ShardResult) {
        gradient.add(other.gradient)
        lossSum += other.lossSum
        correct += other.correct
        count += other.count
    }

    /// Runs the network forward and backward on the samples at `indices` of `data` (one
    /// batched pass: a few GEMMs per layer; the first layer sparse when the samples' pixels
    /// are mostly zeros, see `LabeledDataSet.batchInput`).
    @_specialize(exported: true, where Scalar == Float)
    @_specialize(exported: true, where Scalar == Double)
    public static func compute(_ network: Network<Scalar>, on data: LabeledDataSet,
                               indices: [Int]) -> ShardResult {
        compute(network, on: Input(data, indices: indices))
    }

    /// A shard's samples as the network reads them, gathered before its parameters are known
    /// (a worker prepares the next step's shards while it waits for them).
    public struct Input: Sendable {
        let x: BatchInput<Scalar>
        let labels: [Int]

        /// The samples at `indices` of `data`.
        @_specialize(exported: true, where Scalar == Float)
        @_specialize(exported: true, where Scalar == Double)
        public init(_ data: LabeledDataSet, indices: [Int]) {
            x = data.batchInput(indices, as: Scalar.self)
            labels = data.batchLabels(indices)
        }
    }

    /// `compute(_:on:indices:)` on samples gathered beforehand: the same result, bit for bit.
    @_specialize(exported: true, where Scalar == Float)
    @_specialize(exported: true, where Scalar == Double)
    public static func compute(_ network: Network<Scalar>, on input: Input) -> ShardResult {
        let x = input.x, labels = input.labels
        var scores: Matrix<Scalar>?
        let (loss, gradient) = backprop({ (net: BVar<Network<Scalar>>) -> BVar<Scalar> in
            let z = logits(net, batch: x)
            scores = z.value
            return softMaxCrossEntropy(logits: z, labels: labels)
        }, network)
        let correct = correctCount(scores!, labels)
        return ShardResult(gradient: gradient, lossSum: Double(loss), correct: correct, count: labels.count)
    }
}

/// Loss and accuracy of a network on a data set, without gradients.
public struct Evaluation: Sendable, Equatable {
    /// Summed cross-entropy.
    public var lossSum: Double
    /// Correctly classified samples.
    public var correct: Int
    /// Samples evaluated.
    public var count: Int

    public init(lossSum: Double = 0, correct: Int = 0, count: Int = 0) {
        self.lossSum = lossSum
        self.correct = correct
        self.count = count
    }

    /// Fraction of samples misclassified.
    public var errorRate: Double { count == 0 ? 0 : 1 - Double(correct) / Double(count) }
    /// Mean cross-entropy.
    public var meanLoss: Double { count == 0 ? 0 : lossSum / Double(count) }

    /// Adds another evaluation (of other samples).
    public mutating func add(_ other: Evaluation) {
        lossSum += other.lossSum
        correct += other.correct
        count += other.count
    }

    /// Evaluates `network` on the samples at `indices`, in batches of `batchSize`.
    @_specialize(exported: true, where S == Float)
    @_specialize(exported: true, where S == Double)
    public static func evaluate<S: TensorScalar>(_ network: Network<S>, on data: LabeledDataSet,
                                                 indices: [Int], batchSize: Int = 2000) -> Evaluation {
        var result = Evaluation()
        let all = Array(indices)
        var start = 0
        while start < all.count {
            let chunk = Array(all[start..<min(start + batchSize, all.count)])
            let x = data.batchInput(chunk, as: S.self)
            let labels = data.batchLabels(chunk)
            let z = evalBP({ (net: BVar<Network<S>>) in logits(net, batch: x) }, network)
            let loss = evalBP({ (z: BVar<Matrix<S>>) in softMaxCrossEntropy(logits: z, labels: labels) }, z)
            let correct = correctCount(z, labels)
            result.add(Evaluation(lossSum: Double(loss), correct: correct, count: labels.count))
            start += batchSize
        }
        return result
    }

    /// Evaluates `network` on the whole data set.
    @_specialize(exported: true, where S == Float)
    @_specialize(exported: true, where S == Double)
    public static func evaluate<S: TensorScalar>(_ network: Network<S>, on data: LabeledDataSet) -> Evaluation {
        evaluate(network, on: data, indices: Array(0..<data.count))
    }
}

/// How many rows of `scores` have their largest entry at the row's label.
func correctCount<S: TensorScalar>(_ scores: Matrix<S>, _ labels: [Int]) -> Int {
    zip(scores.indexOfMaximumPerRow(), labels).reduce(0) { $0 + ($1.0 == $1.1 ? 1 : 0) }
}
