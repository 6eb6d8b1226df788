import CSparseKernels

/// Adds the gradient sums of a batch's shards in the order of the ``ShardTree``, whatever order
/// they arrive in and whoever added parts of them.
///
/// It takes nodes of the tree: single shards, or a node a worker added itself from shards it
/// computed. A node waits until its sibling is there; then the two are added into the parent,
/// which waits in turn. So the sum is the same bits every time; a node that overlaps one
/// already received (a retried task) is refused. The totals (`gradientSum`, `lossSum`,
/// `correct`, `sampleCount`) are those of the whole batch once `isComplete`.
///
/// A reducer made `deferringLastAddition` leaves the tree's last addition (the root's two
/// halves) to whoever uses the sum, through `withGradientSum`: the optimizer adds the halves
/// entry by entry as it reads them, so that the batch's sum is never written and read again.
public struct GradientReducer: Sendable {
    /// Number of shards in the batch.
    public let shardCount: Int
    /// Number of gradient values.
    public let parameterCount: Int
    /// Whether the last addition is left to `withGradientSum`.
    public let defersLastAddition: Bool
    /// The sum of the nodes holding shard 0 (the batch's sum once complete, unless the last
    /// addition is deferred); a run hands it back to the next step's reducer (`takeBuffers`).
    private var sumBuffer: [Float]
    /// The root's parts once complete: its sum alone, or the two halves of the last addition
    /// when it is deferred.
    private var root: (Part, Part?)?
    /// Summed loss of the batch, once complete.
    public private(set) var lossSum: Double = 0
    /// Correct predictions in the batch, once complete.
    public private(set) var correct = 0
    /// Samples in the batch, once complete.
    public private(set) var sampleCount = 0
    /// Whether the root of the tree, every shard, has been added.
    public private(set) var isComplete = false
    /// Buffers for sums of nodes that do not hold shard 0 (those go into `sumBuffer`): kept
    /// from step to step, like `sumBuffer`, so that a step allocates nothing.
    public private(set) var spareBuffers: [[Float]]
    private var received: [Bool]
    /// Nodes waiting for their sibling, by level and first shard.
    private var waiting: [NodeKey: Part] = [:]
    /// Spare buffers in use by waiting nodes.
    private var sparesInUse: Set<Int> = []

    private struct NodeKey: Hashable {
        var level: Int
        var first: Int
    }

    /// Where a node's sum is.
    private enum Storage {
        /// As received (read where it arrived).
        case received(ShardSum)
        /// In `sumBuffer` (a node holding shard 0).
        case sum
        /// In `spareBuffers[i]`, which the node holds until it is added on.
        case spare(Int)

        var isReceived: Bool {
            if case .received = self { return true }
            return false
        }

        var isSum: Bool {
            if case .sum = self { return true }
            return false
        }
    }

    /// A node's sum and totals.
    private struct Part {
        var storage: Storage
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
                spares: consuming [[Float]] = [], deferringLastAddition: Bool = false) {
        precondition(shardCount >= 1, "a batch has at least one shard")
        self.shardCount = shardCount
        self.parameterCount = parameterCount
        defersLastAddition = deferringLastAddition
        sumBuffer = buffer.count == parameterCount ? consume buffer : [Float](repeating: 0, count: parameterCount)
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
        var part = Part(storage: .received(sum), lossSum: sum.lossSum, correct: sum.correct, count: sum.count)
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
            let (left, right) = isLeft ? (part, sibling) : (sibling, part)
            if defersLastAddition, parentFirst == 0, 2 * size >= shardCount {
                // The root: its halves are added by whoever reads the sum.
                root = (left, right)
                (lossSum, correct, sampleCount, isComplete) = (left.lossSum + right.lossSum, left.correct + right.correct,
                                                               left.count + right.count, true)
                return true
            }
            part = add(left, right, holdsShardZero: parentFirst == 0)
            key = NodeKey(level: key.level + 1, first: parentFirst)
        }
    }

    /// `left + right`, entry by entry, into a buffer of either (a buffer this reducer holds), or
    /// else into `sumBuffer` for a node holding shard 0, a spare buffer for the others.
    private mutating func add(_ left: Part, _ right: Part, holdsShardZero: Bool) -> Part {
        let n = parameterCount
        let storage: Storage
        if left.storage.isReceived && right.storage.isReceived {
            storage = holdsShardZero ? .sum : .spare(takeSpare())
            var total = takeBuffer(storage)
            total.withUnsafeMutableBufferPointer { t in
                read(left) { a in read(right) { b in sk_sum_f(t.baseAddress!, a.baseAddress!, b.baseAddress!, Int64(n)) } }
            }
            putBuffer(storage, total)
        } else {
            // One of them is in a buffer of ours: add the other into it (IEEE addition is
            // commutative, so which one holds the sum changes no bit).
            let (target, other) = left.storage.isReceived ? (right, left) : (left, right)
            storage = target.storage
            var total = takeBuffer(storage)
            total.withUnsafeMutableBufferPointer { t in read(other) { g in sk_add_f(t.baseAddress!, g.baseAddress!, Int64(n)) } }
            putBuffer(storage, total)
            if case .spare(let i) = other.storage { sparesInUse.remove(i) }
        }
        return Part(storage: storage, lossSum: left.lossSum + right.lossSum, correct: left.correct + right.correct,
                    count: left.count + right.count)
    }

    /// The root's totals; its sum in `sumBuffer`, unless the last addition is deferred.
    private mutating func finish(_ whole: Part) {
        (lossSum, correct, sampleCount, isComplete) = (whole.lossSum, whole.correct, whole.count, true)
        if defersLastAddition {
            root = (whole, nil)   // read where it is
            return
        }
        switch whole.storage {
        case .received(let sum):
            // One node held every shard: its sum as received.
            sumBuffer.withUnsafeMutableBufferPointer { total in
                sum.withGradient { g in total.baseAddress!.update(from: g.baseAddress!, count: total.count) }
            }
        case .spare(let i):
            swap(&sumBuffer, &spareBuffers[i])
        case .sum:
            break
        }
        root = (Part(storage: .sum, lossSum: whole.lossSum, correct: whole.correct, count: whole.count), nil)
    }

    /// Calls `body` with the batch's gradient sum once `isComplete`: as one buffer (`otherHalf`
    /// nil), or, when the last addition is deferred, as the root's two halves, whose sum entry
    /// by entry (`half[i] + otherHalf[i]`, one Float addition) is the batch's.
    public func withGradientSum<R>(_ body: (_ half: UnsafeBufferPointer<Float>, _ otherHalf: UnsafeBufferPointer<Float>?) -> R) -> R {
        guard let (first, second) = root else { preconditionFailure("the batch's gradient sum is read before every shard arrived") }
        var result: R?
        read(first) { a in
            if let second {
                read(second) { b in result = body(a, b) }
            } else {
                result = body(a, nil)
            }
        }
        return result!
    }

    /// The batch's gradient sum, once `isComplete` (a copy, with the last addition done, when
    /// it is deferred).
    public var gradientSum: [Float] {
        guard let (whole, otherHalf) = root, !(otherHalf == nil && whole.storage.isSum) else { return sumBuffer }
        return withGradientSum { half, otherHalf in
            guard let otherHalf else { return Array(half) }
            return [Float](unsafeUninitializedCapacity: half.count) { total, initialized in
                if let base = total.baseAddress, half.count > 0 {
                    sk_sum_f(base, half.baseAddress!, otherHalf.baseAddress!, Int64(half.count))
                }
                initialized = half.count
            }
        }
    }

    /// Calls `body` with a node's sum (never the buffer taken out by `takeBuffer`).
    private func read(_ part: Part, _ body: (UnsafeBufferPointer<Float>) -> Void) {
        switch part.storage {
        case .received(let sum):
            let count = parameterCount
            sum.withGradient { g in
                precondition(g.count == count, "shard gradient has \(g.count) entries, the model \(count)")
                body(g)
            }
        case .spare(let i):
            spareBuffers[i].withUnsafeBufferPointer(body)
        case .sum:
            sumBuffer.withUnsafeBufferPointer(body)
        }
    }

    /// Moves one of this reducer's buffers out, so that it can be written while others are read.
    private mutating func takeBuffer(_ storage: Storage) -> [Float] {
        var buffer: [Float] = []
        switch storage {
        case .spare(let i): swap(&buffer, &spareBuffers[i])
        case .sum: swap(&buffer, &sumBuffer)
        case .received: preconditionFailure("a received sum is not a buffer of the reducer")
        }
        return buffer
    }

    private mutating func putBuffer(_ storage: Storage, _ buffer: consuming [Float]) {
        switch storage {
        case .spare(let i): spareBuffers[i] = buffer
        case .sum: sumBuffer = buffer
        case .received: preconditionFailure("a received sum is not a buffer of the reducer")
        }
    }

    private mutating func takeSpare() -> Int {
        if let free = spareBuffers.indices.first(where: { !sparesInUse.contains($0) }) {
            sparesInUse.insert(free)
            return free
        }
        spareBuffers.append([Float](repeating: 0, count: parameterCount))
        sparesInUse.insert(spareBuffers.count - 1)
        return spareBuffers.count - 1
    }

    /// Hands the buffers on to the next step's reducer (`init(reusing:spares:)`), once the sum
    /// is no longer needed: the reducer's sums are gone after this.
    public mutating func takeBuffers() -> (sum: [Float], spares: [[Float]]) {
        root = nil
        waiting = [:]
        sparesInUse = []
        var sum: [Float] = [], spares: [[Float]] = []
        swap(&sum, &sumBuffer)
        swap(&spares, &spareBuffers)
        return (sum, spares)
    }
}
