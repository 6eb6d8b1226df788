// The per-sample first layer (784 -> 300) under two weight layouts, on real MNIST images:
// the forward product with a sample's sparse pixels and the SGD update with its outer product,
// as backprop-mnist takes them once per sample.
//
//   by output (Layer's layout until the eleventh session, 300 x 784 row-major): the kernels
//     the Engine still has for a matrix stored by output (sk_block_compress_f,
//     sk_block_matvec_f, sk_block_ger_f), linked from sparse_kernels.c;
//   by input (784 x 300, Layer's layout now), in plain C: for each nonzero pixel j,
//     y += x_j * W[j, :] and W[j, :] += (-lr * x_j) * delta, contiguous rows of 300 floats
//     (the compiler may fuse the multiply-adds here; the Engine never does);
//   by input with the Engine's kernels (sk_block_vecmat_f, sk_block_rows_ger_f).
//
// The probe that decided the layout change; BENCHMARKS.md quotes it.
//
//   clang -O3 -mavx2 -mfma -ISources/CSparseKernels/include bench/first_layer_layout.c \
//         Sources/CSparseKernels/sparse_kernels.c -lm -o /tmp/first_layer_layout
//   zcat data/mnist/train-images-idx3-ubyte.gz | /tmp/first_layer_layout
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "sparse_kernels.h"

enum { IN = 784, OUT = 300, SAMPLES = 2000, ROUNDS = 9 };

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static int compare(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(void) {
    unsigned char header[16];
    if (fread(header, 1, 16, stdin) != 16 || header[2] != 8 || header[3] != 3) {
        fprintf(stderr, "first_layer_layout: expected an IDX image file on stdin (zcat data/mnist/train-images-idx3-ubyte.gz | ...)\n");
        return 2;
    }
    static unsigned char pixels[SAMPLES][IN];
    if (fread(pixels, IN, SAMPLES, stdin) != SAMPLES) {
        fprintf(stderr, "first_layer_layout: fewer than %d images on stdin\n", SAMPLES);
        return 2;
    }
    float *w = malloc(sizeof(float) * IN * OUT), *wt = malloc(sizeof(float) * IN * OUT);
    srand(7);
    for (int i = 0; i < IN * OUT; i++) w[i] = wt[i] = (float)(rand() / (RAND_MAX + 1.0)) - 0.5f;
    static float x[SAMPLES][IN], delta[SAMPLES][OUT];
    static int32_t nzj[SAMPLES][IN], nzc[SAMPLES];
    long nonzeros = 0;
    for (int s = 0; s < SAMPLES; s++) {
        nzc[s] = 0;
        for (int j = 0; j < IN; j++) {
            x[s][j] = pixels[s][j] / 255.0f;
            if (pixels[s][j]) nzj[s][nzc[s]++] = j;
        }
        nonzeros += nzc[s];
        for (int i = 0; i < OUT; i++) delta[s][i] = ((float)(rand() / (RAND_MAX + 1.0)) - 0.5f) * 1e-3f;
    }
    const float lr = 0.02f;
    float y[OUT], bvals[IN + 8], tvals[8];
    int32_t blocks[IN / 8 + 1], tidx[8], nb, nt;
    double byOutput[ROUNDS], byInput[ROUNDS], byInputEngine[ROUNDS], sink = 0;
    for (int r = 0; r < ROUNDS; r++) {
        double t0 = now();
        for (int s = 0; s < SAMPLES; s++) {
            sk_block_compress_f(x[s], IN, blocks, bvals, &nb, tidx, tvals, &nt);
            sk_block_matvec_f(OUT, w, IN, nb, blocks, bvals, nt, tidx, tvals, y);
            sink += y[s % OUT];
            sk_block_ger_f(OUT, w, IN, -lr, delta[s], nb, blocks, bvals, nt, tidx, tvals);
        }
        double t1 = now();
        for (int s = 0; s < SAMPLES; s++) {
            memset(y, 0, sizeof y);
            for (int k = 0; k < nzc[s]; k++) {
                const int j = nzj[s][k];
                const float v = x[s][j];
                const float *row = wt + (long)j * OUT;
                for (int i = 0; i < OUT; i++) y[i] += v * row[i];
            }
            sink += y[s % OUT];
            for (int k = 0; k < nzc[s]; k++) {
                const int j = nzj[s][k];
                const float a = -lr * x[s][j];
                float *row = wt + (long)j * OUT;
                for (int i = 0; i < OUT; i++) row[i] += a * delta[s][i];
            }
        }
        double t2 = now();
        for (int s = 0; s < SAMPLES; s++) {
            sk_block_compress_f(x[s], IN, blocks, bvals, &nb, tidx, tvals, &nt);
            sk_block_vecmat_f(OUT, wt, OUT, nb, blocks, bvals, nt, tidx, tvals, NULL, y);
            sink += y[s % OUT];
            sk_block_rows_ger_f(OUT, wt, OUT, -lr, delta[s], nb, blocks, bvals, nt, tidx, tvals);
        }
        double t3 = now();
        byOutput[r] = (t1 - t0) / SAMPLES * 1e6;
        byInput[r] = (t2 - t1) / SAMPLES * 1e6;
        byInputEngine[r] = (t3 - t2) / SAMPLES * 1e6;
    }
    qsort(byOutput, ROUNDS, sizeof(double), compare);
    qsort(byInput, ROUNDS, sizeof(double), compare);
    qsort(byInputEngine, ROUNDS, sizeof(double), compare);
    printf("first layer 784 -> %d, %d MNIST samples (%.0f nonzero pixels each), forward + SGD update per sample,\n",
           OUT, SAMPLES, (double)nonzeros / SAMPLES);
    printf("median of %d alternating rounds: by output (sk_block_matvec_f + sk_block_ger_f) %.2f us, by input in plain C %.2f us, "
           "by input with the Engine's kernels (sk_block_vecmat_f + sk_block_rows_ger_f) %.2f us (checksum %g)\n",
           ROUNDS, byOutput[ROUNDS / 2], byInput[ROUNDS / 2], byInputEngine[ROUNDS / 2], sink);
    return 0;
}
