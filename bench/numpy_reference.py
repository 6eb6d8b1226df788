"""Peer numbers for BENCHMARKS.md: the same network in numpy (float32), measured in the same
session as engine-bench. Usage: OPENBLAS_NUM_THREADS=1 python3 bench/numpy_reference.py [data/mnist]
Prints seconds per 5000-point per-sample SGD batch and ms per batched 5000-point step."""
import os, sys, time
import numpy as np
import mnist_idx

root = sys.argv[1] if len(sys.argv) > 1 else "data/mnist"

def idx(name):
    return mnist_idx.idx(root, name)

X = idx("train-images-idx3-ubyte").reshape(60000, 784).astype(np.float32) / 255
Y = idx("train-labels-idx1-ubyte").astype(np.int64)
rng = np.random.default_rng(1)
sizes = [784, 300, 100, 10]
W = [rng.uniform(-0.5, 0.5, (o, i)).astype(np.float32) for i, o in zip(sizes, sizes[1:])]
B = [rng.uniform(-0.5, 0.5, o).astype(np.float32) for o in sizes[1:]]

def sigmoid(z):
    return 1 / (1 + np.exp(-z))

def per_sample(n=5000, rate=np.float32(0.02)):
    t0 = time.perf_counter()
    for k in range(n):
        x = X[k]
        h1 = sigmoid(W[0] @ x + B[0]); h2 = sigmoid(W[1] @ h1 + B[1]); z = W[2] @ h2 + B[2]
        p = np.exp(z - z.max()); p /= p.sum()
        d3 = p; d3[Y[k]] -= 1
        d2 = (W[2].T @ d3) * h2 * (1 - h2); d1 = (W[1].T @ d2) * h1 * (1 - h1)
        W[2] -= rate * np.outer(d3, h2); B[2] -= rate * d3
        W[1] -= rate * np.outer(d2, h1); B[1] -= rate * d2
        W[0] -= rate * np.outer(d1, x); B[0] -= rate * d1
    return time.perf_counter() - t0

def batched(n=5000, rate=np.float32(0.1)):
    x = X[:n]; y = Y[:n]
    t0 = time.perf_counter()
    h1 = sigmoid(x @ W[0].T + B[0]); h2 = sigmoid(h1 @ W[1].T + B[1]); z = h2 @ W[2].T + B[2]
    p = np.exp(z - z.max(axis=1, keepdims=True)); p /= p.sum(axis=1, keepdims=True)
    d3 = p; d3[np.arange(n), y] -= 1
    d2 = (d3 @ W[2]) * h2 * (1 - h2); d1 = (d2 @ W[1]) * h1 * (1 - h1)
    grads = [d1.T @ x, d2.T @ h1, d3.T @ h2]
    for i in range(3):
        W[i] -= rate / n * grads[i]
    B[0] -= rate / n * d1.sum(0); B[1] -= rate / n * d2.sum(0); B[2] -= rate / n * d3.sum(0)
    return time.perf_counter() - t0

samples = sorted(per_sample() for _ in range(3))
steps = sorted(batched() for _ in range(15))
print(f"numpy {np.__version__} threads={os.environ.get('OPENBLAS_NUM_THREADS', 'default')}: "
      f"per-sample SGD {samples[1]:.3f} s per 5000 points; batched step {steps[7] * 1e3:.1f} ms (median)")
