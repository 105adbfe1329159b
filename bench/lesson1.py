"""Benchmark: the whole lesson-1 workflow, fastbase defaults vs fastbase without the feature cache vs fastai 2.8.

Data: `../shared/data/hymenoptera` (245 training, 153 validation photos), --size px (224), bs --bs (64),
each framework's default augmentation (fastbase `get_transforms()`, fastai `aug_transforms()`) and
default loader workers. Body: the real ImageNet MobileNetV2 of `../shared/weights`, copied into a
temporary torch hub cache so that both frameworks load it through torchvision's weights API.

The workflow, the same epochs and learning rates in every row: data bunch, `lr_find()` (--lr-find-iters
iterations; its suggestion is printed but not used, so that every row trains with the same lr),
`fit_one_cycle(--frozen-epochs, --lr)` with the body frozen, `unfreeze()`,
`fit_one_cycle(--unfrozen-epochs, slice(--lr/100, --lr/10))`, then validation and the interpretation
(`ClassificationInterpretation.from_learner`). Each row runs in its own process, one after the other:

  fastbase default    cnn_learner's defaults: frozen body with BatchNorm fixed, so lr_find, the frozen
                      fit and the interpretation of the frozen model run the head on cached body features
                      (DEFAULT_N_VIEWS augmented views)
  fastbase no cache   the same with cnn_learner(..., feature_cache=False)
  fastai 2.8          vision_learner(dls, mobilenet_v2, metrics=accuracy) (fastai's defaults: BatchNorm
                      trains while frozen), in --fastai-python when it exists

Columns: seconds of each stage and the total, validation accuracy at the end (153 photos: one photo
is 0.65 points), the process's peak RSS (loader worker processes not included), the 1-minute load
average when the row ended. The goal of issue 18: fastbase default's total at most 0.2x fastai's, at
accuracy no lower.

    python bench/lesson1.py [--quick] [--size 224] [--bs 64] [--frozen-epochs 4] [--unfrozen-epochs 2]
        [--lr 3e-3] [--lr-find-iters 100] [--seed 0] [--only default,nocache,fastai] [--fastai-python PATH]

`--quick` is a smoke test of the script (32 training / 16 validation photos, 64 px, bs 8, 1+1 epochs, 5
lr_find iterations): its figures mean nothing.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _memory import peak_rss_mb
from transfer import DATA, HUB_NAME, WEIGHTS
from vs_fastai import machine_info, quick_subset, run_child

ROOT = Path(__file__).resolve().parents[1]
ROWS = {"default": "fastbase default", "nocache": "fastbase no cache", "fastai": "fastai 2.8"}
STAGES = ("data", "lr_find", "frozen", "unfrozen", "validate")


class Stopwatch:
    def __init__(self):
        self.times, self.start = {}, time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.times[name], self.start = now - self.start, now


def recipe(learn, cfg: dict, clock: Stopwatch, find_lr, interpretation) -> dict:
    """The workflow after the data: lr_find (`find_lr(learn)` returns the valley), the two stages,
    validation and the interpretation's most confused pairs."""
    suggestion = find_lr(learn)
    clock.lap("lr_find")
    learn.fit_one_cycle(cfg["frozen_epochs"], cfg["lr"])
    clock.lap("frozen")
    learn.unfreeze()
    learn.fit_one_cycle(cfg["unfrozen_epochs"], slice(cfg["lr"] / 100, cfg["lr"] / 10))
    clock.lap("unfrozen")
    accuracy = float(learn.validate()[1])
    interpretation.from_learner(learn).most_confused()
    clock.lap("validate")
    return {"seconds": clock.times, "accuracy": accuracy, "peak_rss_mb": peak_rss_mb(), "suggested_lr": suggestion}


def child_fastbase(cfg: dict, cache: bool) -> dict:
    from fastbase.core import set_seed
    from fastbase.data import imagenet_stats
    from fastbase.interpret import ClassificationInterpretation
    from fastbase.metrics import accuracy
    from fastbase.vision import models
    from fastbase.vision.data import ImageDataBunch
    from fastbase.vision.learner import cnn_learner
    from fastbase.vision.transforms import get_transforms

    set_seed(cfg["seed"])
    clock = Stopwatch()
    data = ImageDataBunch.from_folder(cfg["data"], train="train", valid="val", ds_tfms=get_transforms(),
                                      size=cfg["size"], bs=cfg["bs"], seed=cfg["seed"]).normalize(imagenet_stats)
    learn = cnn_learner(data, models.mobilenet_v2, metrics=accuracy, silent=True,
                        feature_cache=None if cache else False)
    clock.lap("data")

    def find_lr(learn):
        suggestion = learn.lr_find(num_it=cfg["lr_find_iters"])
        return None if suggestion is None else suggestion.valley

    return recipe(learn, cfg, clock, find_lr, ClassificationInterpretation)


def child_fastai(cfg: dict) -> dict:
    import fastai
    from fastai.vision import all as fv
    from torchvision.models import mobilenet_v2

    fv.set_seed(cfg["seed"])
    clock = Stopwatch()
    size = cfg["size"]
    dls = fv.ImageDataLoaders.from_folder(
        cfg["data"], train="train", valid="val", item_tfms=fv.Resize(size), bs=cfg["bs"], seed=cfg["seed"],
        batch_tfms=[*fv.aug_transforms(size=size), fv.Normalize.from_stats(*fv.imagenet_stats)])
    # fastai 2.8 has no model_meta entry for torchvision's mobilenet_v2: cut after `features`, as fastbase does
    fv.model_meta[mobilenet_v2] = {"cut": -1, "split": fv.default_split, "stats": fv.imagenet_stats}
    learn = fv.vision_learner(dls, mobilenet_v2, metrics=fv.accuracy, path=cfg["tmp"])
    clock.lap("data")

    def find_lr(learn):
        return float(learn.lr_find(num_it=cfg["lr_find_iters"], show_plot=False).valley)

    with learn.no_bar(), learn.no_logging():
        result = recipe(learn, cfg, clock, find_lr, fv.ClassificationInterpretation)
    return {**result, "version": fastai.__version__}


def table(results: dict) -> list[str]:
    head = ["row", *(f"{s} s" for s in STAGES), "total s", "accuracy", "peak RSS MB", "load", "lr_find valley"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row, r in results.items():
        total = sum(r["seconds"].values())
        cells = [ROWS[row], *(f"{r['seconds'][s]:.1f}" for s in STAGES), f"{total:.1f}", f"{r['accuracy']:.4f}",
                 f"{r['peak_rss_mb']:.0f}", f"{r['load']:.1f}",
                 "—" if r["suggested_lr"] is None else f"{r['suggested_lr']:.2g}"]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=None, help="image size (224; --quick: 64)")
    parser.add_argument("--bs", type=int, default=None, help="batch size (64; --quick: 8)")
    parser.add_argument("--frozen-epochs", type=int, default=None, help="(4; --quick: 1)")
    parser.add_argument("--unfrozen-epochs", type=int, default=None, help="(2; --quick: 1)")
    parser.add_argument("--lr-find-iters", type=int, default=None, help="(100; --quick: 5)")
    parser.add_argument("--lr", type=float, default=3e-3, help="max lr of the frozen stage; unfrozen: slice(lr/100, lr/10)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", default=",".join(ROWS), help="comma-separated rows: default, nocache, fastai")
    parser.add_argument("--fastai-python", default="/tmp/fastai-venv/bin/python")
    parser.add_argument("--quick", action="store_true", help="smoke test on a tiny subset; the figures mean nothing")
    parser.add_argument("--child", choices=ROWS, help=argparse.SUPPRESS)
    parser.add_argument("--config", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        cfg = json.loads(args.config)
        result = child_fastai(cfg) if args.child == "fastai" else child_fastbase(cfg, args.child == "default")
        print("RESULT " + json.dumps(result), flush=True)
        return 0
    if not (DATA.is_dir() and WEIGHTS.is_file()):
        print(f"skipped: needs {DATA} and {WEIGHTS} (the project's ../shared folder)")
        return 0
    for name, full, small in (("size", 224, 64), ("bs", 64, 8), ("frozen_epochs", 4, 1), ("unfrozen_epochs", 2, 1),
                              ("lr_find_iters", 100, 5)):
        if getattr(args, name) is None:
            setattr(args, name, small if args.quick else full)
    rows = [r.strip() for r in args.only.split(",") if r.strip()]
    unknown = [r for r in rows if r not in ROWS]
    if unknown:
        raise SystemExit(f"--only: unknown rows {unknown}; use {', '.join(ROWS)}")
    if "fastai" in rows and not Path(args.fastai_python).exists():
        print(f"fastai not measured: {args.fastai_python} not found", file=sys.stderr)
        rows.remove("fastai")

    load_start, begin, results = os.getloadavg(), time.perf_counter(), {}
    with tempfile.TemporaryDirectory() as tmp:
        checkpoints = Path(tmp, "torch", "hub", "checkpoints")
        checkpoints.mkdir(parents=True)
        shutil.copy(WEIGHTS, checkpoints / HUB_NAME)
        data = quick_subset(Path(tmp, "data")) if args.quick else DATA
        env = {**os.environ, "TORCH_HOME": str(Path(tmp, "torch")), "FASTBASE_HOME": str(Path(tmp, "fb")),
               "FASTBASE_NO_BAR": "1", "PYTHONPATH": str(ROOT)}  # this checkout's fastbase
        cfg = {"data": str(data), "tmp": str(Path(tmp, "fastai")), "size": args.size, "bs": args.bs,
               "seed": args.seed, "frozen_epochs": args.frozen_epochs, "unfrozen_epochs": args.unfrozen_epochs,
               "lr_find_iters": args.lr_find_iters, "lr": args.lr}
        for row in rows:
            print(f"{ROWS[row]} ... ({time.perf_counter() - begin:.0f} s so far)", file=sys.stderr, flush=True)
            python = args.fastai_python if row == "fastai" else sys.executable
            try:
                result = run_child(python, row, cfg, env, __file__)
            except RuntimeError as e:  # one row failing still leaves the others' figures
                print(e, file=sys.stderr, flush=True)
                continue
            result["load"] = os.getloadavg()[0]
            print(f"  {json.dumps(result)}", file=sys.stderr, flush=True)
            results[row] = result

    version = next((r["version"] for r in results.values() if "version" in r), None)
    print(f"\n{'QUICK SMOKE TEST (tiny subset): these figures mean nothing. ' if args.quick else ''}"
          f"hymenoptera, MobileNetV2 ImageNet body, {args.size} px, bs {args.bs}, seed {args.seed}; lr_find "
          f"{args.lr_find_iters} iterations; fit_one_cycle({args.frozen_epochs}, {args.lr:g}) frozen, "
          f"fit_one_cycle({args.unfrozen_epochs}, slice({args.lr / 100:g}, {args.lr / 10:g})) unfrozen")
    print(f"{machine_info()}{f', fastai {version}' if version else ''}")
    print(f"load average (1, 5, 15 min): at start {', '.join(f'{v:.1f}' for v in load_start)}; at end "
          f"{', '.join(f'{v:.1f}' for v in os.getloadavg())}; whole run {time.perf_counter() - begin:.0f} s\n")
    if not results:
        print("no row was measured")
        return 1
    print("\n".join(table(results)))
    if "default" in results and "fastai" in results:
        mine, theirs = results["default"], results["fastai"]
        ratio = sum(mine["seconds"].values()) / sum(theirs["seconds"].values())
        ok = ratio <= 0.2 and mine["accuracy"] >= theirs["accuracy"]
        print(f"\nGoal (issue 18): fastbase default total / fastai total = {ratio:.2f} (goal <= 0.2), accuracy "
              f"{mine['accuracy']:.4f} vs {theirs['accuracy']:.4f} (no lower): {'PASS' if ok else 'MISS'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
