import Engine

/// The random inputs of the Engine tests: a SplitMix64 generator (the same algorithm as
/// Training's `SeededGenerator`, which this target cannot import), so that every test sees the
/// same numbers on every run and a failure can be replayed.
struct TestRandom: RandomNumberGenerator {
    var state: UInt64

    init(seed: UInt64) { state = seed }

    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// A uniform value in `range` (53 random bits, enough for `Double` and `Float`).
    mutating func uniform<S: TensorScalar>(_ range: ClosedRange<S>) -> S {
        let unit = Double(next() >> 11) / Double(UInt64(1) << 53)
        return range.lowerBound + S(unit) * (range.upperBound - range.lowerBound)
    }

    /// A uniform value in `range` whose sign is flipped half of the time (magnitudes kept away
    /// from zero, for probes and well-conditioned divisors).
    mutating func signed<S: TensorScalar>(_ range: ClosedRange<S>) -> S {
        let magnitude: S = uniform(range)
        return next() & 1 == 0 ? magnitude : -magnitude
    }

    mutating func vector<S: TensorScalar>(_ count: Int, in range: ClosedRange<S> = -1...1) -> Vector<S> {
        Vector(count: count) { out in
            for i in 0..<out.count { out[i] = uniform(range) }
        }
    }

    mutating func matrix<S: TensorScalar>(_ rows: Int, _ columns: Int,
                                          in range: ClosedRange<S> = -1...1) -> Matrix<S> {
        Matrix(rows: rows, columns: columns) { out in
            for i in 0..<out.count { out[i] = uniform(range) }
        }
    }

    /// `count` distinct indices of `0..<total`, in increasing order (all of them when
    /// `count >= total`); the first and last index are always included.
    mutating func sampleIndices(_ count: Int, of total: Int) -> [Int] {
        guard count < total else { return Array(0..<total) }
        var chosen: Set<Int> = [0, total - 1]
        while chosen.count < count { chosen.insert(Int(next() % UInt64(total))) }
        return chosen.sorted()
    }
}
