"""PyTorch peer numbers for BENCHMARKS.md, measured on the same machine in the same session as ours.

The same 784-300-100-10 network (logistic hidden layers, softmax cross-entropy, float32) on MNIST.

  python bench/torch_reference.py step [data/mnist]     batched 5000-point step, 1 and 2 threads
  python bench/torch_reference.py sample [data/mnist]   the tutorial's per-sample SGD, s per 5000
  python bench/torch_reference.py ddp [data/mnist]      one epoch (12 steps of 5000, Adam):
                                                        DistributedDataParallel over gloo with
                                                        2 single-thread processes, and one
                                                        process with 2 threads

PyTorch comes from PyPI (`pip install torch`); CPU only here.
"""
import os, sys, time
import numpy as np
import mnist_idx
import torch
import torch.nn.functional as F

mode = sys.argv[1] if len(sys.argv) > 1 else "step"
root = sys.argv[2] if len(sys.argv) > 2 else "data/mnist"


def idx(name):
    return mnist_idx.idx(root, name)


X = torch.from_numpy(idx("train-images-idx3-ubyte").reshape(60000, 784).astype(np.float32) / 255)
Y = torch.from_numpy(idx("train-labels-idx1-ubyte").astype(np.int64))


def network(seed=1):
    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Linear(784, 300), torch.nn.Sigmoid(),
                              torch.nn.Linear(300, 100), torch.nn.Sigmoid(),
                              torch.nn.Linear(100, 10))
    with torch.no_grad():
        for p in net.parameters():
            p.uniform_(-0.5, 0.5)
    return net


def median(values):
    values = sorted(values)
    return values[len(values) // 2]


def batched_step(threads, repetitions=15, n=5000):
    torch.set_num_threads(threads)
    net = network()
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    perm = torch.randperm(60000, generator=torch.Generator().manual_seed(1))
    times = []
    for r in range(repetitions + 1):
        idx_ = perm[(r * n) % 60000:(r * n) % 60000 + n]
        t0 = time.perf_counter()
        x = X[idx_]; y = Y[idx_]       # the gather is part of our step too
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(net(x), y, reduction="sum")
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - t0)
    return median(times[1:])


def per_sample(n=5000, rate=0.02):
    torch.set_num_threads(1)
    net = network()
    opt = torch.optim.SGD(net.parameters(), lr=rate)
    t0 = time.perf_counter()
    for k in range(n):
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(net(X[k:k + 1]), Y[k:k + 1])
        loss.backward()
        opt.step()
    return time.perf_counter() - t0


def epoch(net, opt, rank, world, steps=12, n=5000):
    perm = torch.randperm(60000, generator=torch.Generator().manual_seed(1))
    t0 = time.perf_counter()
    for s in range(steps):
        batch = perm[s * n:(s + 1) * n]
        mine = batch[rank * n // world:(rank + 1) * n // world]
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(net(X[mine]), Y[mine], reduction="sum") / n * world
        loss.backward()        # DDP averages over the world: mean over the whole batch
        opt.step()
    return time.perf_counter() - t0


def ddp_worker(rank, world, port, results):
    import torch.distributed as dist
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    net = torch.nn.parallel.DistributedDataParallel(network())
    opt = torch.optim.Adam(net.parameters(), lr=0.01)
    epoch(net, opt, rank, world, steps=2)           # warm-up: buckets, allocator
    dist.barrier()
    seconds = epoch(net, opt, rank, world)
    dist.barrier()
    results[rank] = seconds
    dist.destroy_process_group()


if __name__ == "__main__":
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads available, "
          f"{torch.backends.cpu.get_cpu_capability()}")
    if mode == "step":
        for threads in (1, 2):
            print(f"torch batched step (5000 points, gather + forward + backward + SGD), {threads} thread(s): "
                  f"{batched_step(threads) * 1e3:.1f} ms (median of 15)")
    elif mode == "sample":
        print(f"torch per-sample SGD: {median([per_sample() for _ in range(3)]):.2f} s per 5000 points (median of 3)")
    elif mode == "ddp":
        import torch.multiprocessing as mp
        runs = []
        for r in range(3):
            results = mp.Manager().dict()
            mp.spawn(ddp_worker, args=(2, 29500 + r, results), nprocs=2, join=True)
            runs.append(max(results.values()))
        print(f"torch DDP gloo, 2 processes x 1 thread: one epoch {median(runs):.3f} s "
              f"(runs: {', '.join(f'{t:.3f}' for t in runs)})")
        for threads in (2, 1):
            torch.set_num_threads(threads)
            single = []
            for r in range(3):
                net = network(); opt = torch.optim.Adam(net.parameters(), lr=0.01)
                epoch(net, opt, 0, 1, steps=2)
                single.append(epoch(net, opt, 0, 1))
            print(f"torch one process, {threads} thread(s): one epoch {median(single):.3f} s "
                  f"(runs: {', '.join(f'{t:.3f}' for t in single)})")
