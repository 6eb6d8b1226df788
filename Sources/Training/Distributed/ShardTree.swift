/// The fixed order in which the gradient sums of a batch's shards are added: a binary tree over
/// the shard indices, the same whatever the workers.
///
/// A node at level `j` holds the shards `k * 2^j ..< min((k + 1) * 2^j, shardCount)`; its sum
/// is its left child's sum plus its right child's (one IEEE addition per entry), or its left
/// child's alone when the right one holds no shard. Shard `i` is the leaf `(0, i)`; the root
/// holds every shard. Because the tree depends on the shard count alone, the sum is the same
/// bits whoever adds which node: a worker that computed both children of a node adds them and
/// sends the node (half the messages and half the coordinator's additions), and the coordinator
/// adds what it receives. With shards 0-3: `(s0 + s1) + (s2 + s3)`.
public enum ShardTree {
    /// The lowest level at which `shards` is a node of the tree over `shardCount` shards, or
    /// nil when it is none (empty, out of range, or not aligned).
    public static func level(of shards: Range<Int>, shardCount: Int) -> Int? {
        guard !shards.isEmpty, shards.lowerBound >= 0, shards.upperBound <= shardCount else { return nil }
        var level = 0
        while 1 << level < shards.count { level += 1 }
        let size = 1 << level
        guard shards.lowerBound % size == 0, shards.upperBound == min(shards.lowerBound + size, shardCount) else { return nil }
        return level
    }

    /// The node that `shards`, a whole node (a power of two of shards, aligned), is added to:
    /// its sibling, the other half of its parent. For a worker, which does not know the shard
    /// count: the sibling may hold shards beyond it (then the worker holds none of them).
    public static func sibling(of shards: Range<Int>) -> Range<Int> {
        let size = shards.count
        precondition(size > 0 && size & (size - 1) == 0 && shards.lowerBound % size == 0,
                     "\(shards) is not a whole node of the shard tree")
        return shards.lowerBound % (2 * size) == 0 ? shards.upperBound ..< shards.upperBound + size
                                                   : shards.lowerBound - size ..< shards.lowerBound
    }
}
