import COpenBLAS
import Foundation

/// The element types tensors can hold: `Float` for training, `Double` for gradient checks.
///
/// Each conformance routes the BLAS calls to the matching single- or double-precision CBLAS
/// routine and supplies the vectorised element-wise kernels (exp, log, logistic).
public protocol TensorScalar: BinaryFloatingPoint, ElementwiseArithmetic, Sendable,
    CustomStringConvertible where Self.RawSignificand: FixedWidthInteger, Scalar == Self {
    /// `C = alpha * op(A) * op(B) + beta * C`, row-major.
    static func gemm(transposeA: Bool, transposeB: Bool, m: Int, n: Int, k: Int, alpha: Self,
                     a: UnsafePointer<Self>, lda: Int, b: UnsafePointer<Self>, ldb: Int,
                     beta: Self, c: UnsafeMutablePointer<Self>, ldc: Int)
    /// `y = alpha * op(A) * x + beta * y`, row-major `A` of `m` by `n`.
    static func gemv(transpose: Bool, m: Int, n: Int, alpha: Self, a: UnsafePointer<Self>, lda: Int,
                     x: UnsafePointer<Self>, beta: Self, y: UnsafeMutablePointer<Self>)
    /// `y += alpha * x`.
    static func axpy(count: Int, alpha: Self, x: UnsafePointer<Self>, y: UnsafeMutablePointer<Self>)
    /// `x · y`.
    static func dot(count: Int, _ x: UnsafePointer<Self>, _ y: UnsafePointer<Self>) -> Self
    /// `A += alpha * x yᵀ`, row-major `A` of `m` by `n`.
    static func ger(m: Int, n: Int, alpha: Self, x: UnsafePointer<Self>, y: UnsafePointer<Self>,
                    a: UnsafeMutablePointer<Self>, lda: Int)
    /// `y = alpha * x` over `count` entries (`x` and `y` do not overlap).
    static func scale(_ x: UnsafePointer<Self>, by alpha: Self, into y: UnsafeMutablePointer<Self>, count: Int)
    /// `y[i] = scale * x[i]` for bytes `x` (pixels to intensities).
    static func convert(bytes x: UnsafePointer<UInt8>, scale: Self, into y: UnsafeMutablePointer<Self>, count: Int)
    /// Sets `count` entries at `p` to `value`.
    static func fill(_ p: UnsafeMutablePointer<Self>, count: Int, with value: Self)
    /// Element-wise `e^x`.
    static func exp(_ x: UnsafePointer<Self>, into y: UnsafeMutablePointer<Self>, count: Int)
    /// Element-wise natural logarithm.
    static func log(_ x: UnsafePointer<Self>, into y: UnsafeMutablePointer<Self>, count: Int)
    /// Element-wise `1 / (1 + e^-x)`.
    static func logistic(_ x: UnsafePointer<Self>, into y: UnsafeMutablePointer<Self>, count: Int)
}

extension Float: TensorScalar {
    public static func convert(bytes x: UnsafePointer<UInt8>, scale: Float, into y: UnsafeMutablePointer<Float>,
                               count: Int) {
        for i in 0..<count { y[i] = Float(x[i]) * scale }
    }
    public static func scale(_ x: UnsafePointer<Float>, by alpha: Float, into y: UnsafeMutablePointer<Float>,
                             count: Int) {
        FloatKernels.scale(x, alpha, y, count)
    }
    public static func fill(_ p: UnsafeMutablePointer<Float>, count: Int, with value: Float) {
        for i in 0..<count { p[i] = value }
    }
    @inlinable public static func gemm(transposeA: Bool, transposeB: Bool, m: Int, n: Int, k: Int,
                                       alpha: Float, a: UnsafePointer<Float>, lda: Int,
                                       b: UnsafePointer<Float>, ldb: Int, beta: Float,
                                       c: UnsafeMutablePointer<Float>, ldc: Int) {
        cblas_sgemm(CblasRowMajor, transposeA ? CblasTrans : CblasNoTrans,
                    transposeB ? CblasTrans : CblasNoTrans, blasint(m), blasint(n), blasint(k),
                    alpha, a, blasint(lda), b, blasint(ldb), beta, c, blasint(ldc))
    }
    @inlinable public static func gemv(transpose: Bool, m: Int, n: Int, alpha: Float,
                                       a: UnsafePointer<Float>, lda: Int, x: UnsafePointer<Float>,
                                       beta: Float, y: UnsafeMutablePointer<Float>) {
        cblas_sgemv(CblasRowMajor, transpose ? CblasTrans : CblasNoTrans, blasint(m), blasint(n),
                    alpha, a, blasint(lda), x, 1, beta, y, 1)
    }
    @inlinable public static func axpy(count: Int, alpha: Float, x: UnsafePointer<Float>,
                                       y: UnsafeMutablePointer<Float>) {
        cblas_saxpy(blasint(count), alpha, x, 1, y, 1)
    }
    @inlinable public static func dot(count: Int, _ x: UnsafePointer<Float>,
                                      _ y: UnsafePointer<Float>) -> Float {
        cblas_sdot(blasint(count), x, 1, y, 1)
    }
    @inlinable public static func ger(m: Int, n: Int, alpha: Float, x: UnsafePointer<Float>,
                                      y: UnsafePointer<Float>, a: UnsafeMutablePointer<Float>,
                                      lda: Int) {
        cblas_sger(CblasRowMajor, blasint(m), blasint(n), alpha, x, 1, y, 1, a, blasint(lda))
    }
    public static func exp(_ x: UnsafePointer<Float>, into y: UnsafeMutablePointer<Float>,
                           count: Int) {
        ParallelLoop.forEachChunk(count) { r in FloatKernels.exp(x + r.lowerBound, y + r.lowerBound, r.count) }
    }
    public static func log(_ x: UnsafePointer<Float>, into y: UnsafeMutablePointer<Float>,
                           count: Int) {
        for i in 0..<count { y[i] = Foundation.log(x[i]) }
    }
    public static func logistic(_ x: UnsafePointer<Float>, into y: UnsafeMutablePointer<Float>,
                                count: Int) {
        ParallelLoop.forEachChunk(count) { r in FloatKernels.logistic(x + r.lowerBound, y + r.lowerBound, r.count) }
    }
}

extension Double: TensorScalar {
    public static func convert(bytes x: UnsafePointer<UInt8>, scale: Double, into y: UnsafeMutablePointer<Double>,
                               count: Int) {
        for i in 0..<count { y[i] = Double(x[i]) * scale }
    }
    public static func scale(_ x: UnsafePointer<Double>, by alpha: Double, into y: UnsafeMutablePointer<Double>,
                             count: Int) {
        for i in 0..<count { y[i] = alpha * x[i] }
    }
    public static func fill(_ p: UnsafeMutablePointer<Double>, count: Int, with value: Double) {
        for i in 0..<count { p[i] = value }
    }
    @inlinable public static func gemm(transposeA: Bool, transposeB: Bool, m: Int, n: Int, k: Int,
                                       alpha: Double, a: UnsafePointer<Double>, lda: Int,
                                       b: UnsafePointer<Double>, ldb: Int, beta: Double,
                                       c: UnsafeMutablePointer<Double>, ldc: Int) {
        cblas_dgemm(CblasRowMajor, transposeA ? CblasTrans : CblasNoTrans,
                    transposeB ? CblasTrans : CblasNoTrans, blasint(m), blasint(n), blasint(k),
                    alpha, a, blasint(lda), b, blasint(ldb), beta, c, blasint(ldc))
    }
    @inlinable public static func gemv(transpose: Bool, m: Int, n: Int, alpha: Double,
                                       a: UnsafePointer<Double>, lda: Int, x: UnsafePointer<Double>,
                                       beta: Double, y: UnsafeMutablePointer<Double>) {
        cblas_dgemv(CblasRowMajor, transpose ? CblasTrans : CblasNoTrans, blasint(m), blasint(n),
                    alpha, a, blasint(lda), x, 1, beta, y, 1)
    }
    @inlinable public static func axpy(count: Int, alpha: Double, x: UnsafePointer<Double>,
                                       y: UnsafeMutablePointer<Double>) {
        cblas_daxpy(blasint(count), alpha, x, 1, y, 1)
    }
    @inlinable public static func dot(count: Int, _ x: UnsafePointer<Double>,
                                      _ y: UnsafePointer<Double>) -> Double {
        cblas_ddot(blasint(count), x, 1, y, 1)
    }
    @inlinable public static func ger(m: Int, n: Int, alpha: Double, x: UnsafePointer<Double>,
                                      y: UnsafePointer<Double>, a: UnsafeMutablePointer<Double>,
                                      lda: Int) {
        cblas_dger(CblasRowMajor, blasint(m), blasint(n), alpha, x, 1, y, 1, a, blasint(lda))
    }
    public static func exp(_ x: UnsafePointer<Double>, into y: UnsafeMutablePointer<Double>,
                           count: Int) {
        for i in 0..<count { y[i] = Foundation.exp(x[i]) }
    }
    public static func log(_ x: UnsafePointer<Double>, into y: UnsafeMutablePointer<Double>,
                           count: Int) {
        for i in 0..<count { y[i] = Foundation.log(x[i]) }
    }
    public static func logistic(_ x: UnsafePointer<Double>, into y: UnsafeMutablePointer<Double>,
                                count: Int) {
        for i in 0..<count { y[i] = 1 / (1 + Foundation.exp(-x[i])) }
    }
}

/// SIMD kernels for `Float`: an `exp` accurate to a couple of ulp over the whole range,
/// eight lanes at a time, and the logistic function built on it.
enum FloatKernels {
    typealias V = SIMD8<Float>

    /// Lanes the polynomial does not serve exactly: NaN, overflow, and results below the
    /// smallest normal Float; those vectors take the scalar path.
    @inline(__always)
    static func outsidePolynomialRange(_ x: V) -> SIMDMask<SIMD8<Int32>> {
        (x .> 88.3) .| (x .< -87.3) .| (x .!= x)
    }

    /// e^x on lanes inside the polynomial's range (callers check `outsidePolynomialRange`
    /// first, so no lane is NaN or outside [-87.3, 88.3]).
    @inline(__always)
    static func exp8(_ x: V) -> V {
        // e^x = 2^k * e^r with k = round(x / ln 2), r = x - k ln 2 (ln 2 split in two parts
        // for exactness), e^r by a degree-6 Taylor/minimax polynomial on |r| <= ln2/2.
        // Rounding to the nearest integer (ties to even) by adding and subtracting 1.5 * 2^23,
        // exact for |x / ln 2| < 2^22: the same k as `rounded(.toNearestOrEven)` (up to the
        // sign of a zero k, which changes no result below) without a libm call per lane when
        // the target lacks SSE4.1's roundps (the default x86-64 one does).
        let t = x * 1.442_695_04
        let k = (t + 12_582_912) - 12_582_912
        let r = (x - k * 0.693_145_752) - k * 1.428_606_765e-6
        var p = V(repeating: 1.987_569_15e-4)
        p = p * r + 1.398_199_950e-3
        p = p * r + 8.333_451_907e-3
        p = p * r + 4.166_579_589e-2
        p = p * r + 1.666_666_546e-1
        p = p * r + 5.000_000_120e-1
        p = p * (r * r) + r + 1
        // k is integral and |k| < 2^22: adding 1.5 * 2^23 puts it in the low mantissa bits.
        let shifted = unsafeBitCast(k + 12_582_912, to: SIMD8<Int32>.self) &- 0x4B40_0000
        let bits = (shifted &+ 127) &<< 23
        return p * unsafeBitCast(bits, to: V.self)
    }

    static func scale(_ x: UnsafePointer<Float>, _ alpha: Float, _ y: UnsafeMutablePointer<Float>, _ n: Int) {
        var i = 0
        let rx = UnsafeRawPointer(x), ry = UnsafeMutableRawPointer(y)
        let a = V(repeating: alpha)
        while i + 8 <= n {
            ry.storeBytes(of: a * rx.loadUnaligned(fromByteOffset: i * 4, as: V.self), toByteOffset: i * 4, as: V.self)
            i += 8
        }
        while i < n { y[i] = alpha * x[i]; i += 1 }
    }

    static func exp(_ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, _ n: Int) {
        var i = 0
        let rx = UnsafeRawPointer(x), ry = UnsafeMutableRawPointer(y)
        while i + 8 <= n {
            let v = rx.loadUnaligned(fromByteOffset: i * 4, as: V.self)
            if any(outsidePolynomialRange(v)) {
                for j in i..<(i + 8) { y[j] = Foundation.exp(x[j]) }
            } else {
                ry.storeBytes(of: exp8(v), toByteOffset: i * 4, as: V.self)
            }
            i += 8
        }
        while i < n { y[i] = Foundation.exp(x[i]); i += 1 }
    }

    static func logistic(_ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, _ n: Int) {
        var i = 0
        let rx = UnsafeRawPointer(x), ry = UnsafeMutableRawPointer(y)
        let one = V(repeating: 1)
        while i + 8 <= n {
            let v = rx.loadUnaligned(fromByteOffset: i * 4, as: V.self)
            if any(outsidePolynomialRange(-v)) {
                for j in i..<(i + 8) { y[j] = 1 / (1 + Foundation.exp(-x[j])) }
            } else {
                ry.storeBytes(of: one / (one + exp8(-v)), toByteOffset: i * 4, as: V.self)
            }
            i += 8
        }
        while i < n { y[i] = 1 / (1 + Foundation.exp(-x[i])); i += 1 }
    }
}
