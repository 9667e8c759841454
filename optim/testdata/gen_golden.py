#!/usr/bin/python3
"""Golden values for optim's tests, from PyTorch itself.

Regenerate (Debian: apt-get install -y python3-torch) from the repository root:

    /usr/bin/python3 optim/testdata/gen_golden.py > optim/testdata/golden.json

The Go tests only read golden.json; they never run Python.
"""
import json
import math

import torch

torch.set_num_threads(1)


def f32(t):
    return [float(x) for x in t.detach().reshape(-1).tolist()]


def adamw_case(name, n, steps, lrs, betas, eps, wd, seed):
    g = torch.Generator().manual_seed(seed)
    p = torch.randn(n, generator=g, dtype=torch.float32)
    p0 = p.clone()
    p = torch.nn.Parameter(p)
    opt = torch.optim.AdamW([p], lr=lrs[0], betas=betas, eps=eps, weight_decay=wd, foreach=False)
    grads = []
    for s in range(steps):
        gr = torch.randn(n, generator=g, dtype=torch.float32) * (0.1 + s)
        grads.append(f32(gr))
        for group in opt.param_groups:
            group["lr"] = lrs[s]
        p.grad = gr.clone()
        opt.step()
    st = opt.state[p]
    return {
        "name": name, "betas": list(betas), "eps": eps, "weight_decay": wd, "lrs": lrs,
        "params0": f32(p0), "grads": grads,
        "params": f32(p), "m": f32(st["exp_avg"]), "v": f32(st["exp_avg_sq"]),
    }


def clip_case(name, n, max_norm, scale, seed):
    g = torch.Generator().manual_seed(seed)
    gr = torch.randn(n, generator=g, dtype=torch.float32) * scale
    p = torch.nn.Parameter(torch.zeros(n))
    p.grad = gr.clone()
    norm = torch.nn.utils.clip_grad_norm_([p], max_norm=max_norm)
    return {"name": name, "max_norm": max_norm, "grads0": f32(gr), "grads": f32(p.grad), "norm": float(norm)}


out = {
    "torch": torch.__version__,
    "adamw": [
        adamw_case("defaults", 33, 6, [1e-3] * 6, (0.9, 0.999), 1e-8, 0.01, 1),
        adamw_case("scheduled-lr", 17, 8, [1e-4 * (s + 1) for s in range(8)], (0.9, 0.95), 1e-6, 0.1, 2),
        adamw_case("no-decay", 9, 4, [3e-4] * 4, (0.5, 0.9), 1e-8, 0.0, 3),
        adamw_case("large", 512, 5, [1e-4, 2e-4, 3e-4, 2e-4, 1e-4], (0.9, 0.999), 1e-8, 0.01, 7),
    ],
    "clip": [
        clip_case("clipped", 50, 1.0, 1.0, 4),
        clip_case("under", 20, 100.0, 1.0, 5),
        clip_case("tiny-max", 10, 0.01, 3.0, 6),
    ],
}
print(json.dumps(out))
