// Float-only kernels, instantiated by sparse_kernels.c once per instruction set (SUFFIX,
// ATTR), on vf8 (eight floats): the element-wise exp, logistic and logistic pullback, and the
// tiled transposition of the sparse layer's weights. e^x is 2^k * e^r with k = round(x / ln 2) and
// r = x - k ln 2 (ln 2 in two parts, for exactness), e^r by a degree-6 polynomial on
// |r| <= ln 2 / 2: accurate to a couple of ulp. Rounding to the nearest integer (ties to
// even) adds and subtracts 1.5 * 2^23, exact for |x / ln 2| < 2^22. Lanes outside the
// polynomial's range (NaN, overflow, results below the smallest normal float) make their
// vector take libm's expf, one entry at a time. Every operation is a separate IEEE operation
// (contraction is off), so both instantiations give the same bits. FN(name) is name##SUFFIX
// (sparse_kernels.c).

// The helpers take vf8 arguments but are always inlined, so no call passes a vector: the
// warning that the portable instantiation would pass one differently from AVX code (-Wpsabi)
// does not apply.
#pragma clang diagnostic push
#pragma clang diagnostic ignored "-Wpsabi"

static inline __attribute__((always_inline)) ATTR int FN(outside_polynomial_)(vf8 x) {
    const vi8 m = (x > 88.3f) | (x < -87.3f) | (x != x);
    int any = 0;
    for (int q = 0; q < 8; q++) any |= m[q];
    return any;
}

static inline __attribute__((always_inline)) ATTR vf8 FN(exp8_)(vf8 x) {
    const vf8 t = x * 1.44269504f;
    const vf8 k = (t + 12582912.0f) - 12582912.0f;
    const vf8 r = (x - k * 0.693145752f) - k * 1.428606765e-6f;
    vf8 p = (vf8){0} + 1.98756915e-4f;
    p = p * r + 1.398199950e-3f;
    p = p * r + 8.333451907e-3f;
    p = p * r + 4.166579589e-2f;
    p = p * r + 1.666666546e-1f;
    p = p * r + 5.000000120e-1f;
    p = p * (r * r) + r + 1.0f;
    // k is integral and |k| < 2^22: adding 1.5 * 2^23 puts it in the low mantissa bits.
    const vu8 shifted = (vu8)(k + 12582912.0f) - 0x4B400000u;
    const vu8 bits = (shifted + 127u) << 23;
    return p * (vf8)bits;
}

ATTR static void FN(exp_)(const float *x, float *y, int64_t n) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const vf8 v = *(const vf8u *)(x + i);
        if (FN(outside_polynomial_)(v)) {
            for (int64_t j = i; j < i + 8; j++) y[j] = expf(x[j]);
        } else {
            *(vf8u *)(y + i) = FN(exp8_)(v);
        }
    }
    for (; i < n; i++) y[i] = expf(x[i]);
}

ATTR static void FN(logistic_)(const float *x, float *y, int64_t n) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const vf8 v = -*(const vf8u *)(x + i);
        if (FN(outside_polynomial_)(v)) {
            for (int64_t j = i; j < i + 8; j++) y[j] = 1.0f / (1.0f + expf(-x[j]));
        } else {
            *(vf8u *)(y + i) = 1.0f / (1.0f + FN(exp8_)(v));
        }
    }
    for (; i < n; i++) y[i] = 1.0f / (1.0f + expf(-x[i]));
}

// g * y * (1 - y), in that order: the logistic function's pullback, given its result y.
ATTR static void FN(logistic_pullback_)(const float *g, const float *y, float *out, int64_t n) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const vf8 gv = *(const vf8u *)(g + i), yv = *(const vf8u *)(y + i);
        *(vf8u *)(out + i) = gv * yv * (1.0f - yv);
    }
    for (; i < n; i++) out[i] = g[i] * y[i] * (1.0f - y[i]);
}


// dst (cols x ldd) = srcᵀ (src: rows x cols), then zeros in columns rows ..< ldd: 8 x 8 tiles
// through registers (unpack, shuffle, swap halves), 32 x 32 blocks of tiles so that a block's
// source and destination stay in L1; the edges one entry at a time.
ATTR static void FN(transpose_)(const float *src, int32_t rows, int32_t cols, float *dst, int32_t ldd) {
    for (int32_t c0 = 0; c0 < cols; c0 += 32) {
        const int32_t c1 = c0 + 32 < cols ? c0 + 32 : cols;
        for (int32_t r0 = 0; r0 < rows; r0 += 32) {
            const int32_t r1 = r0 + 32 < rows ? r0 + 32 : rows;
            int32_t r = r0;
            for (; r + 8 <= r1; r += 8) {
                int32_t c = c0;
                for (; c + 8 <= c1; c += 8) {
                    const float *p = src + (int64_t)r * cols + c;
                    const vf8 a0 = *(const vf8u *)p, a1 = *(const vf8u *)(p + cols),
                              a2 = *(const vf8u *)(p + 2 * (int64_t)cols), a3 = *(const vf8u *)(p + 3 * (int64_t)cols),
                              a4 = *(const vf8u *)(p + 4 * (int64_t)cols), a5 = *(const vf8u *)(p + 5 * (int64_t)cols),
                              a6 = *(const vf8u *)(p + 6 * (int64_t)cols), a7 = *(const vf8u *)(p + 7 * (int64_t)cols);
                    const vf8 t0 = __builtin_shufflevector(a0, a1, 0, 8, 1, 9, 4, 12, 5, 13);
                    const vf8 t1 = __builtin_shufflevector(a0, a1, 2, 10, 3, 11, 6, 14, 7, 15);
                    const vf8 t2 = __builtin_shufflevector(a2, a3, 0, 8, 1, 9, 4, 12, 5, 13);
                    const vf8 t3 = __builtin_shufflevector(a2, a3, 2, 10, 3, 11, 6, 14, 7, 15);
                    const vf8 t4 = __builtin_shufflevector(a4, a5, 0, 8, 1, 9, 4, 12, 5, 13);
                    const vf8 t5 = __builtin_shufflevector(a4, a5, 2, 10, 3, 11, 6, 14, 7, 15);
                    const vf8 t6 = __builtin_shufflevector(a6, a7, 0, 8, 1, 9, 4, 12, 5, 13);
                    const vf8 t7 = __builtin_shufflevector(a6, a7, 2, 10, 3, 11, 6, 14, 7, 15);
                    const vf8 u0 = __builtin_shufflevector(t0, t2, 0, 1, 8, 9, 4, 5, 12, 13);
                    const vf8 u1 = __builtin_shufflevector(t0, t2, 2, 3, 10, 11, 6, 7, 14, 15);
                    const vf8 u2 = __builtin_shufflevector(t1, t3, 0, 1, 8, 9, 4, 5, 12, 13);
                    const vf8 u3 = __builtin_shufflevector(t1, t3, 2, 3, 10, 11, 6, 7, 14, 15);
                    const vf8 u4 = __builtin_shufflevector(t4, t6, 0, 1, 8, 9, 4, 5, 12, 13);
                    const vf8 u5 = __builtin_shufflevector(t4, t6, 2, 3, 10, 11, 6, 7, 14, 15);
                    const vf8 u6 = __builtin_shufflevector(t5, t7, 0, 1, 8, 9, 4, 5, 12, 13);
                    const vf8 u7 = __builtin_shufflevector(t5, t7, 2, 3, 10, 11, 6, 7, 14, 15);
                    float *q = dst + (int64_t)c * ldd + r;
                    *(vf8u *)q = __builtin_shufflevector(u0, u4, 0, 1, 2, 3, 8, 9, 10, 11);
                    *(vf8u *)(q + ldd) = __builtin_shufflevector(u1, u5, 0, 1, 2, 3, 8, 9, 10, 11);
                    *(vf8u *)(q + 2 * (int64_t)ldd) = __builtin_shufflevector(u2, u6, 0, 1, 2, 3, 8, 9, 10, 11);
                    *(vf8u *)(q + 3 * (int64_t)ldd) = __builtin_shufflevector(u3, u7, 0, 1, 2, 3, 8, 9, 10, 11);
                    *(vf8u *)(q + 4 * (int64_t)ldd) = __builtin_shufflevector(u0, u4, 4, 5, 6, 7, 12, 13, 14, 15);
                    *(vf8u *)(q + 5 * (int64_t)ldd) = __builtin_shufflevector(u1, u5, 4, 5, 6, 7, 12, 13, 14, 15);
                    *(vf8u *)(q + 6 * (int64_t)ldd) = __builtin_shufflevector(u2, u6, 4, 5, 6, 7, 12, 13, 14, 15);
                    *(vf8u *)(q + 7 * (int64_t)ldd) = __builtin_shufflevector(u3, u7, 4, 5, 6, 7, 12, 13, 14, 15);
                }
                for (; c < c1; c++)
                    for (int32_t i = r; i < r + 8; i++) dst[(int64_t)c * ldd + i] = src[(int64_t)i * cols + c];
            }
            for (; r < r1; r++)
                for (int32_t c = c0; c < c1; c++) dst[(int64_t)c * ldd + r] = src[(int64_t)r * cols + c];
        }
    }
    for (int32_t c = 0; c < cols; c++)
        for (int32_t r = rows; r < ldd; r++) dst[(int64_t)c * ldd + r] = 0;
}

#pragma clang diagnostic pop
