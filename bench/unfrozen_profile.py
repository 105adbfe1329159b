"""Benchmark: where one unfrozen epoch's time goes (data, forward, loss, backward, optimizer step),
and what the optimizer's implementation (for-loop, foreach, fused) and torch.compile change.

Data: `../shared/data/hymenoptera` (245 training photos), --size px (224), `get_transforms()`, bs
--bs (64). Model: cnn_learner(mobilenet_v2) with the real ImageNet body of `../shared/weights`,
unfrozen (cnn_learner's BatchNorm defaults: running statistics fixed once unfrozen), channels-last
(fastbase's CPU default). One warm-up epoch (decodes the photos into the item cache; compiles with
--compile), then --epochs timed epochs per setting; a callback
timestamps the loop's events, so each part is the wall time between two events of the same batch:

  data       after_batch of the batch before -> before_batch (the loader's next batch, transforms)
  forward    before_batch -> after_pred (the model's forward pass)
  loss       after_pred -> after_loss
  backward   before_backward -> after_backward
  step       before_step -> after_step (weight decay, the optimizer's step, zero_grad)

The epoch column includes the validation pass; each part's share is of the five parts' sum.

Settings: the optimizer `torch.optim.Adam` as fastbase's `Adam` builds it (for-loop on the CPU),
`foreach=True`, `fused=True`; `--compile` adds the default with `torch.compile(model)` and counts
the compile time (the warm-up epoch) separately.

    python bench/unfrozen_profile.py [--size 224] [--bs 64] [--epochs 1] [--compile] [--quick]
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's fastbase
from transfer import DATA, HUB_NAME, WEIGHTS
from vs_fastai import quick_subset

PARTS = ("data", "forward", "loss", "backward", "step")


def make_timer():
    from fastbase.callback import Callback, Order

    class PartTimer(Callback):
        """Seconds per part of each training batch (see the module docstring)."""
        order = Order.DISTRIBUTED - 10

        def __init__(self):
            self.parts = {p: 0.0 for p in PARTS}
            self.last = None

        def before_train(self):
            self.last = time.perf_counter()

        def before_batch(self):
            self.t = time.perf_counter()
            self.parts["data"] += self.t - self.last

        def after_pred(self):
            now = time.perf_counter()
            self.parts["forward"] += now - self.t
            self.t = now

        def after_loss(self):
            now = time.perf_counter()
            self.parts["loss"] += now - self.t

        def before_backward(self):
            self.t = time.perf_counter()

        def after_backward(self):
            self.parts["backward"] += time.perf_counter() - self.t

        def before_step(self):
            self.t = time.perf_counter()

        def after_step(self):
            self.parts["step"] += time.perf_counter() - self.t

        def after_batch(self):
            self.last = time.perf_counter()

        def after_train(self):
            self.parts["train"] = time.perf_counter() - self.started

        def before_epoch(self):
            self.started = time.perf_counter()

    return PartTimer


def run(name: str, opt_kwargs: dict, compile_model: bool, data, args) -> dict:
    import torch

    from fastbase.core import set_seed
    from fastbase.vision import models
    from fastbase.vision.learner import cnn_learner

    set_seed(0)
    opt_func = partial(torch.optim.Adam, betas=(0.9, 0.99), **opt_kwargs)
    learn = cnn_learner(data, models.mobilenet_v2, opt_func=opt_func, silent=True)
    learn.unfreeze()
    if compile_model:
        learn.model = torch.compile(learn.model)
    timer_cls = make_timer()
    start = time.perf_counter()
    learn.fit(1, slice(3e-5, 3e-4), callbacks=[timer_cls()])  # warm-up: item cache, compilation
    warm = time.perf_counter() - start
    totals = []
    for _ in range(args.epochs):
        timer = timer_cls()
        start = time.perf_counter()
        learn.fit(1, slice(3e-5, 3e-4), callbacks=[timer])
        totals.append((time.perf_counter() - start, timer.parts))
    epoch = statistics.median(t for t, _ in totals)
    parts = {p: statistics.median(pt[p] for _, pt in totals) for p in (*PARTS, "train")}
    return {"name": name, "warm_s": warm, "epoch_s": epoch, **parts}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=None, help="(224; --quick: 64)")
    parser.add_argument("--bs", type=int, default=None, help="(64; --quick: 8)")
    parser.add_argument("--epochs", type=int, default=1, help="timed epochs per setting (the median is shown)")
    parser.add_argument("--compile", action="store_true", help="also torch.compile(model) (needs a C++ compiler)")
    parser.add_argument("--quick", action="store_true", help="32 photos at 64 px: a smoke test, figures mean nothing")
    args = parser.parse_args()
    if not (DATA.is_dir() and WEIGHTS.is_file()):
        print(f"skipped: needs {DATA} and {WEIGHTS}")
        return 0
    args.size = args.size or (64 if args.quick else 224)
    args.bs = args.bs or (8 if args.quick else 64)
    from fastbase.data import imagenet_stats
    from fastbase.vision.data import ImageDataBunch
    from fastbase.vision.transforms import get_transforms

    load_start = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        checkpoints = Path(tmp, "torch", "hub", "checkpoints")
        checkpoints.mkdir(parents=True)
        shutil.copy(WEIGHTS, checkpoints / HUB_NAME)
        os.environ.update(TORCH_HOME=str(Path(tmp, "torch")), FASTBASE_NO_BAR="1")
        root = quick_subset(Path(tmp, "data")) if args.quick else DATA
        data = ImageDataBunch.from_folder(root, train="train", valid="val", ds_tfms=get_transforms(), size=args.size,
                                          bs=args.bs, seed=0).normalize(imagenet_stats)
        settings = [("Adam (for-loop, the default)", {}, False), ("Adam foreach=True", {"foreach": True}, False),
                    ("Adam fused=True", {"fused": True}, False)]
        if args.compile:
            settings.append(("default + torch.compile", {}, True))
        results = [run(name, kw, comp, data, args) for name, kw, comp in settings]
    print(f"{'QUICK SMOKE TEST: figures mean nothing. ' if args.quick else ''}hymenoptera train (245), {args.size} px, "
          f"bs {args.bs}, mobilenet_v2 unfrozen, channels-last; median of {args.epochs} epoch(s) after a warm-up")
    print(f"load average at start {', '.join(f'{v:.1f}' for v in load_start)}, at end "
          f"{', '.join(f'{v:.1f}' for v in os.getloadavg())}\n")
    print("| setting | warm-up epoch s | epoch s | training s | " + " | ".join(f"{p} s (%)" for p in PARTS)
          + " |")
    print("|---|---|---|---|" + "---|" * len(PARTS))
    for r in results:
        parts = sum(r[p] for p in PARTS)
        cells = " | ".join(f"{r[p]:.2f} ({100 * r[p] / parts:.0f}%)" for p in PARTS)
        print(f"| {r['name']} | {r['warm_s']:.1f} | {r['epoch_s']:.1f} | {r['train']:.1f} | {cells} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
