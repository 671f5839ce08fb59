"""PyTorch side of `examples/train` for SPEC section 7's recipes, for the side-by-side runs
of docs/benchmarks.md (never run in CI). Same data, model definitions (SPEC's, verbatim),
recipe and output lines as `cargo run --release --example train -- --model M ...`:

    python benches/train_recipe.py --model bn-lenet --seed 1 --threads 2
    python benches/train_recipe.py --model resnet18 --seed 1 --threads 2
    python benches/train_recipe.py --model resnet18 --augment --scheduler cosine \
        --momentum 0.9 --weight-decay 5e-4

Timing covers the whole run (loading excluded), evaluation included, as our wall time.
"""
import argparse
import gzip
import os
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

DATA = os.path.join(os.path.dirname(__file__), "..", "data", "fashion-mnist")


def idx(name):
    with gzip.open(os.path.join(DATA, name), "rb") as f:
        raw = f.read()
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def bn_lenet():  # SPEC section 7
    return nn.Sequential(
        nn.Conv2d(1, 6, 5), nn.BatchNorm2d(6), nn.Sigmoid(), nn.AvgPool2d(2, 2),
        nn.Conv2d(6, 16, 5), nn.BatchNorm2d(16), nn.Sigmoid(), nn.AvgPool2d(2, 2), nn.Flatten(),
        nn.Linear(256, 120), nn.BatchNorm1d(120), nn.Sigmoid(),
        nn.Linear(120, 84), nn.BatchNorm1d(84), nn.Sigmoid(), nn.Linear(84, 10))


class Residual(nn.Module):  # SPEC section 7
    def __init__(self, cin, cout, use_1x1conv=False, strides=1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1, stride=strides)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.conv3 = nn.Conv2d(cin, cout, 1, stride=strides) if use_1x1conv else None
        self.bn1 = nn.BatchNorm2d(cout); self.bn2 = nn.BatchNorm2d(cout)

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        if self.conv3 is not None:
            x = self.conv3(x)
        return F.relu(y + x)


def resnet18():  # SPEC section 7
    def block(cin, cout, n, first=False):
        return nn.Sequential(*[Residual(cin, cout, True, 2) if i == 0 and not first
                               else Residual(cout, cout) for i in range(n)])
    b1 = nn.Sequential(nn.Conv2d(1, 64, 7, stride=2, padding=3), nn.BatchNorm2d(64),
                       nn.ReLU(), nn.MaxPool2d(3, 2, 1))
    return nn.Sequential(b1, block(64, 64, 2, True), block(64, 128, 2), block(128, 256, 2),
                         block(256, 512, 2), nn.AdaptiveAvgPool2d((1, 1)), nn.Flatten(),
                         nn.Linear(512, 10))


def augment(x, g):
    """RandomCrop(28, padding=4) then RandomHorizontalFlip(), per sample."""
    n = x.shape[0]
    padded = F.pad(x, (4, 4, 4, 4))
    top = torch.randint(0, 9, (n,), generator=g)
    left = torch.randint(0, 9, (n,), generator=g)
    flip = torch.rand(n, generator=g) < 0.5
    out = torch.empty_like(x)
    for k in range(n):
        c = padded[k, :, top[k]:top[k] + 28, left[k]:left[k] + 28]
        out[k] = c.flip(-1) if flip[k] else c
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", choices=["bn-lenet", "resnet18"], required=True)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--lr", type=float)
    ap.add_argument("--momentum", type=float, default=0.0)
    ap.add_argument("--weight-decay", type=float, default=0.0)
    ap.add_argument("--scheduler", choices=["none", "cosine"], default="none")
    ap.add_argument("--augment", action="store_true")
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    lr = a.lr if a.lr is not None else {"bn-lenet": 1.0, "resnet18": 0.05}[a.model]
    xtr = torch.from_numpy(idx("train-images-idx3-ubyte.gz").astype(np.float32) / 255).unsqueeze(1)
    ytr = torch.from_numpy(idx("train-labels-idx1-ubyte.gz").astype(np.int64))
    xte = torch.from_numpy(idx("t10k-images-idx3-ubyte.gz").astype(np.float32) / 255).unsqueeze(1)
    yte = torch.from_numpy(idx("t10k-labels-idx1-ubyte.gz").astype(np.int64))
    net = bn_lenet() if a.model == "bn-lenet" else resnet18()
    opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=a.momentum, weight_decay=a.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, a.epochs) if a.scheduler == "cosine" else None
    g = torch.Generator().manual_seed(a.seed)
    start = time.perf_counter()
    seen_total, train_secs = 0, 0.0
    for epoch in range(a.epochs):
        net.train()
        t0 = time.perf_counter()
        order = torch.randperm(len(xtr), generator=g)
        loss_sum, correct, seen, batches = 0.0, 0, 0, 0
        for i in range(0, len(xtr), a.batch_size):
            idxs = order[i:i + a.batch_size]
            x, y = xtr[idxs], ytr[idxs]
            if a.augment:
                x = augment(x, g)
            logits = net(x)
            loss = F.cross_entropy(logits, y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            loss_sum += loss.item()
            correct += (logits.argmax(1) == y).sum().item()
            seen += len(y)
            batches += 1
        secs = time.perf_counter() - t0
        seen_total += seen
        train_secs += secs
        if sched:
            sched.step()
        net.eval()
        with torch.no_grad():
            test_correct = sum((net(xte[i:i + 1000]).argmax(1) == yte[i:i + 1000]).sum().item() for i in range(0, len(xte), 1000))
        print(f"epoch {epoch + 1}/{a.epochs}: loss {loss_sum / batches:.4f}, train acc {correct / seen:.4f}, "
              f"test acc {test_correct / len(xte):.4f}, {seen / secs:.1f} examples/sec", flush=True)
    wall = time.perf_counter() - start
    print(f"loss {loss_sum / batches:.3f}, train acc {correct / seen:.3f}, test acc {test_correct / len(xte):.3f}")
    print(f"{seen_total / train_secs:.1f} examples/sec on cpu ({a.threads} threads)")
    print(f"wall {wall:.1f} s")


if __name__ == "__main__":
    main()
