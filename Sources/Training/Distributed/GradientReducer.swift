import CSparseKernels

/// Adds the gradient sums of a batch's shards in the order of the ``ShardTree``, whatever order
/// they arrive in and whoever added parts of them.
///
/// It takes nodes of the tree: single shards, or a node a worker added itself from shards it
/// computed. A node waits until its sibling is there; then the two are added into the parent,
/// which waits in turn. So the sum is the same bits every time; a node that overlaps one
/// already received (a retried task) is refused. The totals (`gradientSum`, `lossSum`,
/// `correct`, `sampleCount`) are those of the whole batch once `isComplete`.
public struct GradientReducer: Sendable {
    /// Number of shards in the batch.
    public let shardCount: Int
    /// Number of gradient values.
    public let parameterCount: Int
    /// The batch's gradient sum, once `isComplete` (a run hands it back to the next step's reducer).
    public private(set) var gradientSum: [Float]
    /// Summed loss of the batch, once complete.
    public private(set) var lossSum: Double = 0
    /// Correct predictions in the batch, once complete.
    public private(set) var correct = 0
    /// Samples in the batch, once complete.
    public private(set) var sampleCount = 0
    /// Whether the root of the tree, every shard, has been added.
    public private(set) var isComplete = false
    /// Buffers for sums of nodes that do not hold shard 0 (those go into `gradientSum`): kept
    /// from step to step, like `gradientSum`, so that a step allocates nothing.
    public private(set) var spareBuffers: [[Float]]
    private var received: [Bool]
    /// Nodes waiting for their sibling, by level and first shard.
    private var waiting: [NodeKey: Part] = [:]

    private struct NodeKey: Hashable {
        var level: Int
        var first: Int
    }

    /// A node's sum: as received (read where it arrived), or added into a buffer of this reducer
    /// (`nil`: `gradientSum`; else an index into `spareBuffers`, which it holds until it is added
    /// on).
    private struct Part {
        var received: ShardSum?
        var buffer: Int?
        var lossSum: Double
        var correct: Int
        var count: Int
    }

    /// One node's contribution: a shard's, or several adjacent shards' already added in the
    /// tree's order. Its gradient is read through `withGradient`, so that it can stay where it
    /// arrived (a coordinator adds a received frame's bytes in place).
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

    /// A reducer for `shardCount` shards of `parameterCount` values. Its sum goes into `buffer`
    /// and the sums of other nodes into `spares`, when they have that size: a run hands each
    /// step the previous step's buffers, so that no step allocates (and page-faults) a fresh
    /// megabyte.
    public init(shardCount: Int, parameterCount: Int, reusing buffer: consuming [Float] = [],
                spares: consuming [[Float]] = []) {
        precondition(shardCount >= 1, "a batch has at least one shard")
        self.shardCount = shardCount
        self.parameterCount = parameterCount
        gradientSum = buffer.count == parameterCount ? consume buffer : [Float](repeating: 0, count: parameterCount)
        spareBuffers = spares
        spareBuffers.removeAll { $0.count != parameterCount }
        received = [Bool](repeating: false, count: shardCount)
    }

    /// Whether shard `index` has already been received (alone or in a node).
    public func hasReceived(_ index: Int) -> Bool { received.indices.contains(index) && received[index] }

    /// Offers the sum of shard `index`; see `offer(shards:_:)`.
    @discardableResult
    public mutating func offer(shard index: Int, _ sum: ShardSum) -> Bool {
        offer(shards: index ..< index + 1, sum)
    }

    /// Offers the sum of the node `shards` of the tree; returns false (and changes nothing) when
    /// `shards` is not a node or overlaps shards already received.
    @discardableResult
    public mutating func offer(shards: Range<Int>, _ sum: ShardSum) -> Bool {
        guard let level = ShardTree.level(of: shards, shardCount: shardCount),
              !shards.contains(where: { received[$0] }) else { return false }
        precondition(sum.gradientCount == parameterCount,
                     "shard gradient has \(sum.gradientCount) entries, the model \(parameterCount)")
        for i in shards { received[i] = true }
        var key = NodeKey(level: level, first: shards.lowerBound)
        var part = Part(received: sum, buffer: nil, lossSum: sum.lossSum, correct: sum.correct, count: sum.count)
        while true {
            let size = 1 << key.level
            if key.first == 0, size >= shardCount {
                finish(part)
                return true
            }
            let parentFirst = key.first - key.first % (2 * size)
            let isLeft = parentFirst == key.first
            let siblingFirst = isLeft ? key.first + size : parentFirst
            if siblingFirst >= shardCount {
                // The right half holds no shard: the node is its parent.
                key = NodeKey(level: key.level + 1, first: parentFirst)
                continue
            }
            guard let sibling = waiting.removeValue(forKey: NodeKey(level: key.level, first: siblingFirst)) else {
                waiting[key] = part
                return true
            }
            part = isLeft ? add(part, sibling, holdsShardZero: parentFirst == 0)
                          : add(sibling, part, holdsShardZero: parentFirst == 0)
            key = NodeKey(level: key.level + 1, first: parentFirst)
        }
    }

    /// `left + right`, entry by entry, into a buffer of either (a buffer this reducer holds), or
    /// else into `gradientSum` for a node holding shard 0, a spare buffer for the others.
    private mutating func add(_ left: Part, _ right: Part, holdsShardZero: Bool) -> Part {
        var out = Part(received: nil, buffer: nil, lossSum: left.lossSum + right.lossSum,
                       correct: left.correct + right.correct, count: left.count + right.count)
        let n = parameterCount
        if left.received == nil || right.received == nil {
            // One of them is in a buffer of ours: add the other into it (IEEE addition is
            // commutative, so which one holds the sum changes no bit).
            let (target, other) = left.received == nil ? (left, right) : (right, left)
            out.buffer = target.buffer
            var total = takeBuffer(target.buffer)
            total.withUnsafeMutableBufferPointer { t in read(other) { g in sk_add_f(t.baseAddress!, g.baseAddress!, Int64(n)) } }
            putBuffer(out.buffer, total)
            if other.received == nil, let spare = other.buffer { sparesInUse.remove(spare) }
            return out
        }
        out.buffer = holdsShardZero ? nil : takeSpare()
        var total = takeBuffer(out.buffer)
        total.withUnsafeMutableBufferPointer { t in
            read(left) { a in read(right) { b in sk_sum_f(t.baseAddress!, a.baseAddress!, b.baseAddress!, Int64(n)) } }
        }
        putBuffer(out.buffer, total)
        return out
    }

    /// The root's totals; its sum in `gradientSum`.
    private mutating func finish(_ root: Part) {
        if let sum = root.received {
            // One node held every shard: its sum as received.
            gradientSum.withUnsafeMutableBufferPointer { total in
                sum.withGradient { g in total.baseAddress!.update(from: g.baseAddress!, count: total.count) }
            }
        } else if let spare = root.buffer {
            swap(&gradientSum, &spareBuffers[spare])
        }
        (lossSum, correct, sampleCount, isComplete) = (root.lossSum, root.correct, root.count, true)
    }

    /// Calls `body` with a node's sum (never the buffer taken out by `takeBuffer`).
    private func read(_ part: Part, _ body: (UnsafeBufferPointer<Float>) -> Void) {
        if let sum = part.received {
            let count = parameterCount
            sum.withGradient { g in
                precondition(g.count == count, "shard gradient has \(g.count) entries, the model \(count)")
                body(g)
            }
        } else if let spare = part.buffer {
            spareBuffers[spare].withUnsafeBufferPointer(body)
        } else {
            gradientSum.withUnsafeBufferPointer(body)
        }
    }

    /// Moves a buffer out (nil: `gradientSum`), so that it can be written while others are read.
    private mutating func takeBuffer(_ spare: Int?) -> [Float] {
        var buffer: [Float] = []
        if let spare { swap(&buffer, &spareBuffers[spare]) } else { swap(&buffer, &gradientSum) }
        return buffer
    }

    private mutating func putBuffer(_ spare: Int?, _ buffer: consuming [Float]) {
        if let spare { spareBuffers[spare] = buffer } else { gradientSum = buffer }
    }

    /// Spare buffers in use by waiting nodes.
    private var sparesInUse: Set<Int> = []

    private mutating func takeSpare() -> Int {
        if let free = spareBuffers.indices.first(where: { !sparesInUse.contains($0) }) {
            sparesInUse.insert(free)
            return free
        }
        spareBuffers.append([Float](repeating: 0, count: parameterCount))
        sparesInUse.insert(spareBuffers.count - 1)
        return spareBuffers.count - 1
    }

    /// Hands the spare buffers on to the next step's reducer.
    public mutating func takeSpareBuffers() -> [[Float]] {
        sparesInUse = []
        defer { spareBuffers = [] }
        return spareBuffers
    }
}
