"""Benchmark: the speed side of choosing a backbone, torchvision's and timm's, on this machine.

Data: `../shared/data/hymenoptera` (ants and bees photos) at --size px, batch size --bs. Every
backbone starts from random weights (nothing downloaded) through `cnn_learner(data, ARCH,
pretrained=False)`, so each gets fastbase's defaults (the new head, channels-last on the CPU for
the families measured faster that way). For each backbone:

  epoch_s      seconds of one training epoch (forward, loss, backward, AdamW step over the training
               set; validation excluded), the median of --epochs epochs after one untimed warm-up epoch
  bs1_ms/bsN_ms median milliseconds of an eval-mode forward pass under `torch.inference_mode` at batch
               size 1 and --bs (random input at --size, `fastbase.vision.compare.measure_latency`)
  params       parameters of the whole model (body and head)

Backbones take turns epoch by epoch and round by round, in an order that reverses each time (the
first of a round ran up to 30% slower here), so they share the machine's noise. The
last lines compare timm's resnet18 with torchvision's (same architecture): timm's implementation
overhead, expected within 5%. Needs timm (pip install "fastbase[timm]").

    python bench/backbones.py [--size 64] [--bs 32] [--epochs 2] [--threads 2]
                              [--archs resnet18 timm:resnet18 timm:convnext_atto timm:efficientnet_b0
                                       timm:mobilenetv3_large_100]
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("FASTBASE_SHARED", ROOT.parent / "shared"))
DATA = SHARED / "data" / "hymenoptera"
ARCHS = ["resnet18", "timm:resnet18", "timm:convnext_atto", "timm:efficientnet_b0", "timm:mobilenetv3_large_100"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=64, help="image size in px (default 64)")
    parser.add_argument("--bs", type=int, default=32, help="batch size for training and the second latency (32)")
    parser.add_argument("--epochs", type=int, default=2, help="timed epochs per backbone after a warm-up one (2)")
    parser.add_argument("--rounds", type=int, default=5, help="latency rounds; each times --runs passes (5)")
    parser.add_argument("--runs", type=int, default=5, help="forward passes per latency round (5)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--archs", nargs="+", default=ARCHS, help="architectures as cnn_learner takes them")
    args = parser.parse_args()
    if not DATA.is_dir():
        print(f"skipped: needs {DATA} (the project's ../shared folder)")
        return 0
    os.environ.setdefault("FASTBASE_NO_BAR", "1")
    import torch

    from fastbase.core import set_seed
    from fastbase.vision import ImageDataBunch, cnn_learner, imagenet_stats
    from fastbase.vision.compare import TrainTimer as EpochTimer
    from fastbase.vision.compare import measure_latency

    torch.set_num_threads(args.threads)
    set_seed(0)
    data = ImageDataBunch.from_folder(DATA, valid="val", size=args.size, bs=args.bs, num_workers=0,
                                      device="cpu").normalize(imagenet_stats)
    timm_version = "not installed"
    try:
        import timm
        timm_version = timm.__version__
    except ImportError:
        pass
    print(f"# backbones: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {platform.processor() or platform.machine()}, "
          f"{args.threads} threads, torch {torch.__version__}, timm {timm_version}, load {os.getloadavg()[0]:.1f}")
    print(f"# {DATA.name}: {len(data.train_ds)} train images, {args.size} px, bs {args.bs}, random init\n")
    learners, timers = {}, {}
    for arch in args.archs:
        timers[arch] = EpochTimer()
        learners[arch] = cnn_learner(data, arch, pretrained=False, silent=True, callbacks=[timers[arch]])
        learners[arch].fit(1, 1e-3)  # warm-up epoch
        timers[arch].seconds.clear()
    for i in range(args.epochs):  # the order reverses every epoch: the first of a round runs slower here
        for arch in args.archs if i % 2 == 0 else args.archs[::-1]:
            learners[arch].fit(1, 1e-3)
    latency = {arch: {1: [], args.bs: []} for arch in args.archs}
    for i in range(args.rounds):
        for arch in args.archs if i % 2 == 0 else args.archs[::-1]:
            for bs, ms in measure_latency(learners[arch].model, (3, args.size, args.size), (1, args.bs),
                                          runs=args.runs, warmup=2).items():
                latency[arch][bs].append(ms)
    rows = {}
    print(f"| arch | epoch_s | bs1_ms | bs{args.bs}_ms | params | channels_last |")
    print("|---|---:|---:|---:|---:|---|")
    for arch in args.archs:
        learn = learners[arch]
        rows[arch] = (statistics.median(timers[arch].seconds), statistics.median(latency[arch][1]),
                      statistics.median(latency[arch][args.bs]))
        channels_last = any(type(cb).__name__ == "ChannelsLast" for cb in learn.callbacks)
        print(f"| {arch} | {rows[arch][0]:.2f} | {rows[arch][1]:.1f} | {rows[arch][2]:.1f} | "
              f"{sum(p.numel() for p in learn.model.parameters()):,} | {channels_last} |")
    if "resnet18" in rows and "timm:resnet18" in rows:
        print("\ntimm resnet18 / torchvision resnet18 (above 1: timm slower): " + ", ".join(
            f"{what} {t / tv:.3f}" for what, t, tv in zip(("epoch", "bs1", f"bs{args.bs}"), rows["timm:resnet18"],
                                                          rows["resnet18"])))
    print(f"# load after: {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
