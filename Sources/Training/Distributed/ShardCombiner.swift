import Engine
import Synchronization

/// The worker's side of the `ShardTree`: when a worker holds both halves of a node of the
/// batch's shard tree, it adds them in the tree's order and sends the node as one gradient. The coordinator would have added the same two sums the same way, so the
/// batch's sum is the same bits; it receives half the messages and makes half the additions.
///
/// A result waits for its sibling only while every shard of the sibling is held by this worker
/// (assigned and not answered): those will be computed here, so the wait ends. Otherwise the
/// result is answered at once.
public final class ShardCombiner: Sendable {
    /// A node's sum: its first shard, its shard count and the result.
    public struct Node: Sendable {
        public var first: UInt32
        public var count: UInt32
        public var result: ShardResult<Float>

        public init(first: UInt32, count: UInt32, result: ShardResult<Float>) {
            self.first = first
            self.count = count
            self.result = result
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
                guard s.waiting[step]?[key]?.count == node.count, var other = s.waiting[step]?.removeValue(forKey: key) else {
                    s.waiting[step, default: [:]][node.first] = node
                    return nil
                }
                // Left + right: the lower shards first, as the tree adds them.
                if other.first < node.first {
                    other.result.add(node.result)
                    other.count *= 2
                    node = other
                } else {
                    node.result.add(other.result)
                    node.count *= 2
                }
            }
            for i in node.first ..< node.first + node.count { s.held[step]?.remove(i) }
            if s.held[step]?.isEmpty == true { s.held[step] = nil }
            if s.waiting[step]?.isEmpty == true { s.waiting[step] = nil }
            return node
        }
    }
}
