// Float-only kernels, instantiated by sparse_kernels.c once per instruction set (SUFFIX,
// ATTR), on vf8 (eight floats): the element-wise exp, logistic and logistic pullback. e^x is
// 2^k * e^r with k = round(x / ln 2) and r = x - k ln 2 (ln 2 in two parts, for exactness),
// e^r by a degree-6 polynomial on |r| <= ln 2 / 2: accurate to a couple of ulp. Rounding to
// the nearest integer (ties to even) adds and subtracts 1.5 * 2^23, exact for |x / ln 2| <
// 2^22. Lanes outside the polynomial's range (NaN, overflow, results below the smallest normal
// float) make their vector take libm's expf, one entry at a time. Every operation is a
// separate IEEE operation (contraction is off), so both instantiations give the same bits.
// FN(name) is name##SUFFIX (sparse_kernels.c).

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

// total += g: one shard's gradient added to a batch's running sum.
ATTR static void FN(add_)(float *total, const float *g, int64_t n) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) *(vf8u *)(total + i) = *(const vf8u *)(total + i) + *(const vf8u *)(g + i);
    for (; i < n; i++) total[i] = total[i] + g[i];
}

ATTR static void FN(sum_)(float *out, const float *a, const float *b, int64_t n) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) *(vf8u *)(out + i) = *(const vf8u *)(a + i) + *(const vf8u *)(b + i);
    for (; i < n; i++) out[i] = a[i] + b[i];
}

// Adam's update of the flat parameters, on the mean gradient sum * scale. Each lane does, as
// separate IEEE operations in this order (square root and division are correctly rounded, so
// the width of the vector does not change a bit):
//   g = sum * scale;  m = b1 * m + (1 - b1) * g;  v = b2 * v + ((1 - b2) * g) * g;
//   p = p - (step_size * m) / (sqrt(v) / root2 + eps).
// With `sum2` (not NULL) the sum is sum[i] + sum2[i], added here (one float addition, as the
// reducer would have stored it) instead of read from a buffer written just before.
ATTR static void FN(adam_)(float *m, float *v, float *p, const float *sum, const float *sum2, int64_t n,
                           float scale, float b1, float b2, float eps, float step_size, float root2) {
    const float take1 = 1.0f - b1, take2 = 1.0f - b2;
#define ADAM_LANES(G)                                                                              \
    {                                                                                              \
        const vf8 g = (G) * scale;                                                                 \
        const vf8 mi = b1 * *(const vf8u *)(m + i) + take1 * g;                                    \
        const vf8 vi = b2 * *(const vf8u *)(v + i) + take2 * g * g;                                \
        *(vf8u *)(m + i) = mi;                                                                     \
        *(vf8u *)(v + i) = vi;                                                                     \
        *(vf8u *)(p + i) = *(const vf8u *)(p + i) - step_size * mi / (__builtin_elementwise_sqrt(vi) / root2 + eps); \
    }
    int64_t i = 0;
    if (sum2) {
        for (; i + 8 <= n; i += 8) ADAM_LANES(*(const vf8u *)(sum + i) + *(const vf8u *)(sum2 + i))
    } else {
        for (; i + 8 <= n; i += 8) ADAM_LANES(*(const vf8u *)(sum + i))
    }
#undef ADAM_LANES
    for (; i < n; i++) {
        const float s = sum2 ? sum[i] + sum2[i] : sum[i];
        const float g = s * scale;
        m[i] = b1 * m[i] + take1 * g;
        v[i] = b2 * v[i] + take2 * g * g;
        p[i] = p[i] - step_size * m[i] / (sqrtf(v[i]) / root2 + eps);
    }
}

#pragma clang diagnostic pop
