#!/usr/bin/env python3
"""PyTorch peer of `fmctl bench step`: an independent implementation of
shared/design/fm-dit.md in PyTorch (float32, eager, torch.optim.AdamW), timed
the same way: median of >= 10 steps (forward + MSE loss + backward + AdamW
lr 1e-4 weight decay 0.01) after 3 warm-up steps, GFLOP/s by
shared/bench/configs.md's rule, peak RSS (ru_maxrss).

    python3 bench/peers/pytorch_fmdit_step.py --config bench-S [--threads 2]
    python3 bench/peers/pytorch_fmdit_step.py --check ../shared/testdata/fm-dit/a_image.safetensors

--check runs a reference-vector file through this implementation (weights,
inputs, output, loss and every gradient) to show the peer computes the same
model as fmtrain. Needs only torch (Debian's python3-torch); the safetensors
files are parsed here.
"""
import argparse
import json
import math
import resource
import statistics
import struct
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

CONFIGS = {
    # name: (Cin=Cout, p, pt, D, L, heads, mlp_ratio, Dt, S, (F, H, W), B)
    "bench-T": (4, 2, 1, 128, 4, 4, 4, 64, 8, (1, 16, 16), 16),
    "bench-S": (4, 2, 1, 384, 12, 6, 4, 512, 32, (1, 32, 32), 8),
    "bench-V": (16, 2, 1, 256, 6, 4, 4, 256, 16, (5, 16, 16), 2),
}


def sincos(q, d):
    half = d // 2
    w = 10000.0 ** (-torch.arange(half, dtype=torch.float64) / half)
    a = q.to(torch.float64)[:, None] * w
    return torch.cat([torch.sin(a), torch.cos(a)], dim=1)


def position_table(fp, hp, wp, d):
    fi, hi, wi = torch.meshgrid(torch.arange(fp), torch.arange(hp), torch.arange(wp), indexing="ij")
    pos = torch.cat([sincos(fi.reshape(-1), d // 4), sincos(hi.reshape(-1), 3 * d // 8),
                     sincos(wi.reshape(-1), 3 * d // 8)], dim=1)
    return pos.to(torch.float32)  # computed in float64, rounded once


def timestep_sinusoid(t):
    f = torch.exp(-math.log(10000.0) * torch.arange(128, dtype=torch.float64) / 128)
    a = t.to(torch.float64)[:, None] * f
    return torch.cat([torch.cos(a), torch.sin(a)], dim=1).to(torch.float32)


class MLP2(nn.Module):
    def __init__(self, d_in, d_hidden, d_out):
        super().__init__()
        self.fc1 = nn.Linear(d_in, d_hidden)
        self.fc2 = nn.Linear(d_hidden, d_out)


class SelfAttention(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)


class CrossAttention(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.q = nn.Linear(d, d)
        self.kv = nn.Linear(d, 2 * d)
        self.proj = nn.Linear(d, d)


class Block(nn.Module):
    def __init__(self, d, m):
        super().__init__()
        self.adaLN_modulation = nn.Linear(d, 6 * d)
        self.attn = SelfAttention(d)
        self.cross_attn = CrossAttention(d)
        self.mlp = MLP2(d, m, d)


class FinalLayer(nn.Module):
    def __init__(self, d, out):
        super().__init__()
        self.adaLN_modulation = nn.Linear(d, 2 * d)
        self.linear = nn.Linear(d, out)


def attention(q, k, v, keep):
    """q [B,H,Nq,dh], k/v [B,H,Nk,dh], keep [B,Nk] bool or None."""
    s = (q @ k.transpose(-1, -2)) * (q.shape[-1] ** -0.5)
    if keep is None:
        return torch.softmax(s, dim=-1) @ v
    any_kept = keep.any(dim=1)
    # A fully masked sample attends to every key (no NaN) and is then zeroed,
    # so it gets a zero output and no gradient, as the design page says.
    keep = keep | ~any_kept[:, None]
    s = s.masked_fill(~keep[:, None, None, :], float("-inf"))
    return (torch.softmax(s, dim=-1) @ v) * any_kept[:, None, None, None].to(q.dtype)


class FMDiT(nn.Module):
    def __init__(self, cin, cout, p, pt, d, depth, heads, mlp_ratio, dt):
        super().__init__()
        self.cin, self.cout, self.p, self.pt, self.d, self.heads = cin, cout, p, pt, d, heads
        self.patch_embed = nn.Linear(cin * pt * p * p, d)
        self.t_embedder = MLP2(256, d, d)
        self.y_embedder = MLP2(dt, d, d)
        self.blocks = nn.ModuleList([Block(d, int(mlp_ratio * d)) for _ in range(depth)])
        self.final_layer = FinalLayer(d, pt * p * p * cout)
        self._pos_key, self._pos = None, None

    def dit_init(self, seed):
        g = torch.Generator().manual_seed(seed)
        for name, mod in self.named_modules():
            if not isinstance(mod, nn.Linear):
                continue
            nn.init.zeros_(mod.bias)
            if "adaLN_modulation" in name or name == "final_layer.linear":
                nn.init.zeros_(mod.weight)
            elif name.startswith("t_embedder."):
                with torch.no_grad():
                    mod.weight.normal_(0, 0.02, generator=g)
            else:
                bound = math.sqrt(6.0 / (mod.weight.shape[0] + mod.weight.shape[1]))
                with torch.no_grad():
                    mod.weight.uniform_(-bound, bound, generator=g)

    def forward(self, x, t, txt, mask=None):
        image = x.dim() == 4
        if image:
            x = x[:, :, None]
        B, C, Fr, H, W = x.shape
        p, pt, D = self.p, self.pt, self.d
        fp, hp, wp = Fr // pt, H // p, W // p
        N = fp * hp * wp
        patches = x.reshape(B, C, fp, pt, hp, p, wp, p).permute(0, 2, 4, 6, 1, 3, 5, 7).reshape(B, N, -1)
        if self._pos_key != (fp, hp, wp):
            self._pos_key, self._pos = (fp, hp, wp), position_table(fp, hp, wp, D)
        h = self.patch_embed(patches) + self._pos
        c = self.t_embedder.fc2(F.silu(self.t_embedder.fc1(timestep_sinusoid(t))))
        sc = F.silu(c)
        y = self.y_embedder.fc2(F.gelu(self.y_embedder.fc1(txt), approximate="tanh"))
        S = y.shape[1]
        heads, dh = self.heads, D // self.heads
        keep = None if mask is None else mask != 0
        ln = lambda v: F.layer_norm(v, (D,), eps=1e-6)
        for blk in self.blocks:
            sh1, sc1, g1, sh2, sc2, g2 = blk.adaLN_modulation(sc)[:, None].chunk(6, dim=2)
            a = ln(h) * (1 + sc1) + sh1
            q, k, v = blk.attn.qkv(a).reshape(B, N, 3, heads, dh).permute(2, 0, 3, 1, 4)
            o = attention(q, k, v, None).transpose(1, 2).reshape(B, N, D)
            h = h + g1 * blk.attn.proj(o)
            q = blk.cross_attn.q(ln(h)).reshape(B, N, heads, dh).transpose(1, 2)
            k, v = blk.cross_attn.kv(y).reshape(B, S, 2, heads, dh).permute(2, 0, 3, 1, 4)
            o = attention(q, k, v, keep).transpose(1, 2).reshape(B, N, D)
            h = h + blk.cross_attn.proj(o)
            u = ln(h) * (1 + sc2) + sh2
            h = h + g2 * blk.mlp.fc2(F.gelu(blk.mlp.fc1(u), approximate="tanh"))
        shift, scale = self.final_layer.adaLN_modulation(sc)[:, None].chunk(2, dim=2)
        o = self.final_layer.linear(ln(h) * (1 + scale) + shift)
        out = o.reshape(B, fp, hp, wp, pt, p, p, self.cout).permute(0, 7, 1, 4, 2, 5, 3, 6)
        out = out.reshape(B, self.cout, Fr, H, W)
        return out[:, :, 0] if image else out


def step_flops(cin, cout, p, pt, d, depth, mlp_ratio, dt, B, N, S):
    """configs.md: 2·m·n·k per GEMM, 3 GEMMs per linear (fwd, dinput, dweight), attention included."""
    m, k, ko = int(mlp_ratio * d), cin * pt * p * p, pt * p * p * cout
    T, Ts = B * N, B * S
    mnk = T * k * d + B * (256 * d + d * d) + Ts * (dt * d + d * d) + B * d * 2 * d + T * d * ko
    per_block = (B * d * 6 * d + T * d * 3 * d + T * d * d + T * d * d + Ts * d * 2 * d + T * d * d
                 + 2 * T * d * m + 2 * B * N * N * d + 2 * B * N * S * d)
    return 6.0 * (mnk + depth * per_block)


def bench(name, steps, warmup, seed):
    cin, p, pt, d, depth, heads, ratio, dt, S, (Fr, H, W), B = CONFIGS[name]
    torch.manual_seed(seed)
    model = FMDiT(cin, cin, p, pt, d, depth, heads, ratio, dt)
    model.dit_init(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01)
    x = torch.randn(B, cin, Fr, H, W)
    if Fr == 1:
        x = x[:, :, 0]
    txt = torch.randn(B, S, dt)
    t = torch.rand(B) * 1000
    target = torch.randn_like(x)
    times, losses = [], []
    cpu0 = 0.0
    for i in range(warmup + steps):
        if i == warmup:
            ru = resource.getrusage(resource.RUSAGE_SELF)
            cpu0 = ru.ru_utime + ru.ru_stime
        t0 = time.perf_counter()
        out = model(x, t, txt)
        loss = F.mse_loss(out, target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        elapsed = time.perf_counter() - t0
        losses.append(loss.item())
        if i >= warmup:
            times.append(elapsed * 1e3)
    ru = resource.getrusage(resource.RUSAGE_SELF)
    cpu_ms = (ru.ru_utime + ru.ru_stime - cpu0) * 1e3 / steps
    N = (Fr // pt) * (H // p) * (W // p)
    gflop = step_flops(cin, cin, p, pt, d, depth, ratio, dt, B, N, S) / 1e9
    med = statistics.median(times)
    return {
        "config": name, "median_step_ms": med, "gflops": gflop / (med / 1e3),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
        "steps_ms": times, "warmup": warmup, "cpu_ms_per_step": cpu_ms, "step_gflop": gflop,
        "params": sum(q.numel() for q in model.parameters()),
        "backend": "pytorch %s, %d threads" % (torch.__version__, torch.get_num_threads()),
        "first_loss": losses[0], "last_loss": losses[-1],
    }


def read_safetensors(path):
    data = open(path, "rb").read()
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + n])
    meta = header.pop("__metadata__", {})
    tensors = {}
    for name, e in header.items():
        assert e["dtype"] == "F32", (name, e["dtype"])
        b, end = e["data_offsets"]
        buf = bytearray(data[8 + n + b:8 + n + end])
        tensors[name] = torch.frombuffer(buf, dtype=torch.float32).reshape(e["shape"]) if buf else torch.zeros(e["shape"])
    return tensors, meta


def check(path):
    ts, meta = read_safetensors(path)
    c = json.loads(meta["config"])
    model = FMDiT(c["in_channels"], c["out_channels"], c["patch_size"], c["patch_size_t"], c["hidden_size"],
                  c["depth"], c["num_heads"], c["mlp_ratio"], c["text_dim"])
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, prm in params.items():
            prm.copy_(ts[name])
    x = ts["x"].clone().requires_grad_(True)
    out = model(x, ts["t"], ts["txt"], ts["mask"])
    loss = F.mse_loss(out, ts["target"])
    loss.backward()
    rel = lambda a, b: ((a.double() - b.double()).norm() / b.double().norm()).item()
    errs = {"out": rel(out.detach(), ts["out"]), "loss": rel(loss.detach().reshape(1), ts["loss"]),
            "grad.x": rel(x.grad, ts["grad.x"])}
    for name, prm in params.items():
        errs["grad." + name] = rel(prm.grad, ts["grad." + name])
    worst = max(errs, key=errs.get)
    print(json.dumps({"file": path, "tensors": len(errs), "worst": worst, "worst_rel": errs[worst]}))
    return errs[worst] <= 1e-4


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", default="bench-T", choices=sorted(CONFIGS))
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--check", nargs="*", help="reference-vector files to check instead of benchmarking")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    if a.check:
        sys.exit(0 if all([check(p) for p in a.check]) else 1)
    if a.steps < 10:
        ap.error("--steps must be at least 10")
    print(json.dumps(bench(a.config, a.steps, a.warmup, a.seed)))


if __name__ == "__main__":
    main()
