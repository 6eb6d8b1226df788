import Engine
import Testing
import Training

// Finite-difference checks, in Double, of the whole network's losses: `netErr` (one sample,
// cross-entropy of the softmax output) and `batchLoss` (a batch, fused softmax cross-entropy),
// with respect to every parameter (and, through `logits`, the input), on the tutorial's shape
// in miniature and on odd shapes. A failure prints the parameter and both numbers.

// MARK: - Checking

/// Where parameter `index` of `net.flattened()` lives, for messages.
func parameterName(_ index: Int, in net: Network<Double>) -> String {
    var offset = 0
    for (l, layer) in net.layers.enumerated() {
        if index < offset + layer.weights.count {
            let i = index - offset
            return "layers[\(l)].weights[\(i / layer.outputs), \(i % layer.outputs)]"
        }
        offset += layer.weights.count
        if index < offset + layer.biases.count { return "layers[\(l)].biases[\(index - offset)]" }
        offset += layer.biases.count
    }
    return "input[\(index - offset)]"
}

/// `count` distinct indices of `0..<total` (all of them when `count >= total`).
func sampledIndices(_ count: Int, of total: Int, using rng: inout SeededGenerator) -> [Int] {
    guard count < total else { return Array(0..<total) }
    return Array(rng.permutation(total).prefix(count)).sorted()
}

/// Compares `analytic` with central differences of `objective` over `point`, entry by entry,
/// relative to the larger of the two numbers (or a thousandth of the largest entry, for entries
/// near zero); returns the largest relative error.
@discardableResult
func expectCoordinatesMatch(
    _ name: String, point: [Double], analytic: [Double], objective: ([Double]) -> Double,
    describe: (Int) -> String, rng: inout SeededGenerator, maxCoordinates: Int = 120,
    tolerance: Double = 1e-6, sourceLocation: SourceLocation = #_sourceLocation
) -> Double {
    #expect(point.count == analytic.count, "\(name): \(analytic.count) gradient entries for \(point.count) inputs",
            sourceLocation: sourceLocation)
    guard point.count == analytic.count, !point.isEmpty else { return .infinity }
    let indices = sampledIndices(maxCoordinates, of: point.count, using: &rng)
    let numeric = indices.map { i -> Double in
        let h = 1e-5 * max(1, abs(point[i]))
        var plus = point, minus = point
        plus[i] += h
        minus[i] -= h
        return (objective(plus) - objective(minus)) / (plus[i] - minus[i])
    }
    let largest = zip(indices, numeric).map { max(abs(analytic[$0]), abs($1)) }.max() ?? 0
    let floor = max(1e-3 * largest, 1e-300)
    var worst = (error: 0.0, index: indices[0])
    var failures = 0
    for (k, i) in indices.enumerated() {
        let a = analytic[i], n = numeric[k]
        let error = abs(a - n) / max(abs(a), abs(n), floor)
        if error > worst.error { worst = (error, i) }
        if !(error <= tolerance) {
            failures += 1
            if failures <= 6 {
                Issue.record("\(name): \(describe(i)) (coordinate \(i)): analytic \(a), numeric \(n), relative error \(error)",
                             sourceLocation: sourceLocation)
            }
        }
    }
    #expect(failures == 0, "\(name): \(failures) of \(indices.count) coordinates off",
            sourceLocation: sourceLocation)
    print("gradient check \(name): \(indices.count)/\(point.count) coordinates, max relative error \(worst.error) at \(describe(worst.index))")
    return worst.error
}

/// Checks the gradient of `loss` with respect to every parameter of `net`.
@discardableResult
func expectNetworkGradientMatches(
    _ name: String, _ net: Network<Double>, rng: inout SeededGenerator, maxCoordinates: Int = 120,
    sourceLocation: SourceLocation = #_sourceLocation,
    loss: (BVar<Network<Double>>) -> BVar<Double>
) -> Double {
    let (value, gradient) = backprop(loss, net)
    #expect(value == evalBP(loss, net), "\(name): backprop's value differs from evalBP's",
            sourceLocation: sourceLocation)
    #expect(gradient == gradBP(loss, net), "\(name): gradBP differs from backprop", sourceLocation: sourceLocation)
    #expect(gradient.sizes == net.sizes, sourceLocation: sourceLocation)
    let sizes = net.sizes
    return expectCoordinatesMatch(
        name, point: net.flattened(), analytic: gradient.flattened(),
        objective: { flat in
            flat.withUnsafeBufferPointer { evalBP(loss, Network(sizes: sizes, flattened: $0)) }
        },
        describe: { parameterName($0, in: net) }, rng: &rng, maxCoordinates: maxCoordinates,
        sourceLocation: sourceLocation)
}

func randomNetwork(_ sizes: [Int], seed: UInt64) -> Network<Double> {
    var rng = SeededGenerator(seed: seed)
    return Network(sizes: sizes, uniformIn: -0.8...0.8, using: &rng)
}

func randomInput(_ count: Int, using rng: inout SeededGenerator) -> Vector<Double> {
    Vector(count: count) { out in for i in 0..<out.count { out[i] = rng.uniform(0.0...1.0) } }
}

func randomBatch(_ rows: Int, _ columns: Int, using rng: inout SeededGenerator) -> Matrix<Double> {
    Matrix(rows: rows, columns: columns) { out in for i in 0..<out.count { out[i] = rng.uniform(0.0...1.0) } }
}

func oneHot(_ label: Int, _ count: Int) -> Vector<Double> {
    var v = Vector<Double>.zeros(count)
    v[label] = 1
    return v
}

// MARK: - netErr

@Test("netErr gradient on a 7-5-4-3 network, every parameter, every label", arguments: 0..<3)
func netErrGradient(label: Int) {
    let net = randomNetwork([7, 5, 4, 3], seed: 101)
    var rng = SeededGenerator(seed: 102 + UInt64(label))
    let x = randomInput(7, using: &rng)
    let checked = expectNetworkGradientMatches("netErr 7-5-4-3 label \(label)", net, rng: &rng) {
        netErr(x, oneHot(label, 3), $0)
    }
    #expect(checked <= 1e-6)
}

@Test("netErr gradient against a soft target distribution")
func netErrSoftTargetGradient() {
    let net = randomNetwork([7, 5, 4, 3], seed: 103)
    var rng = SeededGenerator(seed: 104)
    let x = randomInput(7, using: &rng)
    let target = Vector<Double>([0.2, 0.5, 0.3])
    expectNetworkGradientMatches("netErr soft target", net, rng: &rng) { netErr(x, target, $0) }
}

/// Odd network shapes: a single layer, width-one layers, one class, a deeper stack.
let oddSizes: [[Int]] = [[5, 2], [1, 1, 2], [2, 9, 1, 4], [3, 1], [4, 3, 3, 3, 2], [1, 6, 1, 5]]

@Test("netErr gradient on odd shapes", arguments: oddSizes)
func netErrOddShapes(sizes: [Int]) {
    let net = randomNetwork(sizes, seed: 105)
    var rng = SeededGenerator(seed: 106)
    let x = randomInput(sizes[0], using: &rng)
    let classes = sizes.last!
    let label = Int(rng.next() % UInt64(classes))
    expectNetworkGradientMatches("netErr \(sizes) label \(label)", net, rng: &rng) {
        netErr(x, oneHot(label, classes), $0)
    }
}

@Test("gradient with respect to the network and its input together, through logits")
func logitsGradientWithInput() {
    let net = randomNetwork([7, 5, 4, 3], seed: 107)
    var rng = SeededGenerator(seed: 108)
    let x = randomInput(7, using: &rng)
    let loss = { (n: BVar<Network<Double>>, x: BVar<Vector<Double>>) in
        softMaxCrossEntropy(logits: logits(n, x), label: 1)
    }
    let (gn, gx) = gradBP2(loss, net, x)
    let sizes = net.sizes, parameters = net.parameterCount
    expectCoordinatesMatch(
        "logits(net, x) wrt net and x", point: net.flattened() + x.scalars,
        analytic: gn.flattened() + gx.scalars,
        objective: { flat in
            let n = flat.withUnsafeBufferPointer {
                Network(sizes: sizes, flattened: UnsafeBufferPointer(rebasing: $0[..<parameters]))
            }
            return evalBP2(loss, n, Vector(Array(flat[parameters...])))
        },
        describe: { parameterName($0, in: net) }, rng: &rng)
    // The fused loss on logits is netErr with a one-hot target.
    let viaNetErr = gradBP({ netErr(x, oneHot(1, 3), $0) }, net)
    let a = gn.flattened(), b = viaNetErr.flattened()
    for i in a.indices {
        #expect(abs(a[i] - b[i]) <= 1e-12 * max(1, abs(b[i])), "\(parameterName(i, in: net)): \(a[i]) vs netErr's \(b[i])")
    }
}

// MARK: - batchLoss

@Test("batchLoss gradient on a 7-5-4-3 network, every parameter")
func batchLossGradient() {
    let net = randomNetwork([7, 5, 4, 3], seed: 109)
    var rng = SeededGenerator(seed: 110)
    let x = randomBatch(4, 7, using: &rng)
    let labels = [2, 0, 1, 2]
    expectNetworkGradientMatches("batchLoss 7-5-4-3, batch of 4", net, rng: &rng) {
        batchLoss($0, x, labels: labels)
    }
}

@Test("batchLoss gradient on odd shapes and batch sizes", arguments: oddSizes, [1, 3])
func batchLossOddShapes(sizes: [Int], batch: Int) {
    let net = randomNetwork(sizes, seed: 111)
    var rng = SeededGenerator(seed: 112 + UInt64(batch))
    let x = randomBatch(batch, sizes[0], using: &rng)
    let labels = (0..<batch).map { _ in Int(rng.next() % UInt64(sizes.last!)) }
    expectNetworkGradientMatches("batchLoss \(sizes), labels \(labels)", net, rng: &rng) {
        batchLoss($0, x, labels: labels)
    }
}

@Test("batchLoss is the sum of the samples' netErr, in value and gradient")
func batchLossIsSumOfNetErr() {
    let net = randomNetwork([7, 5, 4, 3], seed: 113)
    var rng = SeededGenerator(seed: 114)
    let x = randomBatch(5, 7, using: &rng)
    let labels = [0, 2, 2, 1, 0]
    let batch = backprop({ batchLoss($0, x, labels: labels) }, net)
    var value = 0.0
    var gradient = net.zero()
    for (i, label) in labels.enumerated() {
        let sample = backprop({ netErr(x.row(i), oneHot(label, 3), $0) }, net)
        value += sample.value
        gradient.add(sample.gradient)
    }
    #expect(abs(batch.value - value) <= 1e-12 * abs(value), "batchLoss \(batch.value), sum of netErr \(value)")
    let a = batch.gradient.flattened(), b = gradient.flattened()
    for i in a.indices {
        #expect(abs(a[i] - b[i]) <= 1e-12 * max(1, abs(b[i])), "\(parameterName(i, in: net)): batch \(a[i]), sum \(b[i])")
    }
}

@Test("the Float network gradient agrees with the Double one")
func floatGradientAgreesWithDouble() {
    let net = randomNetwork([7, 5, 4, 3], seed: 115)
    var rng = SeededGenerator(seed: 116)
    let x = randomBatch(9, 7, using: &rng)   // nine rows: the SIMD kernels' body and tail
    let labels = [0, 1, 2, 0, 1, 2, 2, 1, 0]
    let flat = net.flattened().map { Float($0) }
    let floatNet = flat.withUnsafeBufferPointer { Network<Float>(sizes: net.sizes, flattened: $0) }
    let floatX = Matrix<Float>(rows: 9, columns: 7, scalars: x.scalars.map { Float($0) })
    let single = backprop({ batchLoss($0, floatX, labels: labels) }, floatNet)
    let double = backprop({ batchLoss($0, x, labels: labels) }, net)
    #expect(abs(Double(single.value) - double.value) <= 1e-5 * abs(double.value),
            "loss: Float \(single.value), Double \(double.value)")
    let a = single.gradient.flattened(), b = double.gradient.flattened()
    var diff = 0.0, norm = 0.0
    for i in a.indices {
        diff += (Double(a[i]) - b[i]) * (Double(a[i]) - b[i])
        norm += b[i] * b[i]
    }
    let error = (diff / norm).squareRoot()
    print("Float vs Double batchLoss gradient: norm relative error \(error)")
    #expect(error <= 1e-5, "Float gradient differs from Double by \(error) (norm-relative)")
}

@Test("batchLoss gradient with a sparse batch (the first layer through sparseAffine)")
func sparseBatchLossGradient() {
    let net = randomNetwork([7, 5, 4, 3], seed: 161)
    var rng = SeededGenerator(seed: 162)
    let dense: Matrix<Double> = Matrix(rows: 4, columns: 7) { out in
        for i in 0..<out.count { out[i] = i % 3 == 0 ? rng.uniform(0.1...1) : 0 }
    }
    let x = BatchInput.sparse(SparseMatrix(dense))
    let labels = [2, 0, 1, 2]
    expectNetworkGradientMatches("batchLoss 7-5-4-3, sparse batch of 4", net, rng: &rng) {
        batchLoss($0, x, labels: labels)
    }
    let viaDense = backprop({ batchLoss($0, dense, labels: labels) }, net)
    let viaSparse = backprop({ batchLoss($0, x, labels: labels) }, net)
    #expect(abs(viaDense.value - viaSparse.value) <= 1e-12 * abs(viaDense.value))
}
