@testable import Engine
import Foundation
import Testing

// The tensor kernels against naive loops computed in Double: GEMM in every transpose
// combination and odd shapes, GEMV, outer products, dot, axpy, and the Float SIMD
// exp/logistic kernels against Foundation. Then the BLAS runtime and the CPU feature parser.

// MARK: - GEMM

struct GemmShape: Sendable, CustomTestStringConvertible {
    var m: Int, k: Int, n: Int
    var testDescription: String { "m\(m) k\(k) n\(n)" }
    static let all = [(1, 1, 1), (1, 1, 9), (1, 6, 1), (9, 1, 1), (7, 3, 5), (33, 17, 65),
                      (4, 0, 3), (0, 3, 4), (3, 4, 0)].map { GemmShape(m: $0.0, k: $0.1, n: $0.2) }
}

/// Compares `Matrix.matmul` with a triple loop in Double; an entry may be off by the rounding of
/// a `k`-term dot product in `S`.
func expectMatmulMatchesNaive<S: TensorScalar>(_: S.Type, _ shape: GemmShape, _ t: TransposeCase,
                                               seed: UInt64) {
    var rng = TestRandom(seed: seed)
    let (m, k, n) = (shape.m, shape.k, shape.n)
    let a: Matrix<S> = t.transposeA ? rng.matrix(k, m) : rng.matrix(m, k)
    let b: Matrix<S> = t.transposeB ? rng.matrix(n, k) : rng.matrix(k, n)
    let c = Matrix.matmul(a, b, transposeA: t.transposeA, transposeB: t.transposeB)
    let name = "\(S.self) matmul \(t.testDescription) \(shape.testDescription)"
    guard c.rows == m && c.columns == n else {
        Issue.record("\(name): result is \(c.shapeDescription), expected \(m)x\(n)")
        return
    }
    let roundoff = Double(S.ulpOfOne)
    var failures = 0
    for i in 0..<m {
        for j in 0..<n {
            var exact = 0.0, magnitude = 0.0
            for p in 0..<k {
                let x = Double(t.transposeA ? a[p, i] : a[i, p])
                let y = Double(t.transposeB ? b[j, p] : b[p, j])
                exact += x * y
                magnitude += abs(x * y)
            }
            let error = abs(Double(c[i, j]) - exact)
            if error > 2 * Double(k + 1) * roundoff * magnitude {
                failures += 1
                if failures <= 5 {
                    Issue.record("\(name): entry (\(i), \(j)): got \(c[i, j]), naive \(exact), error \(error)")
                }
            }
        }
    }
    #expect(failures == 0, "\(name): \(failures) entries off")
}

@Test("matmul matches a triple loop", arguments: GemmShape.all, TransposeCase.all)
func matmulMatchesNaive(_ shape: GemmShape, _ t: TransposeCase) {
    expectMatmulMatchesNaive(Float.self, shape, t, seed: 81)
    expectMatmulMatchesNaive(Double.self, shape, t, seed: 82)
}

// MARK: - GEMV, outer products, dot, axpy

/// Frees a few buffers of `count` entries filled with NaN, so that a kernel that leaves its
/// output unwritten returns NaNs rather than whatever fresh memory holds.
func leaveNaNsInFreedMemory<S: TensorScalar>(_: S.Type, count: Int) {
    var buffers = [Vector<S>]()
    for _ in 0..<16 { buffers.append(Vector(repeating: .nan, count: count)) }
    buffers.removeAll()
}

func expectMatvecMatchesNaive<S: TensorScalar>(_: S.Type, rows: Int, columns: Int, seed: UInt64) {
    var rng = TestRandom(seed: seed)
    let a: Matrix<S> = rng.matrix(rows, columns)
    let x: Vector<S> = rng.vector(columns)
    let z: Vector<S> = rng.vector(rows)
    leaveNaNsInFreedMemory(S.self, count: rows)
    let y = a.matvec(x)
    leaveNaNsInFreedMemory(S.self, count: columns)
    let w = a.transposedMatvec(z)
    let roundoff = Double(S.ulpOfOne)
    #expect(y.count == rows && w.count == columns)
    guard y.count == rows && w.count == columns else { return }
    for i in 0..<rows {
        var exact = 0.0, magnitude = 0.0
        for j in 0..<columns {
            exact += Double(a[i, j]) * Double(x[j])
            magnitude += abs(Double(a[i, j]) * Double(x[j]))
        }
        #expect(abs(Double(y[i]) - exact) <= 2 * Double(columns + 1) * roundoff * magnitude,
                "\(S.self) matvec \(rows)x\(columns): entry \(i): got \(y[i]), naive \(exact)")
    }
    for j in 0..<columns {
        var exact = 0.0, magnitude = 0.0
        for i in 0..<rows {
            exact += Double(a[i, j]) * Double(z[i])
            magnitude += abs(Double(a[i, j]) * Double(z[i]))
        }
        #expect(abs(Double(w[j]) - exact) <= 2 * Double(rows + 1) * roundoff * magnitude,
                "\(S.self) transposedMatvec \(rows)x\(columns): entry \(j): got \(w[j]), naive \(exact)")
    }
}

@Test("matvec and transposedMatvec match loops",
      arguments: [(1, 1), (1, 7), (7, 1), (5, 3), (33, 17), (4, 9)])
func matvecMatchesNaive(rows: Int, columns: Int) {
    expectMatvecMatchesNaive(Float.self, rows: rows, columns: columns, seed: 83)
    expectMatvecMatchesNaive(Double.self, rows: rows, columns: columns, seed: 84)
}

/// A product over an empty inner dimension is all zeros. Whether unwritten output shows
/// depends on what the allocator hands out, so the product is tried many times.
func expectEmptyMatvecIsZero<S: TensorScalar>(_: S.Type, rows: Int, columns: Int) {
    let a = Matrix<S>(rows: rows, columns: columns, repeating: 1)
    for attempt in 0..<50 {
        leaveNaNsInFreedMemory(S.self, count: max(rows, columns))
        let y = rows > 0 ? a.matvec(Vector(repeating: 1, count: columns))
                         : a.transposedMatvec(Vector(repeating: 1, count: rows))
        let expected = rows > 0 ? rows : columns
        let name = rows > 0 ? "matvec" : "transposedMatvec"
        #expect(y.count == expected)
        if let bad = y.scalars.firstIndex(where: { $0 != 0 }) {
            Issue.record("\(S.self) \(name) of a \(rows)x\(columns) matrix, attempt \(attempt): entry \(bad) is \(y[bad]), not 0 (\(y))")
            return
        }
    }
}

@Test("matvec over an empty inner dimension gives zeros", arguments: [(4, 0), (0, 4), (9, 0), (0, 9)])
func emptyMatvecIsZero(rows: Int, columns: Int) {
    expectEmptyMatvecIsZero(Float.self, rows: rows, columns: columns)
    expectEmptyMatvecIsZero(Double.self, rows: rows, columns: columns)
}

func expectOuterProductsMatchNaive<S: TensorScalar>(_: S.Type, rows: Int, columns: Int, seed: UInt64) {
    var rng = TestRandom(seed: seed)
    let x: Vector<S> = rng.vector(rows), y: Vector<S> = rng.vector(columns)
    let outer = Matrix.outer(x, y)
    #expect(outer.rows == rows && outer.columns == columns)
    let start: Matrix<S> = rng.matrix(rows, columns)
    let startEntries = start.scalars
    var updated = start
    let scale: S = -0.75
    updated.addOuter(x, y, scaledBy: scale)
    let roundoff = Double(S.ulpOfOne)
    for i in 0..<rows {
        for j in 0..<columns {
            let product = Double(x[i]) * Double(y[j])
            #expect(abs(Double(outer[i, j]) - product) <= roundoff * abs(product),
                    "\(S.self) outer \(rows)x\(columns) (\(i), \(j)): \(outer[i, j]) vs \(product)")
            let expected = Double(start[i, j]) + Double(scale) * product
            let bound = 2 * roundoff * (abs(Double(start[i, j])) + abs(product))
            #expect(abs(Double(updated[i, j]) - expected) <= bound,
                    "\(S.self) addOuter \(rows)x\(columns) (\(i), \(j)): \(updated[i, j]) vs \(expected)")
        }
    }
    // addOuter mutates its own copy only.
    #expect(start.scalars == startEntries, "\(S.self) addOuter changed a copy of the matrix")
}

@Test("outer and addOuter match loops",
      arguments: [(1, 1), (1, 6), (6, 1), (7, 5), (3, 19), (2, 16), (0, 3), (3, 0)])
func outerProductsMatchNaive(rows: Int, columns: Int) {
    expectOuterProductsMatchNaive(Float.self, rows: rows, columns: columns, seed: 85)
    expectOuterProductsMatchNaive(Double.self, rows: rows, columns: columns, seed: 86)
}

@Test("addOuter leaves copies of the matrix unchanged")
func addOuterCopyOnWrite() {
    let original = Matrix<Double>(rows: 2, columns: 3, repeating: 1)
    var copy = original
    copy.addOuter(Vector([1, 2]), Vector([1, 0, -1]))
    #expect(original == Matrix(rows: 2, columns: 3, repeating: 1))
    #expect(copy == Matrix(rows: 2, columns: 3, scalars: [2, 1, 0, 3, 1, -1]))
}

func expectDotAndAxpyMatchNaive<S: TensorScalar>(_: S.Type, count: Int, seed: UInt64) {
    var rng = TestRandom(seed: seed)
    let x: Vector<S> = rng.vector(count), y: Vector<S> = rng.vector(count)
    let xEntries = x.scalars
    let roundoff = Double(S.ulpOfOne)
    var exact = 0.0, magnitude = 0.0
    for i in 0..<count {
        exact += Double(x[i]) * Double(y[i])
        magnitude += abs(Double(x[i]) * Double(y[i]))
    }
    let dot = x.dot(y)
    #expect(abs(Double(dot) - exact) <= 2 * Double(count + 1) * roundoff * magnitude,
            "\(S.self) dot of \(count): \(dot) vs \(exact)")

    let scale: S = 1.5
    var sum = x
    sum.add(y, scaledBy: scale)
    var matrixSum = Matrix(rows: 1, columns: count, scalars: x.scalars)
    matrixSum.add(Matrix(rows: 1, columns: count, scalars: y.scalars), scaledBy: scale)
    for i in 0..<count {
        let expected = Double(x[i]) + Double(scale) * Double(y[i])
        let bound = 2 * roundoff * (abs(Double(x[i])) + abs(Double(scale) * Double(y[i])))
        #expect(abs(Double(sum[i]) - expected) <= bound,
                "\(S.self) add(scaledBy:) entry \(i) of \(count): \(sum[i]) vs \(expected)")
        #expect(matrixSum[0, i] == sum[i], "\(S.self) Matrix.add(scaledBy:) entry \(i)")
    }
    // add mutates its own copy only.
    #expect(x.scalars == xEntries, "\(S.self) add(scaledBy:) changed a copy of the vector")
}

@Test("dot and add(scaledBy:) match loops", arguments: [0, 1, 7, 33, 1000])
func dotAndAxpyMatchNaive(count: Int) {
    expectDotAndAxpyMatchNaive(Float.self, count: count, seed: 87)
    expectDotAndAxpyMatchNaive(Double.self, count: count, seed: 88)
}

// MARK: - Element-wise kernels

/// Values for the exp kernels: a sweep of -100...100, the edges of Float's range and a few
/// special points, in an order that puts each special point both inside the eight-wide SIMD
/// body and in the scalar tail.
func kernelTestValues() -> [Float] {
    let special: [Float] = [-100, -87.3, -87, -1e-3, -0.0, 0, 1e-7, 1, 88, 88.37]
    let sweep = stride(from: Float(-100), through: 100, by: 0.37).map { $0 }
    var rng = TestRandom(seed: 89)
    let random = (0..<203).map { _ in rng.uniform(Float(-90)...90) }
    return special + sweep + random + special.prefix(5)   // odd length, specials in the tail
}

@Test("the Float exp kernel is accurate over the normal range, SIMD body and tail alike",
      arguments: [kernelTestValues().count, 13, 1])
func floatExpKernelAccuracy(count: Int) {
    let values = Array(kernelTestValues().prefix(count))
    #expect(values.count % 8 != 0)
    let y = Vector(values).exp()
    var worst = 0.0
    for (i, x) in values.enumerated() {
        let exact = Foundation.exp(Double(x))
        let got = Double(y[i])
        // The top of the range (results above e^88.37) is floatExpKernelOverflow's.
        if x > 88.37 { continue }
        if exact >= Double(Float.leastNormalMagnitude) {
            let error = abs(got - exact) / exact
            worst = max(worst, error)
            #expect(error <= 4 * Double(Float.ulpOfOne),
                    "exp(\(x)) at \(i) of \(values.count): kernel \(y[i]), Foundation \(exact), relative error \(error)")
        } else {
            // Underflow: the kernel may flush to about the least normal value.
            #expect(got >= 0 && got <= 1.05 * Double(Float.leastNormalMagnitude),
                    "exp(\(x)) at \(i): kernel \(y[i]) for a true value of \(exact)")
        }
    }
    print("Float exp kernel: \(values.count) values, max relative error \(worst) (\(worst / Double(Float.ulpOfOne)) ulp)")
}

@Test("the Float exp kernel covers the top of Float's range and overflows to infinity like Foundation")
func floatExpKernelOverflow() {
    // e^88.5 ≈ 2.9e38 and e^88.7 ≈ 3.3e38 are finite Floats; e^89 and e^100 overflow.
    let values: [Float] = [88.4, 88.5, 88.6, 88.7, 89, 100, 1000, .infinity]
    let simd = Vector(values).exp()        // eight values: all in the SIMD body
    for (i, x) in values.enumerated() {
        let reference = Foundation.exp(x)
        let exact = Foundation.exp(Double(x))
        if reference.isFinite {
            let error = abs(Double(simd[i]) - exact) / exact
            #expect(error <= 4 * Double(Float.ulpOfOne),
                    "exp(\(x)): kernel \(simd[i]), Foundation \(reference), relative error \(error)")
        } else {
            #expect(simd[i] == .infinity, "exp(\(x)): kernel \(simd[i]), Foundation \(reference)")
        }
        // The scalar tail (a vector of one) and the SIMD body must agree.
        let tail = Vector([x]).exp()[0]
        #expect(tail == reference)
    }
}

@Test("the Float exp and logistic kernels keep NaN and handle -infinity")
func floatKernelsSpecialValues() {
    let values: [Float] = [.nan, -.infinity, 0, 1, -1, 2, -2, 3]
    let e = Vector(values).exp()
    #expect(e[0].isNaN, "exp(nan) gave \(e[0])")
    #expect(e[1] <= Float.leastNormalMagnitude * 1.05, "exp(-inf) gave \(e[1])")
    let l = Vector(values).logistic()
    #expect(l[0].isNaN, "logistic(nan) gave \(l[0])")
    #expect(l[1] <= Float.leastNormalMagnitude, "logistic(-inf) gave \(l[1])")
}

@Test("the Float logistic kernel matches 1 / (1 + e^-x)")
func floatLogisticKernelAccuracy() {
    let values = kernelTestValues()
    let y = Vector(values).logistic()
    var worst = 0.0
    for (i, x) in values.enumerated() {
        let exact = 1 / (1 + Foundation.exp(-Double(x)))
        let got = Double(y[i])
        if exact >= Double(Float.leastNormalMagnitude) {
            let error = abs(got - exact) / exact
            worst = max(worst, error)
            #expect(error <= 6 * Double(Float.ulpOfOne),
                    "logistic(\(x)) at \(i): kernel \(y[i]), exact \(exact), relative error \(error)")
        } else {
            #expect(got >= 0 && got <= Double(Float.leastNormalMagnitude),
                    "logistic(\(x)) at \(i): kernel \(y[i]) for a true value of \(exact)")
        }
    }
    print("Float logistic kernel: \(values.count) values, max relative error \(worst) (\(worst / Double(Float.ulpOfOne)) ulp)")
}

@Test("the Float exp, logistic and logistic-pullback kernels give the same bits on AVX2 and portably; the pullback is g * y * (1 - y)")
func floatElementwiseKernelsSameBitsEverywhere() {
    let values = kernelTestValues() + [.nan, -.infinity, .infinity, 89, -88, 1e-30, 0.5]
    let x = Vector(values)
    let y = x.logistic()
    let g = Vector(values.indices.map { Float($0 % 17) / 8 - 1 })
    func bits(_ v: Vector<Float>) -> [UInt32] { v.scalars.map(\.bitPattern) }
    func run() -> [[UInt32]] { [bits(x.exp()), bits(x.logistic()), bits(g.logisticPullback(result: y))] }
    let avx2 = SparseKernels.usesAVX2
    let chosen = run()
    SparseKernels.usesAVX2 = false
    let portable = run()
    SparseKernels.usesAVX2 = avx2
    for (k, name) in ["exp", "logistic", "logistic pullback"].enumerated() {
        let differing = chosen[k].indices.filter { chosen[k][$0] != portable[k][$0] }
        #expect(differing.isEmpty, "\(name): \(differing.count) entries differ between the AVX2 and the portable kernel, first at \(differing.first.map { values[$0] } ?? 0)")
    }
    let formula = values.indices.map { (g[$0] * y[$0] * (1 - y[$0])).bitPattern }
    #expect(chosen[2] == formula, "the logistic pullback kernel is not g * y * (1 - y) bit for bit")
    let matrix = Matrix<Float>(rows: 1, columns: values.count) { p in for i in p.indices { p[i] = g[i] } }
        .logisticPullback(result: Matrix<Float>(rows: 1, columns: values.count) { p in for i in p.indices { p[i] = y[i] } })
    #expect((0..<values.count).map { matrix[0, $0].bitPattern } == formula, "Matrix.logisticPullback differs from the formula")
}

@Test("Float log, and every Double kernel, are Foundation's functions entry by entry")
func scalarLoopKernelsAreFoundation() {
    var rng = TestRandom(seed: 90)
    let positive: [Float] = (0..<37).map { _ in rng.uniform(Float(1e-3)...1e3) } + [1, .leastNormalMagnitude]
    let logs = Vector(positive).log()
    for (i, x) in positive.enumerated() { #expect(logs[i] == Foundation.log(x), "log(\(x))") }

    let doubles: [Double] = (0..<29).map { _ in rng.uniform(-700.0...700) } + [0, -0.0, 1]
    let exps = Vector(doubles).exp(), logistics = Vector(doubles).logistic()
    for (i, x) in doubles.enumerated() {
        #expect(exps[i] == Foundation.exp(x), "Double exp(\(x))")
        #expect(logistics[i] == 1 / (1 + Foundation.exp(-x)), "Double logistic(\(x))")
    }
    let positiveDoubles = doubles.map { abs($0) + 1e-3 }
    let doubleLogs = Vector(positiveDoubles).log()
    for (i, x) in positiveDoubles.enumerated() { #expect(doubleLogs[i] == Foundation.log(x), "Double log(\(x))") }

    // Matrices run the same kernels as vectors.
    let m = Matrix(rows: 3, columns: 13, scalars: Array(kernelTestValues().prefix(39)))
    #expect(m.exp().scalars == Vector(m.scalars).exp().scalars)
    #expect(m.logistic().scalars == Vector(m.scalars).logistic().scalars)
}

// MARK: - BLAS runtime and CPU features

@Test("the OpenBLAS kernel in use is reported")
func blasKernelIsReported() {
    let core = BLASRuntime.coreName
    let features = CPUFeatures.current()
    let userSet = ProcessInfo.processInfo.environment["OPENBLAS_CORETYPE"]
    print("OpenBLAS kernel: \(core), \(BLASRuntime.threadCount) thread(s); CPU \(features.summary); "
          + "recommended kernel \(features.recommendedKernel ?? "none"); "
          + "OPENBLAS_CORETYPE \(userSet ?? "unset")")
    if let kernel = features.recommendedKernel, userSet == nil {
        let fallback = BLASRuntime.fallbackKernels.contains(core)
        print(fallback
              ? "This test process runs on the fallback kernel \(core); prepareProcess() would re-execute with OPENBLAS_CORETYPE=\(kernel)."
              : "This test process runs on \(core), not a fallback kernel (recommended: \(kernel)).")
    }
    #expect(!core.isEmpty && core != "unknown")
    #expect(BLASRuntime.threadCount >= 1)
}

@Test("child processes get the thread count and the recommended kernel")
func childEnvironmentCarriesKernel() {
    let env = BLASRuntime.childEnvironment(threads: 3)
    #expect(env["OPENBLAS_NUM_THREADS"] == "3")
    if let user = ProcessInfo.processInfo.environment["OPENBLAS_CORETYPE"] {
        #expect(env["OPENBLAS_CORETYPE"] == user)
    } else {
        #expect(env["OPENBLAS_CORETYPE"] == CPUFeatures.current().recommendedKernel)
    }
}

/// `/proc/cpuinfo` text for two processors; only the first one's entries count.
func cpuinfo(vendor: String, flags: String) -> String {
    """
    processor\t: 0
    vendor_id\t: \(vendor)
    cpu family\t: 6
    model\t\t: 85
    model name\t: Example CPU @ 2.50GHz: with a colon
    flags\t\t: \(flags)
    bugs\t\t: spectre_v1 spectre_v2

    processor\t: 1
    vendor_id\t: OtherVendor
    flags\t\t: fpu sse sse2

    """
}

let sseFlags = "fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat pse36 clflush mmx fxsr sse sse2 ss ht syscall nx lm constant_tsc pni ssse3 cx16 sse4_1 sse4_2 popcnt"
let avx2Flags = sseFlags + " movbe xsave avx f16c rdrand fma bmi1 avx2 bmi2"
let avx512Flags = avx2Flags + " avx512f avx512dq avx512cd avx512bw avx512vl"

struct CPUSample: Sendable, CustomTestStringConvertible {
    var name: String
    var text: String
    var vendor: String
    var kernel: String?
    var testDescription: String { name }
}

let cpuSamples = [
    CPUSample(name: "AVX-512 Intel", text: cpuinfo(vendor: "GenuineIntel", flags: avx512Flags),
              vendor: "GenuineIntel", kernel: "SkylakeX"),
    CPUSample(name: "AVX-512 with bf16", text: cpuinfo(vendor: "GenuineIntel", flags: avx512Flags + " avx512_bf16 avx512_vnni"),
              vendor: "GenuineIntel", kernel: "Cooperlake"),
    CPUSample(name: "AVX2 Intel", text: cpuinfo(vendor: "GenuineIntel", flags: avx2Flags),
              vendor: "GenuineIntel", kernel: "Haswell"),
    CPUSample(name: "AVX2 AMD", text: cpuinfo(vendor: "AuthenticAMD", flags: avx2Flags + " sse4a misalignsse"),
              vendor: "AuthenticAMD", kernel: "Zen"),
    CPUSample(name: "SSE only", text: cpuinfo(vendor: "GenuineIntel", flags: sseFlags),
              vendor: "GenuineIntel", kernel: nil),
    CPUSample(name: "AVX2 without FMA", text: cpuinfo(vendor: "GenuineIntel", flags: sseFlags + " avx avx2"),
              vendor: "GenuineIntel", kernel: nil),
    CPUSample(name: "AVX-512 foundation only (no BW/VL/DQ)",
              text: cpuinfo(vendor: "GenuineIntel", flags: avx2Flags + " avx512f avx512cd avx512er avx512pf"),
              vendor: "GenuineIntel", kernel: "Haswell"),
    CPUSample(name: "empty text", text: "", vendor: "", kernel: nil),
]

@Test("CPUFeatures parses /proc/cpuinfo and recommends a kernel", arguments: cpuSamples)
func cpuFeaturesParsing(_ sample: CPUSample) {
    let features = CPUFeatures(cpuinfo: sample.text)
    #expect(features.vendor == sample.vendor)
    #expect(features.recommendedKernel == sample.kernel)
    if !sample.text.isEmpty {
        // The first processor's flags, not the second's.
        #expect(features.flags.contains("ssse3"))
        #expect(features.flags.contains("pni") && !features.flags.contains(""))
    } else {
        #expect(features.flags.isEmpty)
        #expect(features.summary == "unknown CPU []")
    }
}

@Test("CPUFeatures summary and the current machine")
func cpuFeaturesSummary() {
    let features = CPUFeatures(cpuinfo: cpuinfo(vendor: "GenuineIntel", flags: avx512Flags))
    #expect(features.summary == "GenuineIntel [avx512f,avx2,fma,avx]")
    #expect(features == CPUFeatures(vendor: "GenuineIntel", flags: Set(avx512Flags.split(separator: " ").map(String.init))))
    if FileManager.default.fileExists(atPath: "/proc/cpuinfo") {
        let current = CPUFeatures.current()
        #expect(!current.vendor.isEmpty && !current.flags.isEmpty, "could not read /proc/cpuinfo: \(current)")
    }
}

@Test("the Float exp kernel rounds k as rounded(.toNearestOrEven) did: the same bits")
func floatExpRoundingUnchanged() {
    typealias V = SIMD8<Float>
    // The kernel before the rounding by 1.5 * 2^23 (with its clamp, a no-op on these lanes).
    func former(_ x0: V) -> V {
        let x = x0.clamped(lowerBound: V(repeating: -87.3), upperBound: V(repeating: 88.37))
        let k = (x * 1.442_695_04).rounded(.toNearestOrEven)
        let r = (x - k * 0.693_145_752) - k * 1.428_606_765e-6
        var p = V(repeating: 1.987_569_15e-4)
        p = p * r + 1.398_199_950e-3
        p = p * r + 8.333_451_907e-3
        p = p * r + 4.166_579_589e-2
        p = p * r + 1.666_666_546e-1
        p = p * r + 5.000_000_120e-1
        p = p * (r * r) + r + 1
        let shifted = unsafeBitCast(k + 12_582_912, to: SIMD8<Int32>.self) &- 0x4B40_0000
        let bits = (shifted &+ 127) &<< 23
        return p * unsafeBitCast(bits, to: V.self)
    }
    var values: [Float] = [0, -0, 87.3, -87.3, 88.3, 1e-30, -1e-30, Float.leastNonzeroMagnitude]
    // Halfway points of x / ln 2 (ties) and their neighbours, then a sweep of the range.
    for n in -126...127 {
        let x = (Float(n) + 0.5) / 1.442_695_04
        values += [x.nextDown, x, x.nextUp, -x]
    }
    var rng = TestRandom(seed: 89)
    for _ in 0..<20_000 { values.append(rng.uniform(-87.3...88.3)) }
    // Only lanes in [-87.3, 88.3] take the polynomial (others take libm's expf).
    values = values.filter { $0 >= -87.3 && $0 <= 88.3 }
    while values.count % 8 != 0 { values.append(1) }
    let kernel = Vector(values).exp()   // every lane in range: all through the polynomial
    for i in stride(from: 0, to: values.count, by: 8) {
        let v = V(values[i..<(i + 8)])
        let b = former(v)
        for l in 0..<8 where kernel[i + l].bitPattern != b[l].bitPattern {
            Issue.record("exp(\(v[l])): \(kernel[i + l]) now, \(b[l]) before")
        }
    }
}
