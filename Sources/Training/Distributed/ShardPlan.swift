/// How a training batch is cut into shards: fixed-size runs of the batch's sample indices, in
/// order. The cut depends only on the batch and `shardSize`, never on how many workers there
/// are, so that adding the shard sums along the `ShardTree` gives the same bits with any number
/// of workers.
public struct ShardPlan: Sendable, Equatable {
    /// The shards, each a list of sample indices, in the order their sums are added.
    public let shards: [[Int]]

    /// Cuts `batch` into shards of `shardSize` samples (the last may be shorter).
    public init(batch: [Int], shardSize: Int) {
        precondition(shardSize > 0, "shard size must be positive, got \(shardSize)")
        shards = stride(from: 0, to: batch.count, by: shardSize).map {
            Array(batch[$0..<min($0 + shardSize, batch.count)])
        }
    }

    /// Total number of samples.
    public var sampleCount: Int { shards.reduce(0) { $0 + $1.count } }
}

/// The batches of one epoch: a seeded shuffle of the training set cut into batches.
public struct EpochPlan: Sendable {
    /// The batches, in training order.
    public let batches: [[Int]]

    /// Shuffles `0..<sampleCount` with `generator` and cuts it into batches of `batchSize`
    /// (the last, shorter batch is kept).
    public init(sampleCount: Int, batchSize: Int, generator: inout SeededGenerator) {
        let order = generator.permutation(sampleCount)
        batches = stride(from: 0, to: sampleCount, by: batchSize).map {
            Array(order[$0..<min($0 + batchSize, sampleCount)])
        }
    }
}
