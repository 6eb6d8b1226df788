import CSparseKernels
import Engine
import Synchronization

/// The worker's side of the `ShardTree`: when a worker holds both halves of a node of the
/// batch's shard tree, it adds them in the tree's order and sends the node as one gradient.
/// The coordinator would have added the same two sums the same way, so the batch's sum is the
/// same bits; it receives half the messages and makes half the additions.
///
/// A result waits for its sibling only while every shard of the sibling is held by this worker
/// (assigned and not answered): those will be computed here, so the wait ends. Otherwise the
/// result is answered at once.
public final class ShardCombiner: Sendable {
    /// A node's sum: its first shard, its shard count and the result.
    ///
    /// The node's last addition (of its two halves) is left pending until the node is written
    /// out (`flatten(into:)`), where the halves are added as they are read: the answer's
    /// gradient goes straight into the frame or the shared-memory slot, with no sum written
    /// and read again first.
    public struct Node: Sendable {
        public var first: UInt32
        public var count: UInt32
        /// The node's result, or the lower half of it while `upperHalf` is pending.
        private var lowerHalf: ShardResult<Float>
        private var upperHalf: ShardResult<Float>?

        public init(first: UInt32, count: UInt32, result: ShardResult<Float>) {
            self.first = first
            self.count = count
            lowerHalf = result
        }

        /// The node made of two adjacent nodes of the same size, `lower` first; their sum is
        /// pending.
        init(lower: consuming Node, upper: consuming Node) {
            precondition(lower.upperHalf == nil && upper.upperHalf == nil, "the halves' own additions are done first")
            first = lower.first
            count = lower.count + upper.count
            lowerHalf = lower.lowerHalf
            upperHalf = upper.lowerHalf
        }

        /// The node's result (its pending addition done, in a copy of the lower half's buffers;
        /// `addPendingHalf()` does it in place).
        public var result: ShardResult<Float> {
            var node = self
            node.addPendingHalf()
            return node.lowerHalf
        }

        /// Does the pending addition, into the lower half's buffers (in place when this node
        /// holds the only reference to them).
        mutating func addPendingHalf() {
            guard let upper = upperHalf else { return }
            upperHalf = nil
            lowerHalf.add(upper)
        }

        /// The node's result as the two halves of its pending addition (`upper` nil when none
        /// is pending).
        public var halves: (lower: ShardResult<Float>, upper: ShardResult<Float>?) { (lowerHalf, upperHalf) }

        /// Samples in the node.
        public var sampleCount: Int { lowerHalf.count + (upperHalf?.count ?? 0) }
        /// Summed loss over the node's samples (lower half first, as `ShardResult.add`).
        public var lossSum: Double { upperHalf.map { lowerHalf.lossSum + $0.lossSum } ?? lowerHalf.lossSum }
        /// Correct predictions in the node.
        public var correct: Int { lowerHalf.correct + (upperHalf?.correct ?? 0) }
        /// Number of gradient values.
        public var parameterCount: Int { lowerHalf.gradient.parameterCount }

        /// Writes the node's gradient, flattened (`Network.flattened()`), into `destination`:
        /// with a pending addition, each entry as `lower + upper`, one Float addition, the bits
        /// of `result.gradient.flattened()`.
        public func flatten(into destination: UnsafeMutableBufferPointer<Float>) {
            guard let upperHalf else { return lowerHalf.gradient.flatten(into: destination) }
            Network.flattenSum(lowerHalf.gradient, upperHalf.gradient, into: destination)
        }
    }

    private struct State {
        /// Training shards held, by step: assigned, and not answered yet.
        var held: [UInt64: Set<UInt32>] = [:]
        /// Nodes computed and waiting for their sibling, by step and first shard.
        var waiting: [UInt64: [UInt32: Node]] = [:]
    }
    private let state = Mutex(State())

    public init() {}

    /// Records that training task `shard` of `step` was assigned to this worker.
    public func hold(step: UInt64, shard: UInt32) {
        state.withLock { _ = $0.held[step, default: []].insert(shard) }
    }

    /// Shard `shard`'s result: the node to answer now (the shard alone, or a node it completes),
    /// or nil when it waits for its sibling. The result is taken over (`consuming`): a sum is
    /// added into the buffers of one of its halves, which must not be shared (else the addition
    /// would first copy them).
    public func complete(step: UInt64, shard: UInt32, _ result: consuming ShardResult<Float>) -> Node? {
        var node = Node(first: shard, count: 1, result: result)
        return state.withLock { s -> Node? in
            while node.count <= UInt32.max / 2 {
                let range = Int(node.first) ..< Int(node.first) + Int(node.count)
                let sibling = ShardTree.sibling(of: range)
                let held = s.held[step] ?? []
                guard sibling.lowerBound >= 0, sibling.upperBound <= Int(UInt32.max) + 1,
                      sibling.allSatisfy({ held.contains(UInt32($0)) }) else { break }
                // The sibling is complete when a node of its size waits at its first shard (a
                // smaller one there is still waiting for its own sibling).
                let key = UInt32(sibling.lowerBound)
                guard s.waiting[step]?[key]?.count == node.count, let other = s.waiting[step]?.removeValue(forKey: key) else {
                    // A waiting node is added on later: its own addition is done now.
                    node.addPendingHalf()
                    s.waiting[step, default: [:]][node.first] = node
                    return nil
                }
                // Left + right: the lower shards first, as the tree adds them (when the node is
                // written out, or when it waits for a sibling in turn).
                node.addPendingHalf()
                node = other.first < node.first ? Node(lower: other, upper: node) : Node(lower: node, upper: other)
            }
            for i in node.first ..< node.first + node.count { s.held[step]?.remove(i) }
            if s.held[step]?.isEmpty == true { s.held[step] = nil }
            if s.waiting[step]?.isEmpty == true { s.waiting[step] = nil }
            return node
        }
    }
}
