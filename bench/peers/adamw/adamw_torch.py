#!/usr/bin/python3
"""Peer for optim's BenchmarkAdamW: torch.optim.AdamW on the same buffer size.

Run (Debian python3-torch) in the same sitting as the Go benchmark:

    /usr/bin/python3 bench/peers/adamw/adamw_torch.py
    go test ./optim -run '^$' -bench AdamW -benchtime 10x -count 3

Prints the median ms per update of 8M float32 parameters for torch's
single-tensor path (foreach=False, what fmtrain reproduces bit for bit) and
its multi-tensor path (foreach=True, one tensor here), with 2 threads.
"""
import statistics
import time

import torch

torch.set_num_threads(2)
n = 8 << 20
for foreach in (False, True):
    p = torch.nn.Parameter(torch.rand(n))
    p.grad = torch.rand(n) - 0.5
    opt = torch.optim.AdamW([p], lr=1e-4, weight_decay=0.01, foreach=foreach)
    for _ in range(3):
        opt.step()
    times = []
    for _ in range(10):
        t0 = time.perf_counter()
        opt.step()
        times.append((time.perf_counter() - t0) * 1e3)
    print(f"torch {torch.__version__} AdamW foreach={foreach}: median {statistics.median(times):.1f} ms, min {min(times):.1f} ms")
