#!/usr/bin/env python3
"""Run fmtrain's ring, OpenMPI and Gloo in interleaved rounds on this machine
and summarise busbw per size as the median over rounds, with fmtrain's ratio
to the better peer. A noisy shared machine shifts every peer alike within a
round, so interleaving keeps the ratios fair.

  bench/peers/compare.py --ranks 2 4 --sizes 4K,64K,1M,16M,64M,256M --rounds 3
"""
import argparse, json, os, re, signal, statistics, subprocess, tempfile, time

HERE = os.path.dirname(os.path.abspath(__file__))
TIMEOUT = 240  # seconds per benchmark run; sizes not finished by then count as 0
MPIRUN = ["mpirun", "--mca", "btl", "tcp,self", "--mca", "btl_tcp_if_include", "lo",
          "--oversubscribe", "--allow-run-as-root"]


def run(cmds, envs=None):
    """Runs the commands together (one per rank) in their own process groups
    and returns their stdouts. Past TIMEOUT they are killed and what they had
    printed is returned (the peers print each size as it finishes); None if
    they fail."""
    procs = [subprocess.Popen(c, env=e, stdout=subprocess.PIPE, text=True, start_new_session=True)
             for c, e in zip(cmds, envs or [None] * len(cmds))]
    deadline = time.time() + TIMEOUT
    try:
        for p in procs:
            p.wait(timeout=max(1, deadline - time.time()))
    except subprocess.TimeoutExpired:
        for p in procs:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        print(f"  (killed after {TIMEOUT} s; keeping the sizes that finished)", flush=True)
        return [p.communicate()[0] for p in procs]
    outs = [p.communicate()[0] for p in procs]
    if any(p.returncode for p in procs):
        return None
    return outs


def load():
    return open("/proc/loadavg").read().split()[0]


def run_fmtrain(fmctl, n, sizes, iters, warmup):
    gosizes = re.sub(r"(\d+)([KMG])(?=,|$)", r"\1\2iB", sizes)
    outs = run([[fmctl, "bench", "allreduce", "--ranks", str(n), "--sizes", gosizes,
                 "--iters", str(iters), "--warmup", str(warmup), "--format", "json"]])
    if not outs or not outs[0].strip():
        return {}
    return {r["bytes"]: (r["busbw_gbps"], r["time_us"], r["correct"]) for r in json.loads(outs[0])}


def parse_peer(out):
    res = {}
    for line in out.splitlines():
        f = line.split()
        if len(f) == 9 and f[1].isdigit():
            res[int(f[2])] = (float(f[5]), float(f[3]), f[8] == "ok")
    return res


def run_mpi(n, sizes, iters, warmup):
    outs = run([MPIRUN + ["-np", str(n), os.path.join(HERE, "mpi_allreduce"), sizes, str(iters), str(warmup)]])
    return parse_peer(outs[0]) if outs else {}


def run_gloo(n, sizes, iters, warmup, algo):
    with tempfile.TemporaryDirectory() as store:
        cmd = [os.path.join(HERE, "gloo_allreduce"), algo, sizes, str(iters), str(warmup)]
        cmds = [cmd] * n
        cpus = sorted(os.sched_getaffinity(0))
        if n <= len(cpus):  # one CPU per rank, as mpirun and fmctl bench bind theirs
            cmds = [["taskset", "-c", str(cpus[r])] + cmd for r in range(n)]
        outs = run(cmds, [dict(os.environ, RANK=str(r), SIZE=str(n), STORE=store) for r in range(n)])
    return parse_peer(outs[0]) if outs else {}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ranks", type=int, nargs="+", default=[2, 4])
    ap.add_argument("--sizes", default="4K,64K,1M,16M,64M,256M")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=5, help="untimed iterations per size, for every peer alike")
    ap.add_argument("--fmctl", default=os.path.join(HERE, "fmctl"))
    ap.add_argument("--json", help="write every round's raw numbers here")
    a = ap.parse_args()
    peers = ["fmtrain", "mpi", "gloo", "gloo_chunked"]
    raw = []
    print(f"# {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} {os.cpu_count()} cores, load {load()}", flush=True)
    for rnd in range(a.rounds):
        for n in a.ranks:
            for peer in peers:
                l0 = load()
                if peer == "fmtrain":
                    res = run_fmtrain(a.fmctl, n, a.sizes, a.iters, a.warmup)
                elif peer == "mpi":
                    res = run_mpi(n, a.sizes, a.iters, a.warmup)
                else:
                    res = run_gloo(n, a.sizes, a.iters, a.warmup, "ring" if peer == "gloo" else "ring_chunked")
                for b, (bus, t, ok) in res.items():
                    raw.append(dict(round=rnd, ranks=n, peer=peer, bytes=b, busbw=bus, time_us=t, ok=ok, load=l0))
                print(f"round {rnd} ranks {n} {peer:13s} load {l0}: " +
                      (" ".join(f"{b}:{v[0]:.3f}" for b, v in sorted(res.items())) or
                       f"failed or took over {TIMEOUT} s"), flush=True)
    if a.json:
        json.dump(raw, open(a.json, "w"), indent=1)
    print(f"# done, load {load()}")
    print("\n| ranks | size | fmtrain busbw | time (µs) | MPI busbw | Gloo ring busbw | Gloo ring_chunked busbw | fmtrain / best peer |")
    print("|---|---|---|---|---|---|---|---|")
    for n in a.ranks:
        for b in sorted({r["bytes"] for r in raw}):
            med = {}
            for peer in peers:
                vals = [r["busbw"] for r in raw if r["ranks"] == n and r["bytes"] == b and r["peer"] == peer]
                med[peer] = statistics.median(vals) if vals else 0.0  # 0: no run finished
            ts = [r["time_us"] for r in raw if r["ranks"] == n and r["bytes"] == b and r["peer"] == "fmtrain"]
            t = statistics.median(ts) if ts else float("nan")
            best = max(med["mpi"], med["gloo"], med["gloo_chunked"]) or float("nan")
            size = f"{b >> 20}MiB" if b >= 1 << 20 else f"{b >> 10}KiB"
            print(f"| {n} | {size} | {med['fmtrain']:.3f} | {t:.1f} | {med['mpi']:.3f} | {med['gloo']:.3f} | "
                  f"{med['gloo_chunked']:.3f} | {med['fmtrain'] / best:.2f} |")
    bad = [r for r in raw if not r["ok"]]
    if bad:
        raise SystemExit(f"wrong results: {bad[:3]}")


if __name__ == "__main__":
    main()
