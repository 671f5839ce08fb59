"""Convolution sweep, ours against PyTorch, interleaved (issue 23).

The PyTorch side of `examples/conv_sweep.rs`, same protocol: forward + backward (input,
weight and bias gradients) of one f32 convolution, C = O, padding k // 2, the median of
runs after a warm-up (at least 3 runs, more until --secs). With --side torch it prints
the same lines as the Rust example; by default it drives both, shape by shape: ours (a
child process fed shapes on its stdin), then PyTorch (in this process), --rounds times,
keeping the best median of each, and prints a markdown table.

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


def torch_measure(torch, F, shape, secs, split=False, clock="wall"):
    """Median ms of forward + backward of one shape (as `measure` in src/conv_sweep.rs)."""
    n, c, hw, k, s = shape
    torch.manual_seed(0)
    x = (torch.rand(n, c, hw, hw) * 2 - 1).requires_grad_()
    w = (torch.rand(c, c, k, k) * 0.4 - 0.2).requires_grad_()
    b = (torch.rand(c) * 0.4 - 0.2).requires_grad_()
    ohw = (hw + 2 * (k // 2) - k) // s + 1
    seed = torch.rand(n, c, ohw, ohw) * 2 - 1

    def fb():
        y = F.conv2d(x, w, b, stride=s, padding=k // 2)
        y.backward(seed)
        x.grad = w.grad = b.grad = None

    now = time.process_time if clock == "cpu" else time.perf_counter
    fb()
    ts, start = [], time.perf_counter()
    while len(ts) < 3 or (time.perf_counter() - start < secs and len(ts) < 51):
        t = now()
        fb()
        ts.append(now() - t)
    if split:
        xd, wd = x.detach(), w.detach()
        maps = {
            "forward": lambda: F.conv2d(xd, wd, b.detach(), stride=s, padding=k // 2),
            "input grad": lambda: torch.nn.grad.conv2d_input(xd.shape, wd, seed, stride=s, padding=k // 2),
            "weight grad": lambda: torch.nn.grad.conv2d_weight(xd, wd.shape, seed, stride=s, padding=k // 2),
        }
        out = []
        with torch.no_grad():
            for name, f in maps.items():
                f()
                tt = []
                for _ in range(5):
                    t = time.perf_counter()
                    f()
                    tt.append(time.perf_counter() - t)
                out.append(f"{name} {statistics.median(tt) * 1e3:.3f} ms")
        print(f"{n} {c} {hw} {k} {s} torch: " + ", ".join(out), file=sys.stderr)
    return statistics.median(ts) * 1e3


def shapes(a):
    return [(n, c, hw, k, s) for n in a.n for c in a.c for hw in a.hw for k in a.k for s in a.stride]


def torch_side(a):
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(a.threads[0])
    for shape in shapes(a):
        print(" ".join(map(str, shape)) + f" {torch_measure(torch, F, shape, a.secs, a.split, a.clock):.3f} torch", flush=True)


def driver(a):
    """Per thread count: our sweep as a child reading shapes from its stdin, PyTorch in this
    process; each shape is measured ours, PyTorch, ours, PyTorch... (--rounds times), so both
    sides of a ratio come from the same few seconds; each side keeps its best median."""
    import torch
    import torch.nn.functional as F

    rows = {}
    for t in a.threads:
        torch.set_num_threads(t)
        cmd = [OURS, "--threads", str(t), "--stdin", "--secs", str(a.secs), "--algo", a.algo, "--clock", a.clock] + (["--split"] if a.split else [])
        ours = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
        for shape in shapes(a):
            best_o = best_p = float("inf")
            algo = "?"
            for _ in range(a.rounds):
                ours.stdin.write(" ".join(map(str, shape)) + "\n")
                ours.stdin.flush()
                f = ours.stdout.readline().split()
                best_o, algo = min(best_o, float(f[5])), f[6]
                best_p = min(best_p, torch_measure(torch, F, shape, a.secs, a.split, a.clock))
            rows.setdefault(shape, {})[t] = (best_o, best_p, algo)
            print(f"threads {t} {shape}: ours {best_o:.3f} ms ({algo}), PyTorch {best_p:.3f} ms", file=sys.stderr, flush=True)
        ours.stdin.close()
        ours.wait()
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
        ratios = sorted(rows[key][t][0] / rows[key][t][1] for key in rows)
        over = sum(r > 1.5 for r in ratios)
        print(f"\n{t} thread(s): worst ratio {worst[t][0]:.2f} at (N, C, H, k, stride) = {worst[t][1]}; "
              f"median ratio {ratios[len(ratios) // 2]:.2f}; {over} of {len(ratios)} shapes over 1.5")


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
    ap.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                    help="cpu: the process's CPU time (all threads), robust to a shared machine at 1 thread")
    ap.add_argument("--split", action="store_true", help="also time each map alone (to stderr), torch side")
    a = ap.parse_args()
    if a.side == "torch":
        torch_side(a)
    else:
        driver(a)


if __name__ == "__main__":
    main()
