#ifndef SPARSE_KERNELS_H
#define SPARSE_KERNELS_H

#include <stdint.h>

// Kernels for a dense layer whose input batch is sparse (compressed sparse rows): the Engine's
// `sparseAffine`. Every output entry is summed in a fixed order (forward: the bias, then the
// row's nonzeros in column order; weight gradient: the samples in row order), whatever the
// instruction set chosen at run time (AVX2 or portable; multiplication and addition are never
// fused) and however the outputs are split between threads, so the results are the same bits.

#ifdef __cplusplus
extern "C" {
#endif

/// Forward, outputs [o0, o1) of every row: out[s * ldo + o] = bias[o] + sum over the nonzeros
/// (j, x) of row s, in column order, of x * wt[j * ldw + o]. The nonzeros come as the column
/// blocks of `sk_column_blocks_*` (blocks of `block_rows` rows; 64 keeps a block's sums for a
/// slice of 64 outputs, 16 KB in float, in L1). `wt` is the weight matrix stored by input
/// (inputs x ldw: row j holds input j's weights), `bias` holds at least `ldw` entries; ldw is
/// a multiple of 8; o0 is a multiple of 8.
void sk_affine_f(int32_t rows, int32_t inputs, int32_t block_rows, const int32_t *col_starts,
                 const int32_t *rix, const float *vals, const float *wt, int32_t ldw,
                 const float *bias, float *out, int32_t ldo, int32_t o0, int32_t o1);
void sk_affine_d(int32_t rows, int32_t inputs, int32_t block_rows, const int32_t *col_starts,
                 const int32_t *rix, const double *vals, const double *wt, int32_t ldw,
                 const double *bias, double *out, int32_t ldo, int32_t o0, int32_t o1);

/// Builds, for each block of `block_rows` consecutive rows, the block's nonzeros ordered by
/// column then row (compressed sparse columns): block b's column j holds entries
/// [col_starts[b * (inputs + 1) + j], col_starts[b * (inputs + 1) + j + 1]) of `out_rows` and
/// `out_values` (global indices into arrays of nnz entries). `col_starts` has
/// ceil(rows / block_rows) * (inputs + 1) entries.
void sk_column_blocks_f(int32_t rows, int32_t inputs, const int32_t *row_starts,
                        const int32_t *columns, const float *values, int32_t block_rows,
                        int32_t *col_starts, int32_t *out_rows, float *out_values);
void sk_column_blocks_d(int32_t rows, int32_t inputs, const int32_t *row_starts,
                        const int32_t *columns, const double *values, int32_t block_rows,
                        int32_t *col_starts, int32_t *out_rows, double *out_values);

/// Weight gradient, outputs [o0, o1): gw[j * ldgw + o] = sum over the rows s, in order, of
/// x[s, j] * g[s * ldg + o] (the gradient of `x * w` with respect to w, inputs x outputs,
/// stored by input like the weights), from the column blocks of `sk_column_blocks_*` (`g` is
/// rows x ldg; nothing past o1 - 1 of a row is read). o0 is a multiple of 8.
void sk_weight_gradient_f(int32_t rows, int32_t inputs, int32_t block_rows,
                          const int32_t *col_starts, const int32_t *block_row_index,
                          const float *block_values, const float *g, int32_t ldg,
                          float *gw, int64_t ldgw, int32_t o0, int32_t o1);
void sk_weight_gradient_d(int32_t rows, int32_t inputs, int32_t block_rows,
                          const int32_t *col_starts, const int32_t *block_row_index,
                          const double *block_values, const double *g, int32_t ldg,
                          double *gw, int64_t ldgw, int32_t o0, int32_t o1);

/// Counts the nonzero bytes of each of `count` rows of `length` bytes, rows taken at
/// src + indices[i] * length; writes counts[i]; returns the total.
int64_t sk_count_nonzero_bytes(const uint8_t *src, const int64_t *indices, int32_t count,
                               int32_t length, int32_t *counts);

/// Gathers rows row0 ..< row1 of a byte matrix as sparse rows: row i is taken at
/// src + indices[i] * length; its nonzero bytes go, in column order, to columns[] and (times
/// `scale`) values[] from row_starts[i] on (row_starts as counted by sk_count_nonzero_bytes).
void sk_gather_bytes_f(const uint8_t *src, const int64_t *indices, int32_t row0, int32_t row1,
                       int32_t length, float scale, const int32_t *row_starts, int32_t *columns,
                       float *values);
void sk_gather_bytes_d(const uint8_t *src, const int64_t *indices, int32_t row0, int32_t row1,
                       int32_t length, double scale, const int32_t *row_starts, int32_t *columns,
                       double *values);

/// Indexes the nonzero bytes of rows 0 ..< rows of a row-major byte matrix with `length`
/// (at most 65536) columns: row i's nonzeros go, in column order, to columns[] and values[]
/// from starts[i] on, where starts (rows + 1 entries) must already hold the running count of
/// nonzeros (starts[0] = 0; sk_count_nonzero_bytes counts them).
void sk_index_bytes(const uint8_t *src, int64_t rows, int32_t length, const int64_t *starts,
                    uint16_t *columns, uint8_t *values);

/// The column blocks of sk_column_blocks_* built straight from an index (sk_index_bytes), for
/// the matrix whose row s is indexed row indices[s] with its bytes times `scale`: the same
/// arrays, without forming the rows first. The blocks' entries start at 0.
void sk_column_blocks_indexed_f(const int64_t *starts, const uint16_t *index_columns,
                                const uint8_t *index_values, const int64_t *indices, int32_t rows,
                                int32_t inputs, float scale, int32_t block_rows,
                                int32_t *col_starts, int32_t *out_rows, float *out_values);
void sk_column_blocks_indexed_d(const int64_t *starts, const uint16_t *index_columns,
                                const uint8_t *index_values, const int64_t *indices, int32_t rows,
                                int32_t inputs, double scale, int32_t block_rows,
                                int32_t *col_starts, int32_t *out_rows, double *out_values);

/// The rows (compressed sparse rows) of a matrix given by its column blocks: row_starts
/// (rows + 1 entries), columns[] and values[] in column order within each row.
void sk_rows_from_column_blocks_f(int32_t rows, int32_t inputs, int32_t block_rows,
                                  const int32_t *col_starts, const int32_t *block_rows_index,
                                  const float *block_values, int32_t *row_starts,
                                  int32_t *columns, float *values);
void sk_rows_from_column_blocks_d(int32_t rows, int32_t inputs, int32_t block_rows,
                                  const int32_t *col_starts, const int32_t *block_rows_index,
                                  const double *block_values, int32_t *row_starts,
                                  int32_t *columns, double *values);

/// A vector as blocks: `sk_block_compress_*` keeps the blocks of L consecutive entries
/// (L = 8 floats or 4 doubles, 32 bytes) that hold a nonzero, as their first column
/// (`blocks[b]`, a multiple of L) and their L values (`bvals[b * L ..< b * L + L]`), and of the
/// last n % L entries the nonzeros (`tidx[t]`, `tvals[t]`). Room needed: n / L blocks, n values,
/// L - 1 tail entries. The products below skip the other blocks, at full SIMD width on the rest.
void sk_block_compress_f(const float *x, int32_t n, int32_t *blocks, float *bvals, int32_t *nb,
                         int32_t *tidx, float *tvals, int32_t *nt);
void sk_block_compress_d(const double *x, int32_t n, int32_t *blocks, double *bvals, int32_t *nb,
                         int32_t *tidx, double *tvals, int32_t *nt);

/// The number of blocks of L entries of x[0 ..< n] (the last one possibly shorter) that hold a
/// nonzero, counting stopped as soon as it exceeds stop_above (a quick test for dense vectors).
int32_t sk_block_count_f(const float *x, int32_t n, int32_t stop_above);
int32_t sk_block_count_d(const double *x, int32_t n, int32_t stop_above);

/// y[r] = row r of the row-major matrix w (leading dimension ldw) times the blocked vector, for
/// r < rows: per row, lane-wise sums over the blocks in order, the lanes added in lane order,
/// then the tail's products in order (the same bits with AVX2 or without).
void sk_block_matvec_f(int32_t rows, const float *w, int64_t ldw, int32_t nb, const int32_t *blocks,
                       const float *bvals, int32_t nt, const int32_t *tidx, const float *tvals, float *y);
void sk_block_matvec_d(int32_t rows, const double *w, int64_t ldw, int32_t nb, const int32_t *blocks,
                       const double *bvals, int32_t nt, const int32_t *tidx, const double *tvals, double *y);

/// w[r, j] += (alpha * u[r]) * x[j] for every r < rows and every entry j of the blocked vector
/// (its blocks and tail): adds alpha * u xᵀ, touching only x's blocks.
void sk_block_ger_f(int32_t rows, float *w, int64_t ldw, float alpha, const float *u, int32_t nb,
                    const int32_t *blocks, const float *bvals, int32_t nt, const int32_t *tidx,
                    const float *tvals);
void sk_block_ger_d(int32_t rows, double *w, int64_t ldw, double alpha, const double *u, int32_t nb,
                    const int32_t *blocks, const double *bvals, int32_t nt, const int32_t *tidx,
                    const double *tvals);

/// y[o] = bias[o] (0 when bias is NULL) + the sum over the nonzeros (j, x) of the blocked
/// vector, in column order, of x * w[j * ldw + o], for o < cols: the blocked vector times a
/// matrix stored by input (row j holds input j's weights), each output summed in the order of
/// sk_affine_* (so a sample's outputs are the same bits as its row of a sparse batch's).
void sk_block_vecmat_f(int32_t cols, const float *w, int64_t ldw, int32_t nb, const int32_t *blocks,
                       const float *bvals, int32_t nt, const int32_t *tidx, const float *tvals,
                       const float *bias, float *y);
void sk_block_vecmat_d(int32_t cols, const double *w, int64_t ldw, int32_t nb, const int32_t *blocks,
                       const double *bvals, int32_t nt, const int32_t *tidx, const double *tvals,
                       const double *bias, double *y);

/// w[j * ldw + o] += (alpha * u[o]) * x for every nonzero (j, x) of the blocked vector and
/// every o < cols: adds alpha * x uᵀ to a matrix stored by input, touching only the rows of
/// x's nonzeros, each a contiguous run of cols entries.
void sk_block_rows_ger_f(int32_t cols, float *w, int64_t ldw, float alpha, const float *u, int32_t nb,
                         const int32_t *blocks, const float *bvals, int32_t nt, const int32_t *tidx,
                         const float *tvals);
void sk_block_rows_ger_d(int32_t cols, double *w, int64_t ldw, double alpha, const double *u, int32_t nb,
                         const int32_t *blocks, const double *bvals, int32_t nt, const int32_t *tidx,
                         const double *tvals);

/// sk_block_vecmat_* and sk_block_rows_ger_* for a dense x[0 ..< n] (its zeros skipped, so
/// that a zero input leaves its row untouched): y[o] = bias[o] (0 when NULL) + the sum over j in
/// order of x[j] * w[j * ldw + o]; and w[j * ldw + o] += (alpha * u[o]) * x[j]. For the small
/// layers of a per-sample step, where a BLAS call costs more than its arithmetic.
void sk_dense_vecmat_f(int32_t n, int32_t cols, const float *w, int64_t ldw, const float *x,
                       const float *bias, float *y);
void sk_dense_vecmat_d(int32_t n, int32_t cols, const double *w, int64_t ldw, const double *x,
                       const double *bias, double *y);
void sk_dense_rows_ger_f(int32_t n, int32_t cols, float *w, int64_t ldw, float alpha, const float *u,
                         const float *x);
void sk_dense_rows_ger_d(int32_t n, int32_t cols, double *w, int64_t ldw, double alpha, const double *u,
                         const double *x);

/// y[i] = e^x[i] for i < n (accurate to a couple of ulp; libm's expf for NaN, overflow and
/// results below the smallest normal float).
void sk_exp_f(const float *x, float *y, int64_t n);

/// y[i] = 1 / (1 + e^-x[i]) for i < n, on the same e^x.
void sk_logistic_f(const float *x, float *y, int64_t n);

/// out[i] = g[i] * y[i] * (1 - y[i]) for i < n: the logistic function's pullback of g, given
/// its result y.
void sk_logistic_pullback_f(const float *g, const float *y, float *out, int64_t n);

/// total[i] += g[i] for i < n (a shard's gradient added to a batch's sum).
void sk_add_f(float *total, const float *g, int64_t n);

/// out[i] = a[i] + b[i] for i < n (two partial gradient sums into a third buffer; out may be a
/// or b).
void sk_sum_f(float *out, const float *a, const float *b, int64_t n);

/// One Adam step on n parameters p, with moments m and v, against the mean gradient
/// sum[i] * scale; step_size is lr / (1 - b1^t) and root2 sqrt(1 - b2^t). Per entry, as
/// separate IEEE operations: g = sum * scale; m = b1 m + (1 - b1) g; v = b2 v + ((1 - b2) g) g;
/// p = p - (step_size m) / (sqrt(v) / root2 + eps).
void sk_adam_f(float *m, float *v, float *p, const float *sum, int64_t n, float scale, float b1, float b2,
               float eps, float step_size, float root2);

/// sk_adam_f on the sum a[i] + b[i] (one float addition per entry, the bits sk_sum_f would
/// have stored): the two halves of a batch's last addition read once, with no sum written
/// and read back.
void sk_adam_sum2_f(float *m, float *v, float *p, const float *a, const float *b, int64_t n, float scale,
                    float b1, float b2, float eps, float step_size, float root2);

/// Whether the AVX2 kernels are in use (1) or the portable ones (0).
int sk_uses_avx2(void);

/// Turns the AVX2 kernels off (1) or back on (0), for tests of the portable ones (not
/// thread-safe: call it while no kernel runs).
void sk_disable_avx2(int disabled);

#ifdef __cplusplus
}
#endif

#endif
