import CSparseKernels
import Foundation
import Testing
import Training

/// The optimizer and the gradient reducer run their loops in C (`sk_adam_f`, `sk_add_f`, `sk_sum_f`, AVX2
/// when the CPU has it). These tests hold them to the scalar Swift arithmetic they replace, bit
/// for bit, on the AVX2 and on the portable path: the trained model's bits depend on it.
@Suite("Optimizer and reducer kernels")
struct OptimizerKernelTests {
    /// Values with every kind of entry a gradient or a parameter holds: zeros of both signs,
    /// tiny and large magnitudes, subnormals, repeated values.
    static func values(_ count: Int, seed: UInt32) -> [Float] {
        var state = seed
        return (0..<count).map { i in
            state = state &* 1_664_525 &+ 1_013_904_223
            let unit = Float(state >> 8) / Float(1 << 24) - 0.5
            switch i % 11 {
            case 0: return 0
            case 1: return -0.0
            case 2: return unit * 1e-30
            case 3: return Float.leastNonzeroMagnitude * Float(i % 5)
            case 4: return unit * 1e4
            default: return unit
            }
        }
    }

    /// Adam as the scalar Swift loop that the kernel replaces, operation by operation.
    static func referenceAdam(m: inout [Float], v: inout [Float], p: inout [Float], sum: [Float], scale: Float,
                              b1: Float, b2: Float, eps: Float, stepSize: Float, root2: Float) {
        for i in p.indices {
            let g = sum[i] * scale
            m[i] = b1 * m[i] + (1 - b1) * g
            v[i] = b2 * v[i] + (1 - b2) * g * g
            p[i] -= stepSize * m[i] / (v[i].squareRoot() / root2 + eps)
        }
    }

    /// Runs `body` once with the kernels the CPU chose and once with the portable ones.
    static func onBothPaths(_ body: (String) -> Void) {
        let chosen = sk_uses_avx2()
        body(chosen != 0 ? "AVX2" : "portable")
        sk_disable_avx2(1)
        body("portable")
        sk_disable_avx2(chosen != 0 ? 0 : 1)
    }

    @Test("Adam's steps are the scalar Swift arithmetic's bits, whole vectors and tails, on both paths",
          arguments: [0, 1, 7, 8, 9, 1001])
    func adamMatchesScalarArithmetic(count: Int) {
        Self.onBothPaths { path in
            var optimizer = Optimizer(kind: .adam, learningRate: 0.01)
            var parameters = Self.values(count, seed: 1)
            var m = [Float](repeating: 0, count: count), v = m, p = parameters
            for step in 1...3 {
                let sum = Self.values(count, seed: UInt32(10 + step))
                let scale: Float = 1 / 5000
                optimizer.apply(gradientSum: sum, scale: scale, to: &parameters)
                let correction1 = 1 - Float(pow(Double(optimizer.beta1), Double(step)))
                let correction2 = 1 - Float(pow(Double(optimizer.beta2), Double(step)))
                Self.referenceAdam(m: &m, v: &v, p: &p, sum: sum, scale: scale, b1: optimizer.beta1,
                                   b2: optimizer.beta2, eps: optimizer.epsilon,
                                   stepSize: optimizer.learningRate / correction1,
                                   root2: Float(Double(correction2).squareRoot()))
                let differing = p.indices.filter { p[$0].bitPattern != parameters[$0].bitPattern }
                #expect(differing.isEmpty,
                        "\(path), step \(step): \(differing.count) of \(count) parameters differ from the scalar arithmetic, first at \(differing.first ?? -1)")
                #expect(optimizer.first.map(\.bitPattern) == m.map(\.bitPattern), "\(path), step \(step): first moment")
                #expect(optimizer.second.map(\.bitPattern) == v.map(\.bitPattern), "\(path), step \(step): second moment")
            }
        }
    }

    /// The sum of shards `range` in the shard tree's order, in scalar Swift.
    static func treeSum(_ gradients: [[Float]], _ range: Range<Int>) -> [Float] {
        let n = gradients.count
        var level = 0
        while 1 << level < range.count { level += 1 }
        if level == 0 { return gradients[range.lowerBound] }
        let half = 1 << (level - 1)
        let left = treeSum(gradients, range.lowerBound ..< range.lowerBound + half)
        guard range.lowerBound + half < min(range.upperBound, n) else { return left }
        let right = treeSum(gradients, range.lowerBound + half ..< range.upperBound)
        return zip(left, right).map { $0 + $1 }
    }

    @Test("the reducer's sum is the scalar additions' bits in the shard tree's order, on both paths, whatever the arrival order",
          arguments: [1, 2, 3, 4, 5, 7, 8, 9])
    func reducerAddsLikeScalarCode(shards: Int) {
        Self.onBothPaths { path in
            let count = 1003
            let gradients = (0..<shards).map { Self.values(count, seed: UInt32(100 + $0)) }
            let expected = Self.treeSum(gradients, 0 ..< shards)
            var generator = SystemRandomNumberGenerator()
            for order in [Array((0..<shards).reversed()), Array(0..<shards), (0..<shards).shuffled(using: &generator)] {
                var reducer = GradientReducer(shardCount: shards, parameterCount: count)
                for index in order {
                    #expect(!reducer.isComplete)
                    let accepted = reducer.offer(shard: index, .init(gradient: gradients[index], lossSum: Double(index), correct: 1, count: 2))
                    #expect(accepted)
                }
                #expect(reducer.isComplete)
                #expect(reducer.gradientSum.map(\.bitPattern) == expected.map(\.bitPattern),
                        "\(path), \(shards) shards offered in the order \(order): the sum differs from the tree's")
                #expect(reducer.sampleCount == 2 * shards && reducer.correct == shards)
                #expect(reducer.lossSum == Double((0..<shards).reduce(0, +)))
            }
        }
    }

    @Test("nodes added beforehand (by a worker) give the same bits as their shards one by one")
    func nodesMatchShards() {
        let count = 1003
        for shards in [2, 4, 6, 7, 8] {
            let gradients = (0..<shards).map { Self.values(count, seed: UInt32(300 + $0)) }
            let expected = Self.treeSum(gradients, 0 ..< shards).map(\.bitPattern)
            // Whole pairs from "workers", the rest as single shards.
            var reducer = GradientReducer(shardCount: shards, parameterCount: count)
            var nodes: [Range<Int>] = stride(from: 0, to: shards - 1, by: 2).map { $0 ..< $0 + 2 }
            if shards % 2 == 1 { nodes.append(shards - 1 ..< shards) }
            for node in nodes.reversed() {
                let accepted = reducer.offer(shards: node, .init(gradient: Self.treeSum(gradients, node), lossSum: 1, correct: 1,
                                                                 count: node.count))
                #expect(accepted, "node \(node) of \(shards)")
            }
            #expect(reducer.isComplete)
            #expect(reducer.gradientSum.map(\.bitPattern) == expected, "\(shards) shards sent as pairs")
            // The whole batch as one node (a worker that computed every shard).
            var whole = GradientReducer(shardCount: shards, parameterCount: count)
            let accepted = whole.offer(shards: 0 ..< shards, .init(gradient: Self.treeSum(gradients, 0 ..< shards), lossSum: 1, correct: 1, count: 1))
            #expect(accepted)
            #expect(whole.isComplete && whole.gradientSum.map(\.bitPattern) == expected)
        }
    }

    @Test("the reducer refuses ranges that are not nodes of the tree, and shards received twice")
    func reducerRefusesBadNodes() {
        let sum = GradientReducer.ShardSum(gradient: [1, 2, 3], lossSum: 1, correct: 1, count: 1)
        var reducer = GradientReducer(shardCount: 7, parameterCount: 3)
        for bad in [1 ..< 3, 0 ..< 3, 3 ..< 5, 6 ..< 8, 7 ..< 8, -1 ..< 0, 2 ..< 2, 4 ..< 8] {
            let accepted = reducer.offer(shards: bad, sum)
            #expect(!accepted, "\(bad) is not a node of 7 shards")
        }
        var outcomes = [reducer.offer(shards: 4 ..< 7, sum)]   // the right edge: shards 4-6
        outcomes.append(!reducer.offer(shard: 5, sum))         // already in 4 ..< 7
        outcomes.append(!reducer.offer(shards: 4 ..< 6, sum))
        outcomes.append(reducer.offer(shards: 0 ..< 2, sum))
        outcomes.append(reducer.offer(shard: 2, sum))
        #expect(outcomes == [true, true, true, true, true])
        #expect(!reducer.isComplete)
        let last = reducer.offer(shard: 3, sum)
        #expect(last && reducer.isComplete)
        #expect(reducer.gradientSum == [4, 8, 12] && reducer.sampleCount == 4)
        #expect(ShardTree.level(of: 4 ..< 7, shardCount: 7) == 2)
        #expect(ShardTree.level(of: 6 ..< 7, shardCount: 7) == 0)
        #expect(ShardTree.sibling(of: 2 ..< 4) == 0 ..< 2)
        #expect(ShardTree.sibling(of: 4 ..< 5) == 5 ..< 6)
        #expect(ShardTree.sibling(of: 4 ..< 8) == 0 ..< 4)
    }

    @Test("a reducer that reuses a dirty buffer sums to the same bits as a fresh one")
    func reusedBufferStartsAtZero() {
        let count = 1003, shards = 3
        let gradients = (0..<shards).map { Self.values(count, seed: UInt32(200 + $0)) }
        func sum(_ reducer: GradientReducer) -> [UInt32] {
            var reducer = reducer
            for index in [1, 2, 0] {
                reducer.offer(shard: index, .init(gradient: gradients[index], lossSum: 1, correct: 1, count: 1))
            }
            return reducer.gradientSum.map(\.bitPattern)
        }
        // The last step's sum, with NaNs and negative zeros in it: none of it may leak into the
        // next sum.
        let dirty = Self.values(count, seed: 7).enumerated().map { $0.offset % 13 == 0 ? Float.nan : $0.element }
        let fresh = sum(GradientReducer(shardCount: shards, parameterCount: count))
        #expect(sum(GradientReducer(shardCount: shards, parameterCount: count, reusing: dirty)) == fresh)
        // A buffer of another size is not used.
        #expect(sum(GradientReducer(shardCount: shards, parameterCount: count, reusing: [1, 2, 3])) == fresh)
    }

    @Test("a reducer sums into the storage of the buffer it is handed, not into a copy")
    func reusedBufferIsNotCopied() {
        // A copy would cost the coordinator a megabyte's allocation, page faults and memmove
        // every step, which reusing the buffer is for.
        var buffer = Self.values(1003, seed: 9)
        let address = buffer.withUnsafeMutableBufferPointer { UInt(bitPattern: $0.baseAddress) }
        var reducer = GradientReducer(shardCount: 1, parameterCount: 1003, reusing: consume buffer)
        reducer.offer(shard: 0, .init(gradient: Self.values(1003, seed: 10), lossSum: 1, correct: 1, count: 1))
        #expect(reducer.gradientSum.withUnsafeBufferPointer { UInt(bitPattern: $0.baseAddress) } == address)
    }

    @Test("the optimizer's state made before the first step changes no result")
    func stateMadeAheadIsTheSame() {
        for kind in [OptimizerKind.sgd, .momentum, .adam] {
            let count = 517
            var lazy = Optimizer(kind: kind, learningRate: 0.01), ahead = lazy
            ahead.makeState(parameterCount: count)
            var p1 = Self.values(count, seed: 3), p2 = p1
            for step in 0..<3 {
                let g = Self.values(count, seed: UInt32(40 + step))
                lazy.apply(gradientSum: g, scale: 0.5, to: &p1)
                ahead.apply(gradientSum: g, scale: 0.5, to: &p2)
            }
            #expect(p1.map(\.bitPattern) == p2.map(\.bitPattern), "\(kind): parameters differ")
            #expect(lazy == ahead, "\(kind): optimizer state differs after three steps")
        }
    }

    @Test("a step on two halves (the tree's last addition left to the optimizer) is the step on their sum, bit for bit, for every optimizer, on both paths",
          arguments: [0, 1, 7, 8, 9, 1001])
    func stepOnHalvesIsStepOnSum(count: Int) {
        Self.onBothPaths { path in
            for kind in [OptimizerKind.sgd, .momentum, .adam] {
                var onSum = Optimizer(kind: kind, learningRate: 0.01), onHalves = onSum
                var p1 = Self.values(count, seed: 5), p2 = p1
                for step in 1...3 {
                    let half = Self.values(count, seed: UInt32(60 + step)), otherHalf = Self.values(count, seed: UInt32(70 + step))
                    let sum = zip(half, otherHalf).map { $0 + $1 }
                    onSum.apply(gradientSum: sum, scale: 1 / 5000, to: &p1)
                    half.withUnsafeBufferPointer { a in
                        otherHalf.withUnsafeBufferPointer { b in onHalves.apply(gradientSum: a, plus: b, scale: 1 / 5000, to: &p2) }
                    }
                    #expect(p1.map(\.bitPattern) == p2.map(\.bitPattern), "\(path), \(kind), step \(step): parameters differ")
                    #expect(onSum == onHalves, "\(path), \(kind), step \(step): the optimizer's state differs")
                }
            }
        }
    }

    @Test("a reducer that defers its last addition hands out halves that add to the tree's sum, whatever the arrival order and the nodes",
          arguments: [1, 2, 3, 4, 5, 7, 8, 9])
    func deferredLastAddition(shards: Int) {
        let count = 1003
        let gradients = (0..<shards).map { Self.values(count, seed: UInt32(400 + $0)) }
        let expected = Self.treeSum(gradients, 0 ..< shards).map(\.bitPattern)
        var generator = SystemRandomNumberGenerator()
        // Single shards in three orders, then the workers' pairs (a node of two where there is one).
        var offerings: [[Range<Int>]] = [Array((0..<shards).reversed()), Array(0..<shards), (0..<shards).shuffled(using: &generator)]
            .map { $0.map { $0 ..< $0 + 1 } }
        offerings.append(stride(from: 0, to: shards, by: 2).map { $0 ..< min($0 + 2, shards) }.reversed())
        offerings.append([0 ..< shards])
        for nodes in offerings {
            var reducer = GradientReducer(shardCount: shards, parameterCount: count, deferringLastAddition: true)
            for node in nodes {
                let accepted = reducer.offer(shards: node, .init(gradient: Self.treeSum(gradients, node), lossSum: Double(node.count),
                                                                 correct: 1, count: node.count))
                #expect(accepted, "\(node) of \(shards)")
            }
            #expect(reducer.isComplete && reducer.sampleCount == shards && reducer.lossSum == Double(shards) && reducer.correct == nodes.count)
            let halves = reducer.withGradientSum { half, otherHalf in
                (half.count, otherHalf.map { b in zip(half, b).map { ($0 + $1).bitPattern } } ?? half.map(\.bitPattern))
            }
            #expect(halves.0 == count && halves.1 == expected, "\(shards) shards offered as \(nodes)")
            #expect(reducer.gradientSum.map(\.bitPattern) == expected, "gradientSum, \(shards) shards offered as \(nodes)")
            let multiNode = nodes.count > 1 && shards > 1
            #expect(reducer.withGradientSum { $1 != nil } == multiNode, "the last addition is deferred only when two nodes meet")
        }
    }
}
