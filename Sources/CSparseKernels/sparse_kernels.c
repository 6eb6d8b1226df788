#include "sparse_kernels.h"

#include <string.h>

// Multiplication and addition stay separate operations everywhere (no FMA), so the AVX2 and
// the portable kernels compute the same bits.
#pragma clang fp contract(off)

typedef float vf8 __attribute__((vector_size(32)));
typedef float vf8u __attribute__((vector_size(32), aligned(4), may_alias));
typedef double vd4 __attribute__((vector_size(32)));
typedef double vd4u __attribute__((vector_size(32), aligned(8), may_alias));
typedef int32_t vi8 __attribute__((vector_size(32)));
typedef uint32_t vu8 __attribute__((vector_size(32)));

#if defined(__x86_64__) || defined(__i386__)
#define SK_X86 1
#define AVX2_ATTR __attribute__((target("avx2")))
#else
#define SK_X86 0
#endif

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

// Scratch memory for a kernel: `bytes` from aligned_alloc (alignment > 0; bytes a multiple of
// it) or malloc (alignment 0). Out of memory ends the process with a message naming the
// request, as Swift's own allocations do, rather than with a write through a null pointer.
static void *sk_scratch(size_t alignment, size_t bytes, const char *what) {
    void *p = alignment ? aligned_alloc(alignment, bytes) : malloc(bytes);
    if (!p) {
        fprintf(stderr, "CSparseKernels: out of memory: %zu bytes of scratch for %s\n", bytes, what);
        abort();
    }
    return p;
}

// FN(name) is name##SUFFIX: each template below is included once per instruction set, with
// its own SUFFIX and ATTR.
#define CAT_(a, b) a##b
#define CAT(a, b) CAT_(a, b)
#define FN(name) CAT(name, SUFFIX)

// ---- float ----
#define T float
#define VEC vf8
#define VECU vf8u
#define L 8
#define SUFFIX f_generic
#define ATTR
#include "kernel_template.h"
#include "float_template.h"
#undef SUFFIX
#undef ATTR
#if SK_X86
#define SUFFIX f_avx2
#define ATTR AVX2_ATTR
#include "kernel_template.h"
#include "float_template.h"
#undef SUFFIX
#undef ATTR
#endif
#undef T
#undef VEC
#undef VECU
#undef L


// ---- double ----
#define T double
#define VEC vd4
#define VECU vd4u
#define L 4
#define SUFFIX d_generic
#define ATTR
#include "kernel_template.h"
#undef SUFFIX
#undef ATTR
#if SK_X86
#define SUFFIX d_avx2
#define ATTR AVX2_ATTR
#include "kernel_template.h"
#undef SUFFIX
#undef ATTR
#endif
#undef T
#undef VEC
#undef VECU
#undef L

static int avx2_disabled = 0;

void sk_disable_avx2(int disabled) { avx2_disabled = disabled; }

int sk_uses_avx2(void) {
#if SK_X86
    static int supported = -1;
    if (supported < 0) {
        __builtin_cpu_init();
        supported = __builtin_cpu_supports("avx2") ? 1 : 0;
    }
    return supported && !avx2_disabled;
#else
    return 0;
#endif
}

#if SK_X86
#define DISPATCH(name, ty, ...) \
    do { if (sk_uses_avx2()) name##ty##_avx2(__VA_ARGS__); else name##ty##_generic(__VA_ARGS__); } while (0)
#else
#define DISPATCH(name, ty, ...) name##ty##_generic(__VA_ARGS__)
#endif

// The entry points: scratch for one 256-byte slice of outputs (64 floats, 32 doubles) per row
// of a block (forward) and per input (weight gradient), then the kernel for the CPU.
#define SPARSE_LAYER_KERNELS(T, ty)                                                                \
    void sk_affine_##ty(int32_t rows, int32_t inputs, int32_t block_rows, const int32_t *col_starts, \
                        const int32_t *rix, const T *vals, const T *wt, int32_t ldw, const T *bias,  \
                        T *out, int32_t ldo, int32_t o0, int32_t o1) {                             \
        T *acc_block = sk_scratch(64, 256 * (size_t)(block_rows > 0 ? block_rows : 1),             \
                "sk_affine");                                                                      \
        DISPATCH(affine_, ty, rows, inputs, block_rows, col_starts, rix, vals, wt, ldw, bias, out, \
                 ldo, o0, o1, acc_block);                                                          \
        free(acc_block);                                                                           \
    }                                                                                              \
    void sk_weight_gradient_##ty(int32_t rows, int32_t inputs, int32_t block_rows,                 \
                                 const int32_t *col_starts, const int32_t *rix, const T *vals,     \
                                 const T *g, int32_t ldg, T *gw, int64_t ldgw, int32_t o0,         \
                                 int32_t o1) {                                                     \
        T *scratch = sk_scratch(64, 256 * (size_t)(inputs > 0 ? inputs : 1),                       \
                "sk_weight_gradient");                                                             \
        T *g_block = sk_scratch(64, 256 * (size_t)(block_rows > 0 ? block_rows : 1),               \
                "sk_weight_gradient");                                                             \
        DISPATCH(gradient_, ty, rows, inputs, block_rows, col_starts, rix, vals, g, ldg, gw, ldgw, \
                 o0, o1, scratch, g_block);                                                        \
        free(g_block);                                                                             \
        free(scratch);                                                                             \
    }
SPARSE_LAYER_KERNELS(float, f)
SPARSE_LAYER_KERNELS(double, d)

// Counting sort of each block's nonzeros by column; rows stay in increasing order within a
// column because the rows are visited in order.
#define COLUMN_BLOCKS(T, name)                                                                     \
    void name(int32_t rows, int32_t inputs, const int32_t *row_starts, const int32_t *columns,     \
              const T *values, int32_t block_rows, int32_t *col_starts, int32_t *out_rows,         \
              T *out_values) {                                                                     \
        int32_t blocks = (rows + block_rows - 1) / block_rows;                                     \
        for (int32_t b = 0; b < blocks; b++) {                                                     \
            int32_t r0 = b * block_rows, r1 = r0 + block_rows < rows ? r0 + block_rows : rows;    \
            int32_t *cs = col_starts + (int64_t)b * (inputs + 1);                                  \
            memset(cs, 0, sizeof(int32_t) * (size_t)(inputs + 1));                                 \
            for (int32_t e = row_starts[r0]; e < row_starts[r1]; e++) cs[columns[e] + 1]++;        \
            cs[0] = row_starts[r0];                                                                \
            for (int32_t j = 0; j < inputs; j++) cs[j + 1] += cs[j];                               \
            /* cs[j] is now the first free slot of column j; advance, then shift back. */          \
            for (int32_t s = r0; s < r1; s++) {                                                    \
                for (int32_t e = row_starts[s]; e < row_starts[s + 1]; e++) {                      \
                    int32_t slot = cs[columns[e]]++;                                               \
                    out_rows[slot] = s;                                                            \
                    out_values[slot] = values[e];                                                  \
                }                                                                                  \
            }                                                                                      \
            for (int32_t j = inputs; j > 0; j--) cs[j] = cs[j - 1];                                \
            cs[0] = row_starts[r0];                                                                \
        }                                                                                          \
    }
COLUMN_BLOCKS(float, sk_column_blocks_f)
COLUMN_BLOCKS(double, sk_column_blocks_d)

int64_t sk_count_nonzero_bytes(const uint8_t *src, const int64_t *indices, int32_t count,
                               int32_t length, int32_t *counts) {
    int64_t total = 0;
    for (int32_t i = 0; i < count; i++) {
        const uint8_t *row = src + indices[i] * (int64_t)length;
        int32_t n = 0;
        for (int32_t j = 0; j < length; j++) n += row[j] != 0;
        counts[i] = n;
        total += n;
    }
    return total;
}

// Branch-free compaction into a row buffer (a zero byte's entry is written and then
// overwritten), then a copy of the row's nonzeros into place.
#define GATHER(T, name)                                                                            \
    void name(const uint8_t *src, const int64_t *indices, int32_t row0, int32_t row1,              \
              int32_t length, T scale, const int32_t *row_starts, int32_t *columns, T *values) {   \
        int32_t cbuf[1024];                                                                        \
        T vbuf[1024];                                                                              \
        for (int32_t i = row0; i < row1; i++) {                                                    \
            const uint8_t *row = src + indices[i] * (int64_t)length;                               \
            int32_t *oc = columns + row_starts[i];                                                 \
            T *ov = values + row_starts[i];                                                        \
            for (int32_t j0 = 0; j0 < length; j0 += 1023) {                                        \
                int32_t j1 = j0 + 1023 < length ? j0 + 1023 : length, k = 0;                       \
                for (int32_t j = j0; j < j1; j++) {                                                \
                    cbuf[k] = j;                                                                   \
                    vbuf[k] = (T)row[j] * scale;                                                   \
                    k += row[j] != 0;                                                              \
                }                                                                                  \
                memcpy(oc, cbuf, sizeof(int32_t) * (size_t)k);                                     \
                memcpy(ov, vbuf, sizeof(T) * (size_t)k);                                           \
                oc += k;                                                                           \
                ov += k;                                                                           \
            }                                                                                      \
        }                                                                                          \
    }
GATHER(float, sk_gather_bytes_f)
GATHER(double, sk_gather_bytes_d)

void sk_index_bytes(const uint8_t *src, int64_t rows, int32_t length, const int64_t *starts,
                    uint16_t *columns, uint8_t *values) {
    for (int64_t i = 0; i < rows; i++) {
        const uint8_t *row = src + i * (int64_t)length;
        uint16_t *oc = columns + starts[i];
        uint8_t *ov = values + starts[i];
        int64_t k = 0;
        for (int32_t j = 0; j < length; j++) {
            if (row[j] != 0) {
                oc[k] = (uint16_t)j;
                ov[k] = row[j];
                k++;
            }
        }
    }
}

// Samples are taken from all over the data set, so each row's entries start a cache miss:
// the counting pass asks for the entries of the row GATHER_AHEAD rows on while it counts.
#define GATHER_AHEAD 8

static inline void prefetch_indexed_row(const int64_t *starts, const uint16_t *icols,
                                        const uint8_t *ivals, int64_t row) {
    const int64_t e0 = starts[row], e1 = starts[row + 1];
    for (int64_t e = e0; e < e1; e += 32) __builtin_prefetch(icols + e);
    __builtin_prefetch(icols + e1 - 1);
    for (int64_t e = e0; e < e1; e += 64) __builtin_prefetch(ivals + e);
    __builtin_prefetch(ivals + e1 - 1);
}

// The counting sort of COLUMN_BLOCKS, reading each row's entries from the index.
#define COLUMN_BLOCKS_INDEXED(T, name)                                                             \
    void name(const int64_t *starts, const uint16_t *icols, const uint8_t *ivals,                  \
              const int64_t *indices, int32_t rows, int32_t inputs, T scale, int32_t block_rows,   \
              int32_t *col_starts, int32_t *out_rows, T *out_values) {                             \
        int32_t blocks = (rows + block_rows - 1) / block_rows, base = 0;                           \
        for (int32_t b = 0; b < blocks; b++) {                                                     \
            int32_t r0 = b * block_rows, r1 = r0 + block_rows < rows ? r0 + block_rows : rows;    \
            int32_t *cs = col_starts + (int64_t)b * (inputs + 1);                                  \
            memset(cs, 0, sizeof(int32_t) * (size_t)(inputs + 1));                                 \
            for (int32_t s = r0; s < r1; s++) {                                                    \
                if (s + GATHER_AHEAD < rows) prefetch_indexed_row(starts, icols, ivals, indices[s + GATHER_AHEAD]); \
                const int64_t e1 = starts[indices[s] + 1];                                         \
                for (int64_t e = starts[indices[s]]; e < e1; e++) cs[icols[e] + 1]++;              \
            }                                                                                      \
            cs[0] = base;                                                                          \
            for (int32_t j = 0; j < inputs; j++) cs[j + 1] += cs[j];                               \
            for (int32_t s = r0; s < r1; s++) {                                                    \
                const int64_t e1 = starts[indices[s] + 1];                                         \
                for (int64_t e = starts[indices[s]]; e < e1; e++) {                                \
                    int32_t slot = cs[icols[e]]++;                                                 \
                    out_rows[slot] = s;                                                            \
                    out_values[slot] = (T)ivals[e] * scale;                                        \
                }                                                                                  \
            }                                                                                      \
            /* cs[j] is now the end of column j; shift back, as COLUMN_BLOCKS does. */              \
            for (int32_t j = inputs; j > 0; j--) cs[j] = cs[j - 1];                                \
            cs[0] = base;                                                                          \
            base = cs[inputs];                                                                     \
        }                                                                                          \
    }
COLUMN_BLOCKS_INDEXED(float, sk_column_blocks_indexed_f)
COLUMN_BLOCKS_INDEXED(double, sk_column_blocks_indexed_d)

#define ROWS_FROM_COLUMN_BLOCKS(T, name)                                                           \
    void name(int32_t rows, int32_t inputs, int32_t block_rows, const int32_t *col_starts,        \
              const int32_t *rix, const T *bvals, int32_t *row_starts, int32_t *columns,           \
              T *values) {                                                                         \
        int32_t blocks = (rows + block_rows - 1) / block_rows;                                     \
        memset(row_starts, 0, sizeof(int32_t) * (size_t)(rows + 1));                               \
        for (int32_t b = 0; b < blocks; b++) {                                                     \
            const int32_t *cs = col_starts + (int64_t)b * (inputs + 1);                            \
            for (int32_t e = cs[0]; e < cs[inputs]; e++) row_starts[rix[e] + 1]++;                 \
        }                                                                                          \
        for (int32_t s = 0; s < rows; s++) row_starts[s + 1] += row_starts[s];                     \
        int32_t *next = sk_scratch(0, sizeof(int32_t) * (size_t)(rows > 0 ? rows : 1),             \
                "rows from column blocks");                                                        \
        memcpy(next, row_starts, sizeof(int32_t) * (size_t)rows);                                  \
        for (int32_t b = 0; b < blocks; b++) {                                                     \
            const int32_t *cs = col_starts + (int64_t)b * (inputs + 1);                            \
            for (int32_t j = 0; j < inputs; j++) {                                                 \
                for (int32_t e = cs[j]; e < cs[j + 1]; e++) {                                      \
                    int32_t slot = next[rix[e]]++;                                                 \
                    columns[slot] = j;                                                             \
                    values[slot] = bvals[e];                                                       \
                }                                                                                  \
            }                                                                                      \
        }                                                                                          \
        free(next);                                                                                \
    }
ROWS_FROM_COLUMN_BLOCKS(float, sk_rows_from_column_blocks_f)
ROWS_FROM_COLUMN_BLOCKS(double, sk_rows_from_column_blocks_d)

// ---- one sparse vector against a dense row-major matrix (per-sample steps) ----

// Scratch of the row-list kernels (kernel_template.h): the listed rows and their values
// (`room` of each) and `cols` scaled entries of a rank-1 update; on the stack when small.
#define ROW_SCRATCH(T, room, cols)                                                                 \
    const int32_t room_ = (room), cols_ = (cols);                                                  \
    const T *rows_small[256];                                                                      \
    T xs_small[256], a_small[512];                                                                 \
    const T **rows = room_ <= 256 ? rows_small : sk_scratch(0, sizeof(T *) * (size_t)room_,        \
            "a row list");                                                                         \
    T *xs = room_ <= 256 ? xs_small : sk_scratch(0, sizeof(T) * (size_t)room_, "a row list");      \
    T *a = cols_ <= 512 ? a_small : sk_scratch(0, sizeof(T) * (size_t)cols_, "a rank-1 update");   \
    (void)a;
#define ROW_SCRATCH_FREE                                                                           \
    if (room_ > 256) { free(rows); free(xs); }                                                     \
    if (cols_ > 512) free(a);


#define BLOCK_KERNELS(T, ty, LANES)                                                                \
    void sk_block_matvec_##ty(int32_t rows, const T *w, int64_t ldw, int32_t nb,                   \
                              const int32_t *blocks, const T *bvals, int32_t nt,                   \
                              const int32_t *tidx, const T *tvals, T *y) {                         \
        DISPATCH(block_matvec_, ty, rows, w, ldw, nb, blocks, bvals, nt, tidx, tvals, y);          \
    }                                                                                              \
    void sk_block_ger_##ty(int32_t rows, T *w, int64_t ldw, T alpha, const T *u, int32_t nb,       \
                           const int32_t *blocks, const T *bvals, int32_t nt,                      \
                           const int32_t *tidx, const T *tvals) {                                  \
        DISPATCH(block_ger_, ty, rows, w, ldw, alpha, u, nb, blocks, bvals, nt, tidx, tvals);      \
    }                                                                                              \
    void sk_block_vecmat_##ty(int32_t cols, const T *w, int64_t ldw, int32_t nb,                  \
                              const int32_t *blocks, const T *bvals, int32_t nt,                   \
                              const int32_t *tidx, const T *tvals, const T *bias, T *y) {          \
        ROW_SCRATCH(T, nb * LANES + nt, 0)                                                         \
        DISPATCH(block_vecmat_, ty, cols, w, ldw, nb, blocks, bvals, nt, tidx, tvals, bias, y,     \
                 rows, xs);                                                                        \
        ROW_SCRATCH_FREE                                                                           \
    }                                                                                              \
    void sk_block_rows_ger_##ty(int32_t cols, T *w, int64_t ldw, T alpha, const T *u, int32_t nb,  \
                                const int32_t *blocks, const T *bvals, int32_t nt,                 \
                                const int32_t *tidx, const T *tvals) {                             \
        ROW_SCRATCH(T, nb * LANES + nt, cols)                                                      \
        DISPATCH(block_rows_ger_, ty, cols, w, ldw, alpha, u, nb, blocks, bvals, nt, tidx, tvals,  \
                 rows, xs, a);                                                                     \
        ROW_SCRATCH_FREE                                                                           \
    }                                                                                              \
    void sk_dense_vecmat_##ty(int32_t n, int32_t cols, const T *w, int64_t ldw, const T *x,      \
                              const T *bias, T *y) {                                               \
        ROW_SCRATCH(T, n, 0)                                                                       \
        DISPATCH(dense_vecmat_, ty, n, cols, w, ldw, x, bias, y, rows, xs);                        \
        ROW_SCRATCH_FREE                                                                           \
    }                                                                                              \
    void sk_dense_rows_ger_##ty(int32_t n, int32_t cols, T *w, int64_t ldw, T alpha, const T *u,   \
                                const T *x) {                                                      \
        ROW_SCRATCH(T, n, cols)                                                                    \
        DISPATCH(dense_rows_ger_, ty, n, cols, w, ldw, alpha, u, x, rows, xs, a);                  \
        ROW_SCRATCH_FREE                                                                           \
    }                                                                                              \
    void sk_block_compress_##ty(const T *x, int32_t n, int32_t *blocks, T *bvals, int32_t *nb,     \
                                int32_t *tidx, T *tvals, int32_t *nt) {                            \
        int32_t b = 0, t = 0, j = 0;                                                               \
        for (; j + LANES <= n; j += LANES) {                                                       \
            int any = 0;                                                                           \
            for (int q = 0; q < LANES; q++) {                                                      \
                bvals[(int64_t)b * LANES + q] = x[j + q];                                          \
                any |= x[j + q] != 0;                                                              \
            }                                                                                      \
            blocks[b] = j;                                                                         \
            b += any;                                                                              \
        }                                                                                          \
        for (; j < n; j++) {                                                                       \
            tidx[t] = j;                                                                           \
            tvals[t] = x[j];                                                                       \
            t += x[j] != 0;                                                                        \
        }                                                                                          \
        *nb = b;                                                                                   \
        *nt = t;                                                                                   \
    }
#define BLOCK_COUNT(T, ty, LANES)                                                                  \
    int32_t sk_block_count_##ty(const T *x, int32_t n, int32_t stop_above) {                       \
        int32_t kept = 0;                                                                          \
        for (int32_t j = 0; j < n && kept <= stop_above; j += LANES) {                             \
            int any = 0;                                                                           \
            for (int32_t q = j; q < j + LANES && q < n; q++) any |= x[q] != 0;                     \
            kept += any;                                                                           \
        }                                                                                          \
        return kept;                                                                               \
    }
BLOCK_KERNELS(float, f, 8)
BLOCK_KERNELS(double, d, 4)
BLOCK_COUNT(float, f, 8)
BLOCK_COUNT(double, d, 4)

// ---- Float-only kernels (float_template.h) ----

void sk_exp_f(const float *x, float *y, int64_t n) { DISPATCH(exp_, f, x, y, n); }
void sk_logistic_f(const float *x, float *y, int64_t n) { DISPATCH(logistic_, f, x, y, n); }
void sk_logistic_pullback_f(const float *g, const float *y, float *out, int64_t n) {
    DISPATCH(logistic_pullback_, f, g, y, out, n);
}
void sk_add_f(float *total, const float *g, int64_t n) { DISPATCH(add_, f, total, g, n); }
void sk_sum_f(float *out, const float *a, const float *b, int64_t n) { DISPATCH(sum_, f, out, a, b, n); }
void sk_adam_f(float *m, float *v, float *p, const float *sum, int64_t n, float scale, float b1, float b2,
               float eps, float step_size, float root2) {
    DISPATCH(adam_, f, m, v, p, sum, NULL, n, scale, b1, b2, eps, step_size, root2);
}
void sk_adam_sum2_f(float *m, float *v, float *p, const float *a, const float *b, int64_t n, float scale,
                    float b1, float b2, float eps, float step_size, float root2) {
    DISPATCH(adam_, f, m, v, p, a, b, n, scale, b1, b2, eps, step_size, root2);
}
