import Engine

/// A small, fast, seedable random number generator (SplitMix64) whose sequence is fixed by
/// its seed on every platform and Swift version: the runs of this project are reproducible.
public struct SeededGenerator: RandomNumberGenerator, Sendable, Equatable {
    /// The whole state; save it to resume the sequence exactly.
    public var state: UInt64

    public init(seed: UInt64) { state = seed }

    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// A uniform value in `range`, from the top 24 (Float) or 53 (Double) bits.
    public mutating func uniform<S: TensorScalar>(_ range: ClosedRange<S>) -> S {
        let bits = S.significandBitCount + 1
        let unit = S(next() >> UInt64(64 - bits)) / S(UInt64(1) << UInt64(bits))
        return range.lowerBound + unit * (range.upperBound - range.lowerBound)
    }

    /// A permutation of `0..<count` (Fisher-Yates, fixed algorithm so that the order is the
    /// same everywhere for a given seed).
    public mutating func permutation(_ count: Int) -> [Int] {
        var p = Array(0..<count)
        if count < 2 { return p }
        for i in stride(from: count - 1, to: 0, by: -1) {
            let j = Int(next() % UInt64(i + 1))
            p.swapAt(i, j)
        }
        return p
    }
}
