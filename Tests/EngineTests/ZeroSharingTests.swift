import Engine
import Testing

// Zero tensors of 4096 entries or more share one read-only buffer per size, and adding a
// tensor to such a zero takes the other tensor's storage. Value semantics must survive that:
// a write to one zero never shows in another, and a zero that has been written to is no
// longer treated as zero.

/// A size that takes the shared path.
let sharedSize = 5000

@Test("writing to a shared zero vector or matrix changes no other zero")
func sharedZerosAreCopiedOnWrite() {
    var a = Vector<Double>.zeros(sharedSize)
    a[7] = 1
    #expect(Vector<Double>.zeros(sharedSize)[7] == 0)
    #expect(a[7] == 1)

    var m = Matrix<Float>.zeros(rows: 50, columns: 100)
    m[3, 4] = 2
    #expect(Matrix<Float>.zeros(rows: 50, columns: 100)[3, 4] == 0)
    // Same entry count, other shape: the same buffer, still untouched.
    #expect(Vector<Float>.zeros(sharedSize)[304] == 0)

    var b = Vector<Double>.zeros(sharedSize)
    b.withUnsafeMutableBufferPointer { $0[11] = 5 }
    b.scale(by: 2)
    #expect(b[11] == 10)
    #expect(Vector<Double>.zeros(sharedSize)[11] == 0)
}

@Test("adding to a shared zero gives the addend, and the two stay independent")
func addingToSharedZero() {
    var rng = TestRandom(seed: 131)
    let x: Vector<Double> = rng.vector(sharedSize)
    var z = Vector<Double>.zeros(sharedSize)
    z.add(x)
    #expect(z == x)
    z[0] += 1
    #expect(x[0] != z[0], "writing to the sum changed the addend")
    #expect(Vector<Double>.zeros(sharedSize)[0] == 0)

    var scaled = Vector<Double>.zeros(sharedSize)
    scaled.add(x, scaledBy: -2)
    #expect(scaled[123] == -2 * x[123])

    let m: Matrix<Float> = rng.matrix(80, 70)
    var zm = Matrix<Float>.zeros(rows: 80, columns: 70)
    zm.add(m)
    zm.add(m)
    #expect(zm[5, 6] == 2 * m[5, 6])
    #expect(Matrix<Float>.zeros(rows: 80, columns: 70)[5, 6] == 0)
}

@Test("a zero vector written to after the zero cache forgot it still adds correctly")
func zeroWrittenAfterCacheEviction() {
    var v = Vector<Double>.zeros(sharedSize)
    // Ask for more sizes than the cache keeps, so that it drops v's buffer: v is now the
    // only owner, and a write goes to the buffer in place.
    for extra in 1...70 { _ = Vector<Double>.zeros(sharedSize + extra) }
    v[0] = 1
    v.add(Vector(repeating: 2, count: sharedSize))
    #expect(v[0] == 3, "v = [1, 0, …] plus 2 gave \(v[0]): the add took the addend's storage as if v were still zero")
    #expect(v[1] == 2)
}
