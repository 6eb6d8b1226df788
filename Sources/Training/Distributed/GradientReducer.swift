import CSparseKernels

/// Adds the gradient sums of a batch's shards in shard order, whatever order they arrive in.
///
/// Results that arrive early wait until every shard before them has been added, so the sum is
/// the same bits every time; a shard's result arriving twice (a retried task) is ignored.
public struct GradientReducer: Sendable {
    /// Number of shards in the batch.
    public let shardCount: Int
    /// The running sum of the gradients added so far (shards `0..<nextShard`).
    public private(set) var gradientSum: [Float]
    /// Summed loss of the shards added so far.
    public private(set) var lossSum: Double = 0
    /// Correct predictions in the shards added so far.
    public private(set) var correct = 0
    /// Samples in the shards added so far.
    public private(set) var sampleCount = 0
    /// The next shard to add.
    public private(set) var nextShard = 0
    private var waiting: [Int: ShardSum] = [:]

    /// One shard's contribution. Its gradient is read through `withGradient`, so that it can
    /// stay where it arrived (a coordinator adds a received frame's bytes in place).
    public struct ShardSum: Sendable {
        /// Number of gradient values.
        public var gradientCount: Int
        /// Calls its argument with the gradient sum's values.
        public var withGradient: @Sendable ((UnsafeBufferPointer<Float>) -> Void) -> Void
        public var lossSum: Double
        public var correct: Int
        public var count: Int

        public init(gradient: [Float], lossSum: Double, correct: Int, count: Int) {
            self.init(gradientCount: gradient.count, withGradient: { gradient.withUnsafeBufferPointer($0) },
                      lossSum: lossSum, correct: correct, count: count)
        }

        public init(gradientCount: Int, withGradient: @escaping @Sendable ((UnsafeBufferPointer<Float>) -> Void) -> Void,
                    lossSum: Double, correct: Int, count: Int) {
            self.gradientCount = gradientCount
            self.withGradient = withGradient
            self.lossSum = lossSum
            self.correct = correct
            self.count = count
        }
    }

    /// A reducer for `shardCount` shards of `parameterCount` values. Its sum starts in
    /// `buffer`, set to zero in place, when the buffer has that size: a run hands each step the
    /// previous step's sum, so that no step allocates (and page-faults) a fresh megabyte.
    public init(shardCount: Int, parameterCount: Int, reusing buffer: consuming [Float] = []) {
        self.shardCount = shardCount
        if buffer.count == parameterCount {
            gradientSum = consume buffer
            gradientSum.withUnsafeMutableBufferPointer { $0.update(repeating: 0) }
        } else {
            gradientSum = [Float](repeating: 0, count: parameterCount)
        }
    }

    /// Whether every shard has been added.
    public var isComplete: Bool { nextShard == shardCount }

    /// Whether shard `index` has already been received (added or waiting).
    public func hasReceived(_ index: Int) -> Bool { index < nextShard || waiting[index] != nil }

    /// Offers shard `index`'s result; returns false (and changes nothing) for a duplicate or an
    /// index out of range.
    @discardableResult
    public mutating func offer(shard index: Int, _ sum: ShardSum) -> Bool {
        guard index >= 0, index < shardCount, !hasReceived(index) else { return false }
        precondition(sum.gradientCount == gradientSum.count,
                     "shard gradient has \(sum.gradientCount) entries, the model \(gradientSum.count)")
        waiting[index] = sum
        while let next = waiting.removeValue(forKey: nextShard) {
            gradientSum.withUnsafeMutableBufferPointer { total in
                next.withGradient { g in
                    precondition(g.count == total.count, "shard gradient has \(g.count) entries, the model \(total.count)")
                    if let t = total.baseAddress { sk_add_f(t, g.baseAddress!, Int64(total.count)) }
                }
            }
            lossSum += next.lossSum
            correct += next.correct
            sampleCount += next.count
            nextShard += 1
        }
        return true
    }
}
