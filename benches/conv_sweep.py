"""Convolution sweep, ours against PyTorch, interleaved (issue 23).

The PyTorch side of `examples/conv_sweep.rs`, same protocol: forward + backward (input,
weight and bias gradients) of one f32 convolution, C = O, padding k // 2, the median of
runs after a warm-up (at least 3 runs, more until --secs). With --side torch it prints
the same lines as the Rust example; by default it drives both, alternating ours and
PyTorch per group of shapes so both are measured in the same minutes, --rounds times,
and prints a markdown table of the best median of each.

    cargo build --release --example conv_sweep
    MALLOC_MMAP_THRESHOLD_=67108864 MALLOC_TRIM_THRESHOLD_=268435456 \\
        /work/venv/bin/python benches/conv_sweep.py --threads 1,2 --rounds 2
"""
import argparse
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OURS = os.environ.get("CONV_SWEEP_BIN", os.path.join(ROOT, "target", "release", "examples", "conv_sweep"))


def ints(s):
    return [int(v) for v in s.split(",")]


def torch_side(a):
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(a.threads[0])
    torch.manual_seed(0)
    for n in a.n:
        for c in a.c:
            for hw in a.hw:
                for k in a.k:
                    for s in a.stride:
                        x = (torch.rand(n, c, hw, hw) * 2 - 1).requires_grad_()
                        w = (torch.rand(c, c, k, k) * 0.4 - 0.2).requires_grad_()
                        b = (torch.rand(c) * 0.4 - 0.2).requires_grad_()
                        ohw = (hw + 2 * (k // 2) - k) // s + 1
                        seed = torch.rand(n, c, ohw, ohw) * 2 - 1

                        def fb():
                            y = F.conv2d(x, w, b, stride=s, padding=k // 2)
                            y.backward(seed)
                            x.grad = w.grad = b.grad = None

                        fb()
                        ts, start = [], time.perf_counter()
                        while len(ts) < 3 or (time.perf_counter() - start < a.secs and len(ts) < 51):
                            t = time.perf_counter()
                            fb()
                            ts.append(time.perf_counter() - t)
                        print(f"{n} {c} {hw} {k} {s} {statistics.median(ts) * 1e3:.3f} torch", flush=True)


def run(cmd, env=None):
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout
    res = {}
    for line in out.splitlines():
        f = line.split()
        res[tuple(int(v) for v in f[:5])] = (float(f[5]), f[6])
    return res


def driver(a):
    flags = ["--hw", ",".join(map(str, a.hw)), "--k", ",".join(map(str, a.k)), "--stride", ",".join(map(str, a.stride)),
             "--secs", str(a.secs)]
    rows = {}
    for t in a.threads:
        best = {}
        for r in range(a.rounds):
            for n in a.n:
                for c in a.c:
                    group = ["--threads", str(t), "--n", str(n), "--c", str(c)] + flags
                    ours = run([OURS, "--algo", a.algo] + group)
                    torch = run([sys.executable, __file__, "--side", "torch"] + group)
                    for key in ours:
                        o, algo = ours[key]
                        p = torch[key][0]
                        prev = best.get(key)
                        best[key] = (min(o, prev[0]) if prev else o, min(p, prev[1]) if prev else p, algo)
                    print(f"threads {t} round {r} n {n} c {c} done", file=sys.stderr, flush=True)
        for key, v in best.items():
            rows.setdefault(key, {})[t] = v
    head = "| N | C=O | H=W | k | stride | algorithms (fwd/dx/dw) |"
    sep = "|---|---|---|---|---|---|"
    for t in a.threads:
        head += f" ours {t}T (ms) | PyTorch {t}T (ms) | ratio {t}T |"
        sep += "---|---|---|"
    print(head)
    print(sep)
    worst = {t: (0, None) for t in a.threads}
    for key in sorted(rows):
        line = "| " + " | ".join(map(str, key)) + f" | {next(iter(rows[key].values()))[2]} |"
        for t in a.threads:
            o, p, _ = rows[key][t]
            line += f" {o:.3f} | {p:.3f} | {o / p:.2f} |"
            worst[t] = max(worst[t], (o / p, key))
        print(line)
    for t in a.threads:
        print(f"\nworst ratio at {t} thread(s): {worst[t][0]:.2f} at N, C, H, k, stride = {worst[t][1]}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--side", choices=["both", "torch"], default="both")
    ap.add_argument("--threads", type=ints, default=[1, 2])
    ap.add_argument("--n", type=ints, default=[8, 64])
    ap.add_argument("--c", type=ints, default=[3, 16, 64, 128, 256])
    ap.add_argument("--hw", type=ints, default=[7, 14, 28])
    ap.add_argument("--k", type=ints, default=[1, 3, 5])
    ap.add_argument("--stride", type=ints, default=[1, 2])
    ap.add_argument("--algo", default="auto")
    ap.add_argument("--secs", type=float, default=0.3)
    ap.add_argument("--rounds", type=int, default=2)
    a = ap.parse_args()
    if a.side == "torch":
        torch_side(a)
    else:
        driver(a)


if __name__ == "__main__":
    main()
