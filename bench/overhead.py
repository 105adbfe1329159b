"""Benchmark: the Learner's overhead against a plain PyTorch loop, and lr_find's cost per iteration.

Both train the same small convnet (4 conv+BN+ReLU blocks, 3x32x32 inputs, 10 classes, random init
from the same seed) on the same in-memory data through the same loaders (`data.train_dl`,
`data.valid_dl`, num_workers=0), with Adam(0.9, 0.99) + decoupled weight decay 1e-2 kept off
BatchNorm and biases, on a one-cycle schedule (cosine, pct_start 0.3, div 25, final div 1e4,
momentum 0.95-0.85), and validate every epoch (loss and accuracy read once per epoch):

  fastbase  Learner(...).fit_one_cycle(epochs, lr), silent
  plain     a hand-written loop: torch.optim.AdamW over [decay, no_decay] groups and
            torch.optim.lr_scheduler.OneCycleLR (cycling beta1)

Runs alternate (fastbase, plain, fastbase, ...) in one process so both share the machine's noise;
the table gives the median wall and CPU (process) time per epoch over --runs runs and their
ratios; on a shared machine the CPU time is the steadier of the two, with --threads 1 steadier still. Peak RSS comes from one
child process per method (ru_maxrss, so the other method's peak cannot hide in it). Then
lr_find's time per iteration (over as many batches as an epoch, snapshot, restore and suggestions
included) is compared with a training step (training-phase time per batch of `fit(1)` runs).
Last, the framework's absolute cost per batch: the same comparison on a model so small (a 16->2
linear layer, batches collated in advance) that nearly all the time is the loop's own.

    python bench/overhead.py [--runs 7] [--epochs 3] [--items 2048] [--bs 64] [--threads N]
"""
from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

import torch
from torch import nn
from torch.utils.data import TensorDataset

from fastbase.callback import Callback
from fastbase.data import DataBunch
from fastbase.learner import Learner
from fastbase.metrics import accuracy
from fastbase.optimizer import split_no_wd_params

LR, WD, MOMS = 3e-3, 1e-2, (0.95, 0.85)


def make_data(n_items: int, bs: int) -> DataBunch:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n_items + 512, 3, 32, 32, generator=g)
    y = (x[:, 0, :16].mean((1, 2)) * 40).long().clamp(-5, 4) + 5  # learnable, 10 classes
    train, valid = TensorDataset(x[:n_items], y[:n_items]), TensorDataset(x[n_items:], y[n_items:])
    train.classes = valid.classes = [str(i) for i in range(10)]
    return DataBunch.create(train, valid, bs=bs, num_workers=0, device="cpu", seed=0)


def make_model() -> nn.Sequential:
    torch.manual_seed(0)

    def block(c_in, c_out):
        return [nn.Conv2d(c_in, c_out, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()]

    return nn.Sequential(*block(3, 32), *block(32, 64), *block(64, 128), *block(128, 128),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(128, 10))


class TrainTimer(Callback):
    """Wall time of each training phase (the last batch's work is synchronous on the CPU)."""

    def __init__(self):
        self.train_times = []

    def before_train(self):
        self._start = time.perf_counter()

    def after_train(self):
        self.train_times.append(time.perf_counter() - self._start)


def run_fastbase(data, epochs: int, timer: TrainTimer | None = None) -> float:
    learn = Learner(data, make_model(), metrics=[accuracy], wd=WD, silent=True, callbacks=[timer] if timer else None)
    start, cpu = time.perf_counter(), time.process_time()
    learn.fit_one_cycle(epochs, LR, moms=MOMS)
    return (time.perf_counter() - start) / epochs, (time.process_time() - cpu) / epochs


def run_plain(data, epochs: int) -> float:
    model = make_model()
    decay, no_decay = split_no_wd_params([model])[0]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": WD}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=LR, betas=(0.9, 0.99))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=LR, total_steps=epochs * len(data.train_dl),
                                                pct_start=0.3, div_factor=25.0, final_div_factor=1e4,
                                                base_momentum=MOMS[1], max_momentum=MOMS[0])
    loss_func = nn.CrossEntropyLoss()
    start, cpu = time.perf_counter(), time.process_time()
    for _ in range(epochs):
        model.train()
        for x, y in data.train_dl:
            loss = loss_func(model(x), y)
            loss.backward()
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
        model.eval()
        total, correct, count = torch.zeros(()), torch.zeros(()), 0
        with torch.no_grad():
            for x, y in data.valid_dl:
                out = model(x)
                total += loss_func(out, y) * len(y)
                correct += (out.argmax(1) == y).sum()
                count += len(y)
        _ = (total / count).item(), (correct / count).item()  # read once per epoch
    return (time.perf_counter() - start) / epochs, (time.process_time() - cpu) / epochs


class ListLoader:
    """Batches collated in advance, so only the training loop is measured."""

    def __init__(self, batches, dataset):
        self.batches, self.dataset = batches, dataset

    def __iter__(self):
        return iter(self.batches)

    def __len__(self):
        return len(self.batches)


def per_batch_overhead(runs: int) -> tuple[float, float]:
    """Median seconds per batch of one one-cycle epoch of a 16->2 linear model: (fastbase, plain)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4096, 16, generator=g)
    train = TensorDataset(x, (x[:, 0] > 0).long())
    train.classes = ["a", "b"]
    data = DataBunch.create(train, TensorDataset(x[:64], (x[:64, 0] > 0).long()), bs=16, num_workers=0,
                            device="cpu")
    data.train_dl = ListLoader(list(data.train_dl), train)
    n, loss_func = len(data.train_dl), nn.CrossEntropyLoss()

    def fastbase():
        torch.manual_seed(0)
        learn = Learner(data, nn.Linear(16, 2), silent=True)
        start = time.perf_counter()
        learn.fit_one_cycle(1, 1e-2)
        return (time.perf_counter() - start) / n

    def plain():
        torch.manual_seed(0)
        model = nn.Linear(16, 2)
        opt = torch.optim.AdamW([{"params": [model.weight], "weight_decay": WD},
                                 {"params": [model.bias], "weight_decay": 0.0}], lr=1e-2, betas=(0.9, 0.99))
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, 1e-2, total_steps=n, pct_start=0.3, div_factor=25.0,
                                                    final_div_factor=1e4, base_momentum=0.85, max_momentum=0.95)
        start = time.perf_counter()
        model.train()
        for xb, yb in data.train_dl:
            loss_func(model(xb), yb).backward()
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
        model.eval()
        with torch.no_grad():
            total = sum(loss_func(model(xb), yb) * len(yb) for xb, yb in data.valid_dl)
        _ = total.item()
        return (time.perf_counter() - start) / n

    fastbase(), plain()
    pairs = [(fastbase(), plain()) for _ in range(runs)]
    return statistics.median(p[0] for p in pairs), statistics.median(p[1] for p in pairs)


def child(method: str, args) -> None:
    """One fit in a fresh process; prints its peak RSS in MB."""
    data = make_data(args.items, args.bs)
    (run_fastbase if method == "fastbase" else run_plain)(data, 1)
    print(json.dumps({"rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--items", type=int, default=2048)
    parser.add_argument("--bs", type=int, default=64)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--child", choices=["fastbase", "plain"])
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.child:
        return child(args.child, args)

    data = make_data(args.items, args.bs)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.items} items, bs {args.bs}, "
          f"{len(data.train_dl)} training batches/epoch, {args.epochs} epochs x {args.runs} runs per method")
    run_fastbase(data, 1), run_plain(data, 1)  # warm-up: first-step imports, allocator
    times, timer = {"fastbase": [], "plain": []}, TrainTimer()
    for i in range(args.runs):  # alternate, swapping which goes first, so drifts hit both alike
        for method in ("fastbase", "plain") if i % 2 == 0 else ("plain", "fastbase"):
            run = run_fastbase(data, args.epochs, timer) if method == "fastbase" else run_plain(data, args.epochs)
            times[method].append(run)
    rss = {}
    for method in times:
        cmd = [sys.executable, __file__, "--child", method, "--items", str(args.items), "--bs", str(args.bs)]
        out = subprocess.run(cmd + (["--threads", str(args.threads)] if args.threads else []),
                             capture_output=True, text=True, check=True).stdout
        rss[method] = json.loads(out.strip().splitlines()[-1])["rss_mb"]

    print(f"\n{'method':<10} {'wall s/epoch':>13} {'min':>7} {'max':>7} {'CPU s/epoch':>12} {'peak RSS MB':>12}")
    median = {}
    for m, runs in times.items():
        wall, cpu = [r[0] for r in runs], [r[1] for r in runs]
        median[m] = statistics.median(wall), statistics.median(cpu)
        print(f"{m:<10} {median[m][0]:>13.3f} {min(wall):>7.3f} {max(wall):>7.3f} {median[m][1]:>12.3f} {rss[m]:>12.0f}")
    paired = statistics.median(f[0] / p[0] for f, p in zip(times["fastbase"], times["plain"]))
    print(f"fastbase / plain: medians wall {median['fastbase'][0] / median['plain'][0]:.3f}, "
          f"CPU {median['fastbase'][1] / median['plain'][1]:.3f}; median of paired runs {paired:.3f} "
          "(goal: within 1.03)")

    # lr_find over as many batches as one training epoch has, against that epoch's training phase
    n = len(data.train_dl)
    learn = Learner(data, make_model(), silent=True, callbacks=[timer])
    learn.lr_find(num_it=8, stop_div=False)  # warm-up
    timer.train_times, finds = [], {True: [], False: []}
    for _ in range(args.runs):
        learn.fit(1, lr=1e-4)
        for stop_div in (False, True):
            start = time.perf_counter()
            learn.lr_find(num_it=n, stop_div=stop_div, end_lr=1e-2)  # no divergence: all n iterations run
            finds[stop_div].append((time.perf_counter() - start) / len(learn.recorder.lrs))
    step = statistics.median(timer.train_times) / n
    print(f"\ntraining step {step * 1e3:.1f} ms (median of {args.runs} training phases of {n} batches)")
    for stop_div, label in ((False, "stop_div=False"), (True, "stop_div=True (reads the loss every iteration)")):
        per_it = statistics.median(finds[stop_div])
        print(f"lr_find {label}: {per_it * 1e3:.1f} ms/iteration, ratio {per_it / step:.3f} "
              f"(snapshot, restore and suggestions included)")

    fast, plain = per_batch_overhead(args.runs)
    print(f"\nper batch on a 16->2 linear model (the loop's own cost): fastbase {fast * 1e6:.0f} us, "
          f"plain {plain * 1e6:.0f} us, difference {(fast - plain) * 1e6:.0f} us")


if __name__ == "__main__":
    main()
