"""Benchmark: accuracy of the lesson-1 recipe with cached body features (cnn_learner's default) against
the uncached path, per seed, to choose `DEFAULT_N_VIEWS`.

Data: `../shared/data/hymenoptera` (245 training / 153 validation photos, 224 px, `get_transforms()`)
and `../shared/data/mnist_tiny` (709 / 699 digits, 112 px, `get_transforms(do_flip=False)`). Body: the
real ImageNet MobileNetV2 of `../shared/weights` (copied into a temporary torch hub cache). The recipe,
as `fastbase train` runs it: `lr_find()` (its valley kept within 1e-3..1e-2, the command line's rule),
`fit_one_cycle(--frozen-epochs, lr)` with the body frozen, `unfreeze()`,
`fit_one_cycle(--unfrozen-epochs, slice(lr/100, lr/10))`. Settings:

  uncached     cnn_learner(..., feature_cache=False)
  views=k      cnn_learner's automatic FeatureCache with n_views=k: lr_find and the frozen fit run the
               head on k cached augmented passes over the training set, used in turn by the epochs

Every (data set, seed, setting) starts from the same seed; results go to --out (one JSON line per run,
so a run cut short keeps what it measured) and a table per data set: validation accuracy after the
frozen stage and at the end, per seed and the mean, and the seconds of the whole recipe.

    python bench/cache_accuracy.py [--datasets hymenoptera,mnist_tiny] [--seeds 0,1,2] [--views 1,4]
        [--frozen-epochs 4] [--unfrozen-epochs 2] [--out cache_accuracy.jsonl] [--report FILE] [--quick]

`--report FILE` prints the tables of an earlier run's file. `--quick`: 16 + 8 images of each class at
64 px, one epoch per stage, 5 lr_find iterations, one seed: a smoke test, its figures mean nothing.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's fastbase
from transfer import HUB_NAME, SHARED, WEIGHTS

DATASETS = {"hymenoptera": ("val", 224, True), "mnist_tiny": ("valid", 112, False)}  # valid folder, size, flips
LR_RANGE = (1e-3, 1e-2)


def run_one(dataset: str, root: Path, seed: int, views: int | None, cfg: dict) -> dict:
    from fastbase.core import set_seed
    from fastbase.data import imagenet_stats
    from fastbase.metrics import accuracy
    from fastbase.vision import models
    from fastbase.vision.data import ImageDataBunch
    from fastbase.vision.feature_cache import FeatureCache
    from fastbase.vision.learner import cnn_learner
    from fastbase.vision.transforms import get_transforms

    valid, size, flip = DATASETS[dataset]
    size = cfg["size"] or size
    set_seed(seed)
    start = time.perf_counter()
    data = ImageDataBunch.from_folder(root, train="train", valid=valid, ds_tfms=get_transforms(do_flip=flip),
                                      size=size, bs=cfg["bs"], seed=seed).normalize(imagenet_stats)
    learn = cnn_learner(data, models.mobilenet_v2, metrics=accuracy, silent=True,
                        feature_cache=False if views is None else None)
    if views is not None:  # the automatic cache cnn_learner adds, with this many views
        learn.callbacks = [cb for cb in learn.callbacks if not isinstance(cb, FeatureCache)]
        learn.callbacks.append(FeatureCache(n_views=views, auto=True))
    suggestion = learn.lr_find(num_it=cfg["lr_find_iters"])
    lr = LR_RANGE[0] if suggestion is None else min(max(suggestion.valley, LR_RANGE[0]), LR_RANGE[1])
    learn.fit_one_cycle(cfg["frozen_epochs"], lr)
    frozen = learn.recorder.metrics[-1][0]
    if cfg["unfrozen_epochs"]:
        learn.unfreeze()
        learn.fit_one_cycle(cfg["unfrozen_epochs"], slice(lr / 100, lr / 10))
    return {"dataset": dataset, "seed": seed, "setting": "uncached" if views is None else f"views={views}",
            "lr": lr, "frozen_accuracy": float(frozen), "accuracy": float(learn.recorder.metrics[-1][0]),
            "seconds": time.perf_counter() - start, "load": os.getloadavg()[0]}


def quick_copy(src: Path, dst: Path, valid: str, n_train: int = 16, n_valid: int = 8) -> Path:
    for split, n in (("train", n_train), (valid, n_valid)):
        for cls in sorted(p for p in (src / split).iterdir() if p.is_dir()):
            (dst / split / cls.name).mkdir(parents=True)
            for f in sorted(cls.iterdir())[:n]:
                (dst / split / cls.name / f.name).symlink_to(f)
    return dst


def report(lines: list[dict]) -> list[str]:
    out = []
    for dataset in dict.fromkeys(r["dataset"] for r in lines):
        rows = [r for r in lines if r["dataset"] == dataset]
        seeds = sorted({r["seed"] for r in rows})
        out += [f"\n{dataset}: validation accuracy after the frozen stage / at the end, per seed",
                "| setting | " + " | ".join(f"seed {s}" for s in seeds) + " | mean frozen | mean end | mean s |",
                "|---|" + "---|" * (len(seeds) + 3)]
        for setting in dict.fromkeys(r["setting"] for r in rows):
            runs = {r["seed"]: r for r in rows if r["setting"] == setting}
            cells = [f"{runs[s]['frozen_accuracy']:.4f} / {runs[s]['accuracy']:.4f}" if s in runs else "—"
                     for s in seeds]
            done = list(runs.values())
            out.append(f"| {setting} | " + " | ".join(cells) +
                       f" | {statistics.mean(r['frozen_accuracy'] for r in done):.4f}"
                       f" | {statistics.mean(r['accuracy'] for r in done):.4f}"
                       f" | {statistics.mean(r['seconds'] for r in done):.0f} |")
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default="hymenoptera,mnist_tiny")
    parser.add_argument("--seeds", default=None, help="comma-separated (0,1,2; --quick: 0)")
    parser.add_argument("--views", default="1,4", help="n_views settings besides the uncached one")
    parser.add_argument("--frozen-epochs", type=int, default=None, help="(4; --quick: 1)")
    parser.add_argument("--unfrozen-epochs", type=int, default=None, help="(2; --quick: 1)")
    parser.add_argument("--lr-find-iters", type=int, default=None, help="(100; --quick: 5)")
    parser.add_argument("--size", type=int, default=None, help="image size (224 hymenoptera, 112 mnist_tiny; --quick: 64)")
    parser.add_argument("--bs", type=int, default=None, help="(64; --quick: 8)")
    parser.add_argument("--out", default="cache_accuracy.jsonl", help="JSON lines, appended to")
    parser.add_argument("--report", default=None, help="only print the tables of this file")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.report:
        print("\n".join(report([json.loads(line) for line in Path(args.report).read_text().splitlines() if line])))
        return 0
    if not WEIGHTS.is_file():
        print(f"skipped: needs {WEIGHTS} (the project's ../shared folder)")
        return 0
    for name, full, small in (("seeds", "0,1,2", "0"), ("frozen_epochs", 4, 1), ("unfrozen_epochs", 2, 1),
                              ("lr_find_iters", 100, 5), ("bs", 64, 8)):
        if getattr(args, name) is None:
            setattr(args, name, small if args.quick else full)
    cfg = {"frozen_epochs": args.frozen_epochs, "unfrozen_epochs": args.unfrozen_epochs, "bs": args.bs,
           "lr_find_iters": args.lr_find_iters, "size": 64 if args.quick else args.size}
    settings = [None, *(int(v) for v in args.views.split(",") if v.strip())]
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        checkpoints = Path(tmp, "torch", "hub", "checkpoints")
        checkpoints.mkdir(parents=True)
        shutil.copy(WEIGHTS, checkpoints / HUB_NAME)
        os.environ.update(TORCH_HOME=str(Path(tmp, "torch")), FASTBASE_NO_BAR="1")
        for dataset in args.datasets.split(","):
            root = SHARED / "data" / dataset
            if not root.is_dir():
                print(f"skipped {dataset}: {root} not found", file=sys.stderr)
                continue
            if args.quick:
                root = quick_copy(root, Path(tmp, dataset), DATASETS[dataset][0])
            for seed in (int(s) for s in args.seeds.split(",")):
                for views in settings:
                    result = run_one(dataset, root, seed, views, cfg)
                    results.append(result)
                    print(json.dumps(result), file=sys.stderr, flush=True)
                    with open(args.out, "a") as f:
                        f.write(json.dumps(result) + "\n")
    print(("QUICK SMOKE TEST: these figures mean nothing." if args.quick else "") + "\n".join(report(results)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
