import Engine
import Testing
import Training

/// The worker's side of the shard tree: the sums it adds before answering are the nodes the
/// coordinator's `GradientReducer` would have made, bit for bit.
@Suite("Shard combiner")
struct ShardCombinerTests {
    static let sizes = [13, 7, 3]

    /// A shard's result with gradient values of every kind (`OptimizerKernelTests.values`).
    static func result(_ seed: UInt32) -> ShardResult<Float> {
        let count = zip(sizes, sizes.dropFirst()).reduce(0) { $0 + $1.0 * $1.1 + $1.1 }
        let values = OptimizerKernelTests.values(count, seed: seed)
        let gradient = values.withUnsafeBufferPointer { Network<Float>(sizes: sizes, flattened: $0) }
        return ShardResult(gradient: gradient, lossSum: Double(seed) * 0.1, correct: Int(seed % 3), count: 10)
    }

    @Test("a worker holding shards 0-3 answers once, with the tree's sum of the four, whatever order they finish in")
    func wholeTree() {
        let results = (0..<4).map { Self.result(UInt32(40 + $0)) }
        let expected = OptimizerKernelTests.treeSum(results.map { $0.gradient.flattened() }, 0 ..< 4).map(\.bitPattern)
        var generator = SystemRandomNumberGenerator()
        for order in [[0, 1, 2, 3], [3, 2, 1, 0], [2, 0, 3, 1], (0..<4).shuffled(using: &generator)] {
            let combiner = ShardCombiner()
            for shard in 0..<4 { combiner.hold(step: 5, shard: UInt32(shard)) }
            var answers: [ShardCombiner.Node] = []
            for shard in order {
                if let node = combiner.complete(step: 5, shard: UInt32(shard), results[shard]) { answers.append(node) }
            }
            #expect(answers.count == 1, "order \(order)")
            let node = answers[0]
            #expect(node.first == 0 && node.count == 4)
            #expect(node.result.gradient.flattened().map(\.bitPattern) == expected, "order \(order)")
            // As the worker writes it into the answer: the last addition done while flattening.
            #expect(Self.flattened(node).map(\.bitPattern) == expected, "order \(order)")
            #expect(node.halves.upper != nil, "the last addition is left to flatten(into:)")
            #expect(node.result.lossSum == (results[0].lossSum + results[1].lossSum) + (results[2].lossSum + results[3].lossSum))
            #expect(node.lossSum == node.result.lossSum && node.sampleCount == 40 && node.parameterCount == expected.count)
            #expect(node.result.count == 40 && node.result.correct == results.map(\.correct).reduce(0, +))
            #expect(node.correct == node.result.correct)
        }
    }

    @Test("a result whose sibling is not all held is answered at once; steps are apart")
    func partialHolds() {
        let results = (0..<4).map { Self.result(UInt32(60 + $0)) }
        let combiner = ShardCombiner()
        for shard in [0, 1, 2] as [UInt32] { combiner.hold(step: 1, shard: shard) }
        combiner.hold(step: 2, shard: 3)   // shard 3 of the next step: not shard 2's sibling
        let two = combiner.complete(step: 1, shard: 2, results[2])
        #expect(two?.first == 2 && two?.count == 1)
        #expect(combiner.complete(step: 1, shard: 1, results[1]) == nil)   // waits for shard 0
        let pair = combiner.complete(step: 1, shard: 0, results[0])
        #expect(pair?.first == 0 && pair?.count == 2)
        let expected = OptimizerKernelTests.treeSum(results.map { $0.gradient.flattened() }, 0 ..< 2).map(\.bitPattern)
        #expect(pair?.result.gradient.flattened().map(\.bitPattern) == expected)
        #expect(pair.map(Self.flattened)?.map(\.bitPattern) == expected)
        #expect(two.map(Self.flattened)?.map(\.bitPattern) == results[2].gradient.flattened().map(\.bitPattern))
        // A shard never held (its sibling unknown to this worker) goes alone too.
        let lone = combiner.complete(step: 2, shard: 3, results[3])
        #expect(lone?.first == 3 && lone?.count == 1)
    }
}

extension ShardCombinerTests {
    /// The node's gradient as the worker writes it into an answer.
    static func flattened(_ node: ShardCombiner.Node) -> [Float] {
        [Float](unsafeUninitializedCapacity: node.parameterCount) { buffer, initialized in
            node.flatten(into: buffer)
            initialized = buffer.count
        }
    }

    @Test("the sums below the last are made in the buffers of their left halves, and the last is left to flatten(into:): no copy")
    func addsInPlace() {
        // A copy would cost the worker a megabyte's allocation, page faults and copy per pair.
        let combiner = ShardCombiner()
        for shard in 0..<4 as Range<UInt32> { combiner.hold(step: 1, shard: shard) }
        var results = (0..<4).map { Self.result(UInt32(80 + $0)) }
        func address(_ result: ShardResult<Float>) -> UInt {
            result.gradient.layers[0].weights.withUnsafeBufferPointer { UInt(bitPattern: $0.baseAddress) }
        }
        let zero = address(results[0]), two = address(results[2])
        var answers: [ShardCombiner.Node] = []
        for shard in 0..<4 as Range<UInt32> {
            // Handed over, not shared with this test (a shared buffer would be copied first).
            if let node = combiner.complete(step: 1, shard: shard, results.removeFirst()) { answers.append(node) }
        }
        #expect(answers.count == 1 && answers.first?.count == 4)
        let halves = answers.first?.halves
        #expect(halves.map { address($0.lower) } == zero, "shards 0 + 1 were not added in shard 0's buffers")
        #expect(halves?.upper.map(address) == two, "shards 2 + 3 were not added in shard 2's buffers")
    }
}
