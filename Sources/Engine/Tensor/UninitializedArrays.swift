/// Two arrays of `countA` and `countB` elements, every element written by `fill`: no zero
/// fill first (the sparse kernels write each entry exactly once).
@inline(__always)
func uninitializedArrays<A, B>(
    _ countA: Int, _ countB: Int,
    _ fill: (UnsafeMutableBufferPointer<A>, UnsafeMutableBufferPointer<B>) -> Void
) -> ([A], [B]) {
    var b: [B] = []
    let a = [A](unsafeUninitializedCapacity: countA) { pa, na in
        na = countA
        b = [B](unsafeUninitializedCapacity: countB) { pb, nb in
            nb = countB
            fill(pa, pb)
        }
    }
    return (a, b)
}

/// Three arrays, every element written by `fill` (see the two-array form).
@inline(__always)
func uninitializedArrays<A, B, C>(
    _ countA: Int, _ countB: Int, _ countC: Int,
    _ fill: (UnsafeMutableBufferPointer<A>, UnsafeMutableBufferPointer<B>, UnsafeMutableBufferPointer<C>) -> Void
) -> ([A], [B], [C]) {
    var c: [C] = []
    let (a, b) = uninitializedArrays(countA, countB) { (pa: UnsafeMutableBufferPointer<A>, pb: UnsafeMutableBufferPointer<B>) in
        c = [C](unsafeUninitializedCapacity: countC) { pc, nc in
            nc = countC
            fill(pa, pb, pc)
        }
    }
    return (a, b, c)
}
