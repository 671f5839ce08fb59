"""PyTorch side of examples/bench.rs, same protocol: batch 256, f32, median of 5 after a
warm-up (LeNet: 5 warm-up steps, median of 5 runs of 30 steps), same output format.

    MALLOC_MMAP_THRESHOLD_=67108864 MALLOC_TRIM_THRESHOLD_=268435456 \
        python benches/torch_bench.py --threads 2 [--only NAME]

The memory lines (chain50_*, resnet18_train_peak_mb) count PyTorch's own allocation
events (torch.profiler with profile_memory), as examples/bench counts ours with a
counting allocator: see memory_lines below.
"""
import argparse
import statistics
import time

import torch
from torch import nn
import torch.nn.functional as F


REPS = 5  # --reps, as examples/bench's


def median_secs(f, reps=None):
    reps = reps or REPS
    f()
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        f()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def lenet(pool, act):
    P = nn.AvgPool2d if pool == "avg" else nn.MaxPool2d
    A = nn.Sigmoid if act == "sigmoid" else nn.ReLU
    return nn.Sequential(nn.Conv2d(1, 6, 5, padding=2), A(), P(2, 2), nn.Conv2d(6, 16, 5), A(), P(2, 2),
                         nn.Flatten(), nn.Linear(400, 120), A(), nn.Linear(120, 84), A(), nn.Linear(84, 10))


# Every timing line, for --only: they run as one block (they share their inputs).
TIMING_LINES = ["sgemm_1024", "conv1_fwd", "conv1_dw", "conv1_fwd_bwd", "conv2_fwd", "conv2_dw", "conv2_dx", "conv2_fwd_bwd",
                "avgpool1_fwd_bwd", "avgpool2_fwd_bwd", "batchnorm2d_64x14_fwd_bwd", "batchnorm2d_6x24_fwd_bwd",
                "lenet_train_avgpool_sigmoid", "lenet_train_maxpool_relu", "bn_lenet_train", "lenet_infer_avgpool_sigmoid"]

# src/bench.rs R18_CONVS: every distinct convolution of SPEC 7's ResNet-18 on 28x28 inputs,
# (name, in, out, kernel, stride, input side), padding k // 2.
R18_CONVS = [("stem", 1, 64, 7, 2, 28), ("b2", 64, 64, 3, 1, 7), ("b3_down", 64, 128, 3, 2, 7), ("b3_short", 64, 128, 1, 2, 7),
             ("b3", 128, 128, 3, 1, 4), ("b4_down", 128, 256, 3, 2, 4), ("b4_short", 128, 256, 1, 2, 4), ("b4", 256, 256, 3, 1, 2),
             ("b5_down", 256, 512, 3, 2, 2), ("b5_short", 256, 512, 1, 2, 2), ("b5", 512, 512, 3, 1, 1)]
RESNET_LINES = [f"conv_r18_{n}_fwd_bwd" for n, *_ in R18_CONVS] + ["resnet18_train", "resnet18_infer"]


def resnet_lines(wanted):
    """conv_r18_*_fwd_bwd (ms), resnet18_train and resnet18_infer (examples/s), as src/bench.rs."""
    B = 256
    for name, c, o, k, s, hw in R18_CONVS:
        if not wanted(f"conv_r18_{name}_fwd_bwd"):
            continue
        x = (torch.rand(B, c, hw, hw) * 2 - 1).requires_grad_(c > 1)
        w = (torch.rand(o, c, k, k) * 0.2 - 0.1).requires_grad_()
        b = (torch.rand(o) * 0.2 - 0.1).requires_grad_()
        ohw = (hw + 2 * (k // 2) - k) // s + 1
        seed = torch.rand(B, o, ohw, ohw) * 2 - 1

        def fb():
            F.conv2d(x, w, b, stride=s, padding=k // 2).backward(seed)
            w.grad = b.grad = x.grad = None
        print(f"conv_r18_{name}_fwd_bwd {median_secs(fb) * 1e3:.3f} ms", flush=True)
    xb = torch.rand(B, 1, 28, 28)
    yb = torch.tensor([(i * 7 + 3) % 10 for i in range(B)])
    steps = 3
    if wanted("resnet18_train"):
        net = resnet18()
        opt = torch.optim.SGD(net.parameters(), lr=0.05)

        def step():
            opt.zero_grad()
            F.cross_entropy(net(xb), yb).backward()
            opt.step()
        step()
        secs = median_secs(lambda: [step() for _ in range(steps)])
        print(f"resnet18_train {steps * B / secs:.1f} examples/s", flush=True)
    if wanted("resnet18_infer"):
        net = resnet18().eval()
        with torch.no_grad():
            secs = median_secs(lambda: [net(xb) for _ in range(steps)])
        print(f"resnet18_infer {steps * B / secs:.1f} examples/s", flush=True)


class Residual(nn.Module):
    """D2L 8.6's residual block, as nn::Residual."""

    def __init__(self, cin, cout, use_1x1conv, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1, stride=stride)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.conv3 = nn.Conv2d(cin, cout, 1, stride=stride) if use_1x1conv else None
        self.bn1, self.bn2 = nn.BatchNorm2d(cout), nn.BatchNorm2d(cout)

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return F.relu(y + (self.conv3(x) if self.conv3 is not None else x))


def resnet18(widths=(64, 128, 256, 512)):
    """nn::resnet18_with_widths: a 7x7 stem, four stages of two blocks, global pooling."""
    layers = [nn.Sequential(nn.Conv2d(1, widths[0], 7, stride=2, padding=3), nn.BatchNorm2d(widths[0]), nn.ReLU(),
                            nn.MaxPool2d(3, stride=2, padding=1))]
    cin = widths[0]
    for i, cout in enumerate(widths):
        blocks = [Residual(cin, cout, True, 2) if b == 0 and i > 0 else Residual(cout, cout, False, 1) for b in range(2)]
        layers.append(nn.Sequential(*blocks))
        cin = cout
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d((1, 1)), nn.Flatten(), nn.Linear(widths[3], 10))


def peak_of(f):
    """The most bytes f's allocations held at once above what was live before (PyTorch's own
    allocation events, in time order), and the bytes still held when it returns."""
    from torch.profiler import profile, ProfilerActivity
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        f()
    events = sorted((e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"), key=lambda e: e.start_ns())
    live = peak = 0
    for e in events:
        live += e.nbytes()
        peak = max(peak, live)
    return peak, live


def memory_lines(wanted):
    """chain50_fwd_live_acts, chain50_bwd_peak_acts and resnet18_train_peak_mb, defined as
    in src/bench.rs (chain_memory, resnet18_step_peak_bytes)."""
    if wanted("chain50_fwd_live_acts") or wanted("chain50_bwd_peak_acts"):
        n, c, h, w = 8, 16, 32, 32
        bound = (6.0 / (9 * c)) ** 0.5
        ws = [(torch.rand(c, c, 3, 3) * 2 - 1).mul_(bound).requires_grad_() for _ in range(50)]
        act = n * c * h * w * 4
        state = {}

        def forward():
            y = torch.rand(n, c, h, w) * 2 - 1
            for wi in ws:
                y = F.relu(F.conv2d(y, wi, padding=1))
            state["loss"] = y.sum()

        for _ in range(2):  # the first run is a warm-up
            for wi in ws:
                wi.grad = None
            _, fwd = peak_of(forward)
            peak, _ = peak_of(lambda: state["loss"].backward())
            del state["loss"]
        for name, v in [("chain50_fwd_live_acts", fwd / act), ("chain50_bwd_peak_acts", (fwd + peak) / act)]:
            if wanted(name):
                print(f"{name} {v:.3f} activations")
    if wanted("resnet18_train_peak_mb"):
        B = 256
        net = resnet18()
        opt = torch.optim.SGD(net.parameters(), lr=0.1)
        x, y = torch.rand(B, 1, 28, 28), torch.randint(0, 10, (B,))

        def step():
            loss = F.cross_entropy(net(x), y)
            opt.zero_grad()
            loss.backward()
            del loss
            opt.step()
            opt.zero_grad()

        step()
        held = sum(t.numel() * t.element_size() for t in net.state_dict().values()) + x.numel() * 4 + y.numel() * 8
        peak, _ = peak_of(step)
        print(f"resnet18_train_peak_mb {(held + peak) / 2 ** 20:.3f} MiB")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--only", help="run only the lines whose name contains this")
    ap.add_argument("--reps", type=int, default=5, help="repetitions to take the median of, after a warm-up")
    a = ap.parse_args()
    global REPS
    REPS = a.reps
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    wanted = lambda name: a.only is None or a.only in name
    memory_lines(wanted)
    resnet_lines(wanted)
    if a.only is not None and not any(wanted(n) for n in TIMING_LINES):
        return
    n = 1024
    x, y = torch.rand(n, n) * 2 - 1, torch.rand(n, n) * 2 - 1
    print(f"sgemm_1024 {2 * n ** 3 / median_secs(lambda: x @ y) / 1e9:.3f} GFLOP/s")
    B = 256
    for name, c, o, hw, pad, input_grad in [("conv1", 1, 6, 28, 2, False), ("conv2", 6, 16, 14, 0, True)]:
        x = torch.rand(B, c, hw, hw, requires_grad=input_grad)
        w = (torch.rand(o, c, 5, 5) * 0.4 - 0.2).requires_grad_()
        b = (torch.rand(o) * 0.4 - 0.2).requires_grad_()
        ohw = hw + 2 * pad - 4
        seed = torch.rand(B, o, ohw, ohw) * 2 - 1
        with torch.no_grad():
            print(f"{name}_fwd {median_secs(lambda: F.conv2d(x, w, b, padding=pad)) * 1e3:.3f} ms")

        with torch.no_grad():
            xd, wd = x.detach(), w.detach()
            dw = lambda: torch.nn.grad.conv2d_weight(xd, wd.shape, seed, padding=pad)
            print(f"{name}_dw {median_secs(dw) * 1e3:.3f} ms")
            if input_grad:
                dx = lambda: torch.nn.grad.conv2d_input(xd.shape, wd, seed, padding=pad)
                print(f"{name}_dx {median_secs(dx) * 1e3:.3f} ms")

        def fb():
            F.conv2d(x, w, b, padding=pad).backward(seed)
            w.grad = b.grad = x.grad = None
        print(f"{name}_fwd_bwd {median_secs(fb) * 1e3:.3f} ms")
    with torch.no_grad():
        x, w, b = torch.rand(B, 16, 7, 7) * 2 - 1, torch.rand(16, 8, 4, 4) * 0.4 - 0.2, torch.rand(8) * 0.4 - 0.2
        ct = lambda: F.conv_transpose2d(x, w, b, stride=2, padding=1)
        print(f"conv_transpose2d_16to8_s2_fwd {median_secs(ct) * 1e3:.3f} ms")
    for name, c, hw in [("avgpool1", 6, 28), ("avgpool2", 16, 10)]:
        x = torch.rand(B, c, hw, hw, requires_grad=True)
        seed = torch.rand(B, c, hw // 2, hw // 2)

        def fb():
            F.avg_pool2d(x, 2, 2).backward(seed)
            x.grad = None
        print(f"{name}_fwd_bwd {median_secs(fb) * 1e3:.3f} ms")
    xb = torch.rand(B, 1, 28, 28)
    yb = torch.randint(0, 10, (B,))
    for name, c, hw in [("batchnorm2d_64x14", 64, 14), ("batchnorm2d_6x24", 6, 24)]:
        bn = torch.nn.BatchNorm2d(c)
        x = torch.rand(B, c, hw, hw).mul(2).sub(1).requires_grad_()
        seed = torch.rand(B, c, hw, hw).mul(2).sub(1)

        def fb():
            bn(x).backward(seed)
            x.grad = None
            bn.zero_grad()
        print(f"{name}_fwd_bwd {median_secs(fb) * 1e3:.3f} ms")
    bn_lenet = lambda: torch.nn.Sequential(
        torch.nn.Conv2d(1, 6, 5), torch.nn.BatchNorm2d(6), torch.nn.Sigmoid(), torch.nn.AvgPool2d(2, 2),
        torch.nn.Conv2d(6, 16, 5), torch.nn.BatchNorm2d(16), torch.nn.Sigmoid(), torch.nn.AvgPool2d(2, 2), torch.nn.Flatten(),
        torch.nn.Linear(256, 120), torch.nn.BatchNorm1d(120), torch.nn.Sigmoid(),
        torch.nn.Linear(120, 84), torch.nn.BatchNorm1d(84), torch.nn.Sigmoid(), torch.nn.Linear(84, 10))
    for name, make in [("lenet_train_avgpool_sigmoid", lambda: lenet("avg", "sigmoid")), ("lenet_train_maxpool_relu", lambda: lenet("max", "relu")),
                       ("bn_lenet_train", bn_lenet)]:
        net = make()
        opt = torch.optim.SGD(net.parameters(), lr=0.1)

        def step():
            opt.zero_grad()
            F.cross_entropy(net(xb), yb).backward()
            opt.step()
        for _ in range(5):
            step()
        secs = median_secs(lambda: [step() for _ in range(30)], reps=5)
        print(f"{name} {30 * B / secs:.1f} examples/s")
    net = lenet("avg", "sigmoid")
    with torch.no_grad():
        for _ in range(5):
            net(xb)
        secs = median_secs(lambda: [net(xb) for _ in range(30)], reps=5)
    print(f"lenet_infer_avgpool_sigmoid {30 * B / secs:.1f} examples/s")


if __name__ == "__main__":
    main()
