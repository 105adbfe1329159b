"""Benchmark: mixed precision on the CPU (`learn.to_fp16()`, bfloat16 autocast) against float32.

For each model and image size, a Learner trains on random in-memory images (10 classes, batches
collated by the same loaders) for `--batches` training batches, once in float32 and once with
`to_fp16()`; runs alternate (fp32, bf16, bf16, fp32, ...) so both share the machine's noise. The
table gives the median training time per batch (forward, loss, backward, step) over `--runs`
runs, the speed-up (fp32 time / bf16 time) and the relative gap between the two first-batch
losses (same weights, same batch: the numerical error of bfloat16 alone).

  small convnet  4 conv+BN+ReLU blocks (as bench/overhead.py), 3 x size x size inputs
  resnet18       torchvision resnet18, random init, 10 outputs

Whether bfloat16 pays on a CPU depends on native support (AVX512-BF16 or AMX, listed in
/proc/cpuinfo); without it PyTorch emulates bfloat16 and autocast adds casts on top.

    python bench/mixed_precision.py [--runs 5] [--batches 6] [--bs 32] [--sizes 64 128] [--models resnet18]
                                    [--threads N]
"""
from __future__ import annotations

import argparse
import statistics
import time
import warnings

import torch
import torchvision
from torch import nn
from torch.utils.data import TensorDataset

from fastbase.callback import Callback
from fastbase.callbacks.mixed_precision import cpu_has_native_bf16
from fastbase.data import DataBunch
from fastbase.learner import Learner


def small_convnet() -> nn.Sequential:
    def block(c_in, c_out):
        return [nn.Conv2d(c_in, c_out, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()]

    return nn.Sequential(*block(3, 32), *block(32, 64), *block(64, 128), *block(128, 128),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(128, 10))


def resnet18() -> nn.Module:
    return torchvision.models.resnet18(num_classes=10)


MODELS = {"small convnet": small_convnet, "resnet18": resnet18}


class BatchTimer(Callback):
    """Wall time of each training batch, from before_batch to after_batch (synchronous on the CPU)."""

    def before_fit(self):
        self.times = []

    def before_batch(self):
        if self.learn.training:
            self._start = time.perf_counter()

    def after_batch(self):
        if self.learn.training:
            self.times.append(time.perf_counter() - self._start)


def make_data(size: int, n_batches: int, bs: int) -> DataBunch:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n_batches * bs + bs, 3, size, size, generator=g)
    y = torch.randint(0, 10, (len(x),), generator=g)
    train, valid = TensorDataset(x[:-bs], y[:-bs]), TensorDataset(x[-bs:], y[-bs:])
    train.classes = valid.classes = [str(i) for i in range(10)]
    data = DataBunch.create(train, valid, bs=bs, num_workers=0, device="cpu", seed=0)
    data.train_dl = data.train_dl.new(shuffle=False)  # every run sees the same batches in the same order
    return data


def run(factory, data, fp16: bool) -> tuple[float, float]:
    """(median seconds per training batch after the first, first training loss)."""
    torch.manual_seed(0)
    timer = BatchTimer()
    learn = Learner(data, factory(), silent=True, callbacks=[timer])
    if fp16:
        learn.to_fp16()
    learn.fit(1, 1e-3)
    return statistics.median(timer.times[1:]), learn.recorder.losses[0]


def cpu_bf16_flags() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:
        return "unknown"
    found = [f for f in ("avx512_bf16", "amx_bf16", "avx512f") if f in flags]
    return ", ".join(found) or "none of avx512f/avx512_bf16/amx_bf16"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--batches", type=int, default=6)
    parser.add_argument("--bs", type=int, default=32)
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 128])
    parser.add_argument("--models", nargs="+", choices=sorted(MODELS), default=list(MODELS))
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", "This CPU has no native bfloat16")  # measuring exactly that
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU flags: {cpu_bf16_flags()}, "
          f"native bf16 (oneDNN): {cpu_has_native_bf16()}; "
          f"bs {args.bs}, {args.batches} batches x {args.runs} runs per cell (median, first batch left out)", flush=True)
    header = f"{'model':<14} {'size':>4}  {'fp32 ms/batch':>13}  {'bf16 ms/batch':>13}  {'speed-up':>8}  {'loss gap':>8}"
    print(header)
    print("-" * len(header))
    for name in args.models:
        factory = MODELS[name]
        for size in args.sizes:
            data = make_data(size, args.batches, args.bs)
            run(factory, data, False)  # warm-up: allocator, first-call dispatch
            times = {False: [], True: []}
            losses = {}
            for i in range(args.runs):
                for fp16 in (False, True) if i % 2 == 0 else (True, False):
                    seconds, losses[fp16] = run(factory, data, fp16)
                    times[fp16].append(seconds)
            fp32, bf16 = statistics.median(times[False]), statistics.median(times[True])
            gap = abs(losses[True] - losses[False]) / abs(losses[False])
            print(f"{name:<14} {size:>4}  {fp32 * 1e3:>13.1f}  {bf16 * 1e3:>13.1f}  {fp32 / bf16:>7.2f}x  {gap:>8.2%}",
                  flush=True)


if __name__ == "__main__":
    main()
