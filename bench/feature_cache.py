"""Benchmark: frozen-body feature caching against the uncached ways of training the head.

Data: `../shared/data/hymenoptera` (245 training, 153 validation photos), resized to --size px
(default 128), no augmentation (caching needs deterministic training transforms), ImageNet stats.
Body: the real ImageNet MobileNetV2 of `../shared/weights`, copied into a temporary torch hub cache
so that `cnn_learner(data, models.mobilenet_v2)` loads it as after a download. The same seed for
every setting; each trains `fit_one_cycle(--epochs, 1e-3)`:

  unfrozen                 learn.unfreeze(): the whole network trains, BatchNorm too (reference)
  frozen, train_bn=True    fastai's default: BatchNorm of the body trains, so backward runs through it
  frozen, BN eval          train_bn=False, freeze_bn_stats=True (cnn_learner's defaults for a
                           pretrained body are the same while frozen): the body only runs forward
  frozen, BN eval, cached  the same with FeatureCache(): the body runs once per fit, then the head
                           trains on its cached (pooled) features

The table gives the median time per training step (a batch already loaded: forward, backward,
optimizer step), the median time per epoch (loading, training and validation), the time spent
building the cache before the first epoch, the whole fit, and the final validation accuracy. The
cached run should match the BN-eval run's accuracy (same batches, same dropout draws).

    python bench/feature_cache.py [--size 128] [--bs 32] [--epochs 3] [--threads 2] [--workers N]

Several minutes on 2 idle CPU cores, most of it in the unfrozen and train_bn=True rows.
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("FASTBASE_SHARED", ROOT.parent / "shared"))
DATA = SHARED / "data" / "hymenoptera"
WEIGHTS = SHARED / "weights" / "mobilenet_v2_imagenet_body.pth"
HUB_NAME = "mobilenet_v2-b0353104.pth"  # torchvision's file name for MobileNet_V2_Weights.IMAGENET1K_V1

SETTINGS = [  # (name, cnn_learner arguments, unfreeze, cache)
    ("unfrozen", {"train_bn": True, "freeze_bn_stats": False}, True, False),
    ("frozen, train_bn=True", {"train_bn": True, "freeze_bn_stats": False}, False, False),
    ("frozen, BN eval", {"train_bn": False, "freeze_bn_stats": True}, False, False),
    ("frozen, BN eval, cached", {"train_bn": False, "freeze_bn_stats": True}, False, True),
]


def run(name, kwargs, unfreeze, cache, args) -> dict:
    from fastbase.callback import Callback, Order
    from fastbase.core import set_seed
    from fastbase.data import imagenet_stats
    from fastbase.metrics import accuracy
    from fastbase.vision import models
    from fastbase.vision.data import ImageDataBunch
    from fastbase.vision.feature_cache import FeatureCache
    from fastbase.vision.learner import cnn_learner

    class Timer(Callback):
        order = Order.DISTRIBUTED - 10  # before every fastbase callback

        def __init__(self):
            self.steps, self.epochs, self.first_epoch = [], [], None

        def before_epoch(self):
            self.epoch_start = time.perf_counter()
            self.first_epoch = self.first_epoch or self.epoch_start

        def after_epoch(self):
            self.epochs.append(time.perf_counter() - self.epoch_start)

        def before_batch(self):
            self.batch_start = time.perf_counter()

        def after_batch(self):
            if self.learn.training:
                self.steps.append(time.perf_counter() - self.batch_start)

    set_seed(args.seed)
    data = ImageDataBunch.from_folder(DATA, train="train", valid="val", size=args.size, bs=args.bs, seed=args.seed,
                                      num_workers=args.workers).normalize(imagenet_stats)
    learn = cnn_learner(data, models.mobilenet_v2, metrics=accuracy, silent=True, **kwargs)
    if unfreeze:
        learn.unfreeze()
    timer = Timer()
    start = time.perf_counter()
    learn.fit_one_cycle(args.epochs, 1e-3, callbacks=[timer, *([FeatureCache()] if cache else [])])
    total = time.perf_counter() - start
    return {"name": name, "step": statistics.median(timer.steps), "epoch": statistics.median(timer.epochs),
            "cache": timer.first_epoch - start, "fit": total, "accuracy": learn.recorder.metrics[-1][0],
            "workers": data.train_dl.num_workers}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--bs", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--workers", type=int, default=None, help="loader workers (default: fastbase's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", default=None, help="comma-separated row numbers (1-4) to run")
    args = parser.parse_args()
    if not (DATA.is_dir() and WEIGHTS.is_file()):
        print(f"skipped: needs {DATA} and {WEIGHTS} (the project's ../shared folder)")
        return 0
    torch.set_num_threads(args.threads)
    chosen = [SETTINGS[int(i) - 1] for i in args.only.split(",")] if args.only else SETTINGS
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        checkpoints = Path(tmp, "torch", "hub", "checkpoints")
        checkpoints.mkdir(parents=True)
        shutil.copy(WEIGHTS, checkpoints / HUB_NAME)
        os.environ.update({"TORCH_HOME": str(Path(tmp, "torch")), "FASTBASE_HOME": str(Path(tmp, "fb")),
                           "FASTBASE_NO_BAR": "1"})
        for setting in chosen:
            print(f"running {setting[0]} ...", file=sys.stderr, flush=True)
            rows.append(run(*setting, args))

    print(f"\nhymenoptera, mobilenet_v2 (real ImageNet body), {args.size} px, bs {args.bs}, {args.epochs} epochs, "
          f"{args.threads} threads, {rows[0]['workers']} loader workers; load average at the end "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    header = f"{'setting':<26}{'s/step':>9}{'s/epoch':>9}{'cache s':>9}{'fit s':>8}{'accuracy':>10}"
    print(header)
    print("-" * len(header))
    for r in rows:
        print(f"{r['name']:<26}{r['step']:>9.3f}{r['epoch']:>9.2f}{r['cache']:>9.2f}{r['fit']:>8.1f}"
              f"{r['accuracy']:>10.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
