// Instantiated by sparse_kernels.c once per (scalar type, instruction set):
//   T       the scalar (float, double)
//   VEC     a GCC vector of T, 32 bytes; VECU the same with the alignment of T
//   L       lanes of VEC
//   SUFFIX  name suffix (f_avx2, f_generic, ...)
//   ATTR    function attributes (the target)
// and FN(name), name##SUFFIX (sparse_kernels.c).
// Multiplication and addition are separate operations (no FMA, contraction off), so every
// instantiation computes the same bits.

#define CHUNK_VECTORS 8

#define LOADV(p) (*(const VECU *)(p))
#define STOREV(p, v) (*(VECU *)(p) = (v))

#define SPLAT(x) ((VEC){0} + (x))

// One chunk of NV vectors (columns c0 ..< c0 + w, w <= NV * L) of the forward pass on block b
// of block_rows rows, from the block's nonzeros by column (as the weight gradient reads them):
// the block's sums (block_rows x NV * L, aligned: 16 KB in float, in L1) start at the bias; the
// inputs are visited in order, each loading its row of the weights (stored by input) once into
// registers and adding x times it to the sums of the block's rows that have a nonzero there
// (rows in order). Each row's sum is thus the bias plus its nonzeros in column order.
static inline __attribute__((always_inline)) ATTR void
FN(affine_chunk_)(const int NV, int32_t rows, int32_t inputs, int32_t block_rows,
                  const int32_t *col_starts, const int32_t *rix, const T *vals, const T *wt,
                  int32_t ldw, const T *bias, T *out, int32_t ldo, int32_t c0, int32_t w,
                  int32_t b, T *acc_block) {
    const int width = NV * L;
    const int32_t r0 = b * block_rows, r1 = r0 + block_rows < rows ? r0 + block_rows : rows;
    VEC bv[CHUNK_VECTORS];
    for (int v = 0; v < NV; v++) bv[v] = LOADV(bias + c0 + v * L);
    for (int32_t s = r0; s < r1; s++) {
        T *a = acc_block + (int64_t)(s - r0) * width;
        for (int v = 0; v < NV; v++) STOREV(a + v * L, bv[v]);
    }
    T *ab = acc_block - (int64_t)r0 * width;
    const int32_t *cs = col_starts + (int64_t)b * (inputs + 1);
    const T *wc = wt + c0;
    for (int32_t j = 0; j < inputs; j++) {
        int32_t e = cs[j];
        const int32_t end = cs[j + 1];
        if (e == end) continue;
        VEC wr[CHUNK_VECTORS];
        for (int v = 0; v < NV; v++) wr[v] = LOADV(wc + (int64_t)j * ldw + v * L);
        for (; e < end; e++) {
            T *a = ab + (int64_t)rix[e] * width;
            const VEC x = SPLAT(vals[e]);
            for (int v = 0; v < NV; v++) STOREV(a + v * L, LOADV(a + v * L) + x * wr[v]);
        }
    }
    for (int32_t s = r0; s < r1; s++) {
        const T *a = acc_block + (int64_t)(s - r0) * width;
        T *o = out + (int64_t)s * ldo + c0;
        for (int32_t k = 0; k < w; k++) o[k] = a[k];
    }
}

ATTR static void FN(affine_)(int32_t rows, int32_t inputs, int32_t block_rows,
                             const int32_t *col_starts, const int32_t *rix, const T *vals,
                             const T *wt, int32_t ldw, const T *bias, T *out, int32_t ldo,
                             int32_t o0, int32_t o1, T *acc_block) {
    const int32_t blocks = (rows + block_rows - 1) / block_rows;
    for (int32_t b = 0; b < blocks; b++) {
        for (int32_t c0 = o0; c0 < o1; c0 += CHUNK_VECTORS * L) {
            int32_t w = o1 - c0 < CHUNK_VECTORS * L ? o1 - c0 : CHUNK_VECTORS * L;
            int nv = (w + L - 1) / L;
            switch (nv) {
#define CASE(n) case n: FN(affine_chunk_)(n, rows, inputs, block_rows, col_starts, rix, vals, wt, ldw, bias, out, ldo, c0, w, b, acc_block); break;
            CASE(1) CASE(2) CASE(3) CASE(4) CASE(5) CASE(6) CASE(7) CASE(8)
#undef CASE
            }
        }
    }
}

// One chunk of the weight gradient: scratch[j * (NV * L) + k] accumulates column c0 + k of
// input j over the blocks of rows in order (a block's rows of g, copied aligned and padded to
// block_rows x 64 entries, stay in L1), then is written to gw (inputs x outputs, stored by
// input like the weights). Inputs with no nonzero in a block are skipped. Each sum adds the
// rows in order, whatever the block size.
static inline __attribute__((always_inline)) ATTR void
FN(gradient_chunk_)(const int NV, int32_t rows, int32_t inputs, int32_t block_rows,
                    const int32_t *col_starts, const int32_t *rix, const T *vals, const T *g,
                    int32_t ldg, T *gw, int64_t ldgw, int32_t c0, int32_t w, T *scratch,
                    T *g_block) {
    const int32_t blocks = (rows + block_rows - 1) / block_rows;
    const int width = NV * L;
    for (int64_t k = 0; k < (int64_t)inputs * width; k++) scratch[k] = 0;
    for (int32_t b = 0; b < blocks; b++) {
        const int32_t r0 = b * block_rows, r1 = r0 + block_rows < rows ? r0 + block_rows : rows;
        // The block's rows of this chunk of g, aligned and zero-padded to whole vectors.
        for (int32_t s = r0; s < r1; s++) {
            const T *src = g + (int64_t)s * ldg + c0;
            T *dst = g_block + (int64_t)(s - r0) * width;
            int k = 0;
            for (; k < w; k++) dst[k] = src[k];
            for (; k < width; k++) dst[k] = 0;
        }
        const T *gb = g_block - (int64_t)r0 * width;
        const int32_t *cs = col_starts + (int64_t)b * (inputs + 1);
        for (int32_t j = 0; j < inputs; j++) {
            int32_t e = cs[j];
            const int32_t end = cs[j + 1];
            if (e == end) continue;
            VEC acc[CHUNK_VECTORS];
            T *sc = scratch + (int64_t)j * width;
            for (int v = 0; v < NV; v++) acc[v] = LOADV(sc + v * L);
            for (; e < end; e++) {
                const T *gr = gb + (int64_t)rix[e] * width;
                const VEC x = SPLAT(vals[e]);
                for (int v = 0; v < NV; v++) acc[v] = acc[v] + x * LOADV(gr + v * L);
            }
            for (int v = 0; v < NV; v++) STOREV(sc + v * L, acc[v]);
        }
    }
    // The chunk is columns c0 ..< c0 + w of gw's rows.
    for (int32_t j = 0; j < inputs; j++) {
        T *dst = gw + (int64_t)j * ldgw + c0;
        const T *src = scratch + (int64_t)j * width;
        for (int k = 0; k < w; k++) dst[k] = src[k];
    }
}

ATTR static void FN(gradient_)(int32_t rows, int32_t inputs, int32_t block_rows,
                               const int32_t *col_starts, const int32_t *rix, const T *vals,
                               const T *g, int32_t ldg, T *gw, int64_t ldgw, int32_t o0, int32_t o1,
                               T *scratch, T *g_block) {
    for (int32_t c0 = o0; c0 < o1; c0 += CHUNK_VECTORS * L) {
        int32_t w = o1 - c0 < CHUNK_VECTORS * L ? o1 - c0 : CHUNK_VECTORS * L;
        if (rows == 0) {
            for (int k = 0; k < w; k++)
                for (int32_t j = 0; j < inputs; j++) gw[(int64_t)j * ldgw + c0 + k] = 0;
            continue;
        }
        int nv = (w + L - 1) / L;
        switch (nv) {
#define CASE(n) case n: FN(gradient_chunk_)(n, rows, inputs, block_rows, col_starts, rix, vals, g, ldg, gw, ldgw, c0, w, scratch, g_block); break;
        CASE(1) CASE(2) CASE(3) CASE(4) CASE(5) CASE(6) CASE(7) CASE(8)
#undef CASE
        }
    }
}

// ---- one sparse vector (blocks of L entries) against a row-major matrix ----

// The lanes of a sum, added in lane order (a macro: a 32-byte vector argument would change
// the calling convention between the AVX2 and the portable instantiation).
#define LANE_SUM(a, s)                                 \
    do {                                               \
        s = (a)[0];                                    \
        for (int q_ = 1; q_ < L; q_++) s += (a)[q_];   \
    } while (0)

// y[r] = (lane sums over the blocks, in block order, of w's block times x's block, the lanes
// then added in order) + the tail's products in order. Four rows at a time, each with its
// own sums: the same operations as the one-row loop.
ATTR static void FN(block_matvec_)(int32_t rows, const T *w, int64_t ldw, int32_t nb,
                                   const int32_t *blocks, const T *bvals, int32_t nt,
                                   const int32_t *tidx, const T *tvals, T *y) {
    int32_t r = 0;
    for (; r + 4 <= rows; r += 4) {
        const T *w0 = w + (int64_t)r * ldw;
        VEC a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0};
        for (int32_t b = 0; b < nb; b++) {
            const VEC x = LOADV(bvals + (int64_t)b * L);
            const T *p = w0 + blocks[b];
            a0 = a0 + LOADV(p) * x;
            a1 = a1 + LOADV(p + ldw) * x;
            a2 = a2 + LOADV(p + 2 * ldw) * x;
            a3 = a3 + LOADV(p + 3 * ldw) * x;
        }
        T s0, s1, s2, s3;
        LANE_SUM(a0, s0);
        LANE_SUM(a1, s1);
        LANE_SUM(a2, s2);
        LANE_SUM(a3, s3);
        for (int32_t t = 0; t < nt; t++) {
            const T *p = w0 + tidx[t];
            s0 += p[0] * tvals[t];
            s1 += p[ldw] * tvals[t];
            s2 += p[2 * ldw] * tvals[t];
            s3 += p[3 * ldw] * tvals[t];
        }
        y[r] = s0; y[r + 1] = s1; y[r + 2] = s2; y[r + 3] = s3;
    }
    for (; r < rows; r++) {
        const T *p = w + (int64_t)r * ldw;
        VEC a = {0};
        for (int32_t b = 0; b < nb; b++) a = a + LOADV(p + blocks[b]) * LOADV(bvals + (int64_t)b * L);
        T s;
        LANE_SUM(a, s);
        for (int32_t t = 0; t < nt; t++) s += p[tidx[t]] * tvals[t];
        y[r] = s;
    }
}

// w[r, j] += (alpha * u[r]) * x[j] over x's blocks and tail.
ATTR static void FN(block_ger_)(int32_t rows, T *w, int64_t ldw, T alpha, const T *u, int32_t nb,
                                const int32_t *blocks, const T *bvals, int32_t nt,
                                const int32_t *tidx, const T *tvals) {
    for (int32_t r = 0; r < rows; r++) {
        T *wr = w + (int64_t)r * ldw;
        const T a = alpha * u[r];
        const VEC av = SPLAT(a);
        for (int32_t b = 0; b < nb; b++) {
            T *p = wr + blocks[b];
            STOREV(p, LOADV(p) + av * LOADV(bvals + (int64_t)b * L));
        }
        for (int32_t t = 0; t < nt; t++) wr[tidx[t]] += a * tvals[t];
    }
}

// ---- one sparse vector times a matrix stored by input (row j: input j's weights) ----

// The nonzeros of a blocked vector, in column order: their rows of w (row j at w + j * ldw,
// offset by c0) and their values; returns how many. `rows` and `xs` have room for nb * L + nt.
static inline __attribute__((always_inline)) int32_t
FN(nonzero_rows_)(const T *w, int64_t ldw, int32_t nb, const int32_t *blocks, const T *bvals,
                  int32_t nt, const int32_t *tidx, const T *tvals, const T **rows, T *xs) {
    int32_t k = 0;
    for (int32_t b = 0; b < nb; b++) {
        for (int q = 0; q < L; q++) {
            const T x = bvals[(int64_t)b * L + q];
            if (x == 0) continue;
            rows[k] = w + (int64_t)(blocks[b] + q) * ldw;
            xs[k++] = x;
        }
    }
    for (int32_t t = 0; t < nt; t++) {
        rows[k] = w + (int64_t)tidx[t] * ldw;
        xs[k++] = tvals[t];
    }
    return k;
}

// The nonzeros of a dense vector x[0 ..< n], in order: their rows of w and their values.
static inline __attribute__((always_inline)) int32_t
FN(dense_nonzero_rows_)(const T *w, int64_t ldw, int32_t n, const T *x, const T **rows, T *xs) {
    int32_t k = 0;
    for (int32_t j = 0; j < n; j++) {
        if (x[j] == 0) continue;
        rows[k] = w + (int64_t)j * ldw;
        xs[k++] = x[j];
    }
    return k;
}

// y[o] = bias[o] (or 0) + the sum over the k listed rows, in order, of xs[e] * rows[e][o], for
// o < cols: each output's sum in the same order as `affine_`'s. The rows are streamed whole,
// four at a time (y read and written once per four rows, each sum still added row by row):
// rows that are far apart in memory would defeat the prefetcher if read a slice at a time
// (measured on MNIST's first layer: 64-output slices in registers 2.4x slower, one row at a
// time 2.2x, eight at a time 1.15x).
ATTR static void FN(vecmat_list_)(int32_t cols, int32_t k, const T *const *rows, const T *xs,
                                  const T *bias, T *y) {
    for (int32_t o = 0; o < cols; o++) y[o] = bias ? bias[o] : 0;
    int32_t e = 0;
    for (; e + 4 <= k; e += 4) {
        const T *r0 = rows[e], *r1 = rows[e + 1], *r2 = rows[e + 2], *r3 = rows[e + 3];
        const T s0 = xs[e], s1 = xs[e + 1], s2 = xs[e + 2], s3 = xs[e + 3];
        const VEC x0 = SPLAT(s0), x1 = SPLAT(s1), x2 = SPLAT(s2), x3 = SPLAT(s3);
        int32_t o = 0;
        for (; o + L <= cols; o += L) {
            VEC v = LOADV(y + o);
            v = v + x0 * LOADV(r0 + o);
            v = v + x1 * LOADV(r1 + o);
            v = v + x2 * LOADV(r2 + o);
            v = v + x3 * LOADV(r3 + o);
            STOREV(y + o, v);
        }
        for (; o < cols; o++) {
            T v = y[o];
            v += s0 * r0[o];
            v += s1 * r1[o];
            v += s2 * r2[o];
            v += s3 * r3[o];
            y[o] = v;
        }
    }
    for (; e < k; e++) {
        const T *r = rows[e];
        const VEC x = SPLAT(xs[e]);
        int32_t o = 0;
        for (; o + L <= cols; o += L) STOREV(y + o, LOADV(y + o) + x * LOADV(r + o));
        for (; o < cols; o++) y[o] += xs[e] * r[o];
    }
}

// rows[e][o] += (alpha * u[o]) * xs[e] for the k listed rows and every o < cols, the rows
// streamed whole, four at a time (measured: 1.3-1.4x faster than one at a time on MNIST's
// first layer); `a` has room for cols entries (alpha * u).
ATTR static void FN(rows_ger_list_)(int32_t cols, T alpha, const T *u, int32_t k,
                                    const T *const *rows, const T *xs, T *a) {
    for (int32_t o = 0; o < cols; o++) a[o] = alpha * u[o];
    int32_t e = 0;
    for (; e + 4 <= k; e += 4) {
        T *r0 = (T *)rows[e], *r1 = (T *)rows[e + 1], *r2 = (T *)rows[e + 2], *r3 = (T *)rows[e + 3];
        const T s0 = xs[e], s1 = xs[e + 1], s2 = xs[e + 2], s3 = xs[e + 3];
        const VEC x0 = SPLAT(s0), x1 = SPLAT(s1), x2 = SPLAT(s2), x3 = SPLAT(s3);
        int32_t o = 0;
        for (; o + L <= cols; o += L) {
            const VEC av = LOADV(a + o);
            STOREV(r0 + o, LOADV(r0 + o) + av * x0);
            STOREV(r1 + o, LOADV(r1 + o) + av * x1);
            STOREV(r2 + o, LOADV(r2 + o) + av * x2);
            STOREV(r3 + o, LOADV(r3 + o) + av * x3);
        }
        for (; o < cols; o++) {
            r0[o] += a[o] * s0;
            r1[o] += a[o] * s1;
            r2[o] += a[o] * s2;
            r3[o] += a[o] * s3;
        }
    }
    for (; e < k; e++) {
        T *r = (T *)rows[e];
        const VEC x = SPLAT(xs[e]);
        int32_t o = 0;
        for (; o + L <= cols; o += L) STOREV(r + o, LOADV(r + o) + LOADV(a + o) * x);
        for (; o < cols; o++) r[o] += a[o] * xs[e];
    }
}

// y[o] = bias[o] (or 0) + the sum over the nonzeros (j, x) of the blocked vector, in column
// order, of x * w[j * ldw + o], for o < cols.
ATTR static void FN(block_vecmat_)(int32_t cols, const T *w, int64_t ldw, int32_t nb,
                                   const int32_t *blocks, const T *bvals, int32_t nt,
                                   const int32_t *tidx, const T *tvals, const T *bias, T *y,
                                   const T **rows, T *xs) {
    const int32_t k = FN(nonzero_rows_)(w, ldw, nb, blocks, bvals, nt, tidx, tvals, rows, xs);
    FN(vecmat_list_)(cols, k, rows, xs, bias, y);
}

// The same for a dense x[0 ..< n] (its zeros skipped).
ATTR static void FN(dense_vecmat_)(int32_t n, int32_t cols, const T *w, int64_t ldw, const T *x,
                                   const T *bias, T *y, const T **rows, T *xs) {
    const int32_t k = FN(dense_nonzero_rows_)(w, ldw, n, x, rows, xs);
    FN(vecmat_list_)(cols, k, rows, xs, bias, y);
}

// w[j * ldw + o] += (alpha * u[o]) * x for every nonzero (j, x) of the blocked vector and
// every o < cols: adds alpha * x uᵀ, touching only the rows of x's nonzeros.
ATTR static void FN(block_rows_ger_)(int32_t cols, T *w, int64_t ldw, T alpha, const T *u,
                                     int32_t nb, const int32_t *blocks, const T *bvals,
                                     int32_t nt, const int32_t *tidx, const T *tvals,
                                     const T **rows, T *xs, T *a) {
    const int32_t k = FN(nonzero_rows_)(w, ldw, nb, blocks, bvals, nt, tidx, tvals, rows, xs);
    FN(rows_ger_list_)(cols, alpha, u, k, rows, xs, a);
}

// The same for a dense x[0 ..< n] (its zeros skipped).
ATTR static void FN(dense_rows_ger_)(int32_t n, int32_t cols, T *w, int64_t ldw, T alpha,
                                     const T *u, const T *x, const T **rows, T *xs, T *a) {
    const int32_t k = FN(dense_nonzero_rows_)(w, ldw, n, x, rows, xs);
    FN(rows_ger_list_)(cols, alpha, u, k, rows, xs, a);
}

#undef LANE_SUM
#undef SPLAT
#undef CHUNK_VECTORS
#undef LOADV
#undef STOREV
