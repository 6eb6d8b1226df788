import COpenBLAS
import CSparseKernels
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
    /// Element-wise `g * y * (1 - y)`: the gradient `g` of the logistic function's result `y`,
    /// carried back to its input.
    static func logisticPullback(_ g: UnsafePointer<Self>, _ y: UnsafePointer<Self>,
                                 into out: UnsafeMutablePointer<Self>, count: Int)
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
    public static func logisticPullback(_ g: UnsafePointer<Float>, _ y: UnsafePointer<Float>,
                                        into out: UnsafeMutablePointer<Float>, count: Int) {
        ParallelLoop.forEachChunk(count) { r in
            FloatKernels.logisticPullback(g + r.lowerBound, y + r.lowerBound, out + r.lowerBound, r.count)
        }
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
    public static func logisticPullback(_ g: UnsafePointer<Double>, _ y: UnsafePointer<Double>,
                                        into out: UnsafeMutablePointer<Double>, count: Int) {
        for i in 0..<count { out[i] = g[i] * y[i] * (1 - y[i]) }
    }
}

/// Element-wise kernels for `Float`: scaling in Swift; `exp` (accurate to a couple of ulp
/// over the whole range, eight lanes at a time), the logistic function and its pullback in
/// CSparseKernels, which runs them on AVX2 where the CPU has it, with the same bits as its
/// portable version.
enum FloatKernels {
    typealias V = SIMD8<Float>

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
        sk_exp_f(x, y, Int64(n))
    }

    static func logistic(_ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, _ n: Int) {
        sk_logistic_f(x, y, Int64(n))
    }

    /// `g * y * (1 - y)` entry by entry, into `out`.
    static func logisticPullback(_ g: UnsafePointer<Float>, _ y: UnsafePointer<Float>,
                                 _ out: UnsafeMutablePointer<Float>, _ n: Int) {
        sk_logistic_pullback_f(g, y, out, Int64(n))
    }
}
