#!/usr/bin/env python3
"""PyTorch eager peer of `fmctl bench step --backend cuda` on a GPU.

It runs bench/peers/pytorch_fmdit_step.py's independent FM-DiT (the same
model, step and FLOP rule) on the GPU: forward + MSE + backward +
torch.optim.AdamW, timed with a device synchronisation at the end of every
step (the CPU peer's timer would stop before the GPU finishes). --precision
bf16 runs the step under torch.autocast(bfloat16), PyTorch's usual mixed
precision (fp32 master weights and optimizer state), the counterpart of
fmtrain's "cuda" backend; fp32 disables TF32, the counterpart of "cuda-fp32".

    python3 scripts/gpu_peer.py --config bench-L --precision bf16
"""
import argparse
import json
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "bench", "peers"))
import pytorch_fmdit_step as peer  # noqa: E402

# bench-L is GPU only, so the CPU peer's table does not list it (configs.md's row).
peer.CONFIGS.setdefault("bench-L", (16, 2, 1, 1152, 28, 16, 4, 4096, 128, (1, 64, 64), 32))


def bench(name, steps, warmup, seed, precision):
    cin, p, pt, d, depth, heads, ratio, dt, S, (Fr, H, W), B = peer.CONFIGS[name]
    dev = torch.device("cuda")
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.manual_seed(seed)
    model = peer.FMDiT(cin, cin, p, pt, d, depth, heads, ratio, dt)
    model.dit_init(seed)
    model.to(dev)
    # The peer builds its position and timestep tables with torch.arange at
    # forward time: make them on the GPU too (after the CPU-generator init).
    torch.set_default_device(dev)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01)
    x = torch.randn(B, cin, Fr, H, W, device=dev)
    if Fr == 1:
        x = x[:, :, 0]
    txt = torch.randn(B, S, dt, device=dev)
    t = torch.rand(B, device=dev) * 1000
    target = torch.randn_like(x)
    times = []
    for i in range(warmup + steps):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=precision == "bf16"):
            out = model(x, t, txt)
            loss = F.mse_loss(out.float(), target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        torch.cuda.synchronize()
        if i >= warmup:
            times.append((time.perf_counter() - t0) * 1e3)
    N = (Fr // pt) * (H // p) * (W // p)
    gflop = peer.step_flops(cin, cin, p, pt, d, depth, ratio, dt, B, N, S) / 1e9
    med = statistics.median(times)
    return {
        "config": name, "precision": precision, "median_step_ms": med, "gflops": gflop / (med / 1e3),
        "step_gflop": gflop, "steps_ms": times, "warmup": warmup,
        "peak_gpu_mb": torch.cuda.max_memory_allocated() / 2**20,
        "backend": "pytorch %s eager on %s" % (torch.__version__, torch.cuda.get_device_name()),
        "loss": loss.item(),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", default="bench-S", choices=sorted(peer.CONFIGS))
    ap.add_argument("--precision", default="bf16", choices=["bf16", "fp32"])
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    print(json.dumps(bench(a.config, a.steps, a.warmup, a.seed, a.precision)))


if __name__ == "__main__":
    main()
