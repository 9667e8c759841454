#!/usr/bin/env python3
"""PyTorch's own bf16 error on the FM-DiT reference vectors (CPU autocast).

Runs bench/peers/pytorch_fmdit_step.py's independent FM-DiT on every
shared/testdata/fm-dit file under torch.autocast(bfloat16) and prints, per
file, the output's relative error and the worst gradient's: the yardstick
for fmtrain's "cuda" (bf16) backend, whose tolerances docs/gpu.md explains.

    /usr/bin/python3 scripts/bf16_vectors_torch.py [vector-dir]
"""
import glob
import json
import os
import sys

import torch
import torch.nn.functional as F

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, os.path.join(ROOT, "bench", "peers"))
import pytorch_fmdit_step as peer  # noqa: E402


def main():
    vdir = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "..", "shared", "testdata", "fm-dit")
    for path in sorted(glob.glob(os.path.join(vdir, "*.safetensors"))):
        ts, meta = peer.read_safetensors(path)
        c = json.loads(meta["config"])
        model = peer.FMDiT(c["in_channels"], c["out_channels"], c["patch_size"], c["patch_size_t"], c["hidden_size"],
                           c["depth"], c["num_heads"], c["mlp_ratio"], c["text_dim"])
        params = dict(model.named_parameters())
        with torch.no_grad():
            for name, prm in params.items():
                prm.copy_(ts[name])
        x = ts["x"].clone().requires_grad_(True)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(x, ts["t"], ts["txt"], ts["mask"])
        loss = F.mse_loss(out.float(), ts["target"])
        loss.backward()
        rel = lambda a, b: ((a.double() - b.double()).norm() / b.double().norm()).item()  # noqa: E731
        grads = {"grad.x": rel(x.grad, ts["grad.x"])}
        for name, prm in params.items():
            grads["grad." + name] = rel(prm.grad, ts["grad." + name])
        worst = max(grads, key=grads.get)
        print(json.dumps({"file": os.path.basename(path), "out": rel(out.detach().float(), ts["out"]),
                          "worst_grad": worst, "worst_grad_rel": grads[worst],
                          "grads_over_2e-2": sum(v > 2e-2 for v in grads.values()), "grads": len(grads)}))


if __name__ == "__main__":
    main()
