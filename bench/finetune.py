"""Lesson 1's two stages on real photos, per stage, fastbase beside fastai 2.8 (issue 32).

The recipe a user follows, the same in both frameworks: a MobileNetV2 body with real ImageNet
weights (`../shared/weights`, through a temporary torch hub cache), `lr_find()` and its valley
suggestion `lr`, `fit_one_cycle(FROZEN, lr)` with the body frozen, `unfreeze()`,
`fit_one_cycle(UNFROZEN, slice(lr/100, lr/10))`. Each framework takes its own lr_find's valley, as
a user would (`--lr` fixes one for both). Validation accuracy and loss are read after each stage.

Sets (`../shared/data`): hymenoptera (ants/bees, 245 train / 153 valid), imagenette_4 (four
ImageNet classes, 800 / 400), mnist_tiny (3s and 7s, 709 / 699, grayscale digits far from
ImageNet's photos; no flips) and coco_tiny (200 COCO photos, each labelled by the category with
the largest box area, a fixed random fifth held out; built in a temporary folder by `build_coco`).

    python bench/finetune.py [--sets hymenoptera,imagenette_4,mnist_tiny,coco_tiny] [--seeds 0,1,2]
        [--variants default] [--fastai] [--size 160] [--bs 64] [--frozen 3] [--unfrozen 1] [--lr X]
        [--fastai-lr own|fastbase] [--threads 2] [--json out.json]

`--variants` names fastbase settings from VARIANTS (cnn_learner keyword arguments and the second
fit's keyword arguments), so a candidate default can be run beside the current one on every set
and seed. Each run is a child process; the table gives, per run, the lr used, accuracy and valid
loss after each stage, the change the unfrozen stage made, and the seconds of each stage.
A run takes 1-3 minutes (fastbase) or 3-8 minutes (fastai) on 2 CPU cores.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
from functools import partial
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("FASTBASE_SHARED", ROOT.parent / "shared"))
WEIGHTS = SHARED / "weights" / "mobilenet_v2_imagenet_body.pth"
HUB_NAME = "mobilenet_v2-b0353104.pth"  # torchvision's file name for MobileNet_V2_Weights.IMAGENET1K_V1
SETS = {"hymenoptera": ("val", True), "imagenette_4": ("val", True), "mnist_tiny": ("valid", False),
        "coco_tiny": ("valid", True)}  # validation folder, flips

# name -> (cnn_learner kwargs, kwargs of the unfrozen fit_one_cycle)
VARIANTS = {
    "default": ({}, {}),
    "nocache": ({"feature_cache": False}, {}),
    "fastai-bn": ({"train_bn": True, "freeze_bn_stats": False}, {}),
    "bn-eval": ({"freeze_bn_stats": True}, {}),
    "finetune": ({"freeze_bn_stats": "finetune"}, {}),
    "body": ({"freeze_bn_stats": "body"}, {}),
    "wd-bn": ({"bn_wd": True}, {}),
    "onegroup": ({"split_on": lambda m: [m[0], m[1]]}, {}),
    "adabn": ({}, {}),  # the body's BatchNorm statistics re-estimated on the training photos first
    "eps5": ({"opt_func": partial(torch.optim.Adam, betas=(0.9, 0.99), eps=1e-5)}, {}),  # fastai 2's Adam eps
}


def adapt_bn_stats(learn, passes: int = 1) -> None:
    """Experiment (variant `adabn`): re-estimate the body's BatchNorm running statistics on the
    training set (a cumulative average over `passes` augmented passes, no gradients), before the recipe."""
    import torch
    body = learn.model[0]
    bns = [m for m in body.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
    body.train()
    with torch.no_grad():
        for _ in range(passes):
            for xb, _ in learn.data.train_dl:
                body(xb)
    for m, momentum in zip(bns, saved):
        m.momentum = momentum
    body.eval()

FASTBASE_RUN = r"""
import json, resource, sys, time, torch
cfg = json.loads(sys.argv[1])
torch.set_num_threads(cfg["threads"])
from fastbase.core import set_seed
from fastbase.data import imagenet_stats
from fastbase.metrics import accuracy
from fastbase.vision import models
from fastbase.vision.data import ImageDataBunch
from fastbase.vision.learner import cnn_learner
from fastbase.vision.transforms import get_transforms
sys.path.insert(0, cfg["bench"])
from finetune import VARIANTS

set_seed(cfg["seed"])
learn_kw, fit_kw = VARIANTS[cfg["variant"]]
data = ImageDataBunch.from_folder(cfg["path"], train="train", valid=cfg["valid"], size=cfg["size"], bs=cfg["bs"],
                                  ds_tfms=get_transforms(do_flip=cfg["flip"]), seed=cfg["seed"]).normalize(imagenet_stats)
learn = cnn_learner(data, models.mobilenet_v2, metrics=accuracy, silent=True, **learn_kw)
if cfg["variant"] == "adabn":
    from finetune import adapt_bn_stats
    adapt_bn_stats(learn)
out, t0 = {}, time.perf_counter()
lr = cfg["lr"] or learn.lr_find().valley
out["lr"], out["lr_find_s"] = lr, time.perf_counter() - t0

def stage(name, run):
    start = time.perf_counter()
    run()
    out[name] = {"s": time.perf_counter() - start, "accuracy": float(learn.recorder.metrics[-1][0]),
                 "valid_loss": float(learn.recorder.val_losses[-1])}

stage("frozen", lambda: learn.fit_one_cycle(cfg["frozen"], lr))
learn.unfreeze()
stage("unfrozen", lambda: learn.fit_one_cycle(cfg["unfrozen"], slice(lr / 100, lr / 10), **fit_kw))
out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print("RESULT " + json.dumps(out))
"""

FASTAI_RUN = r"""
import json, resource, sys, time, torch
cfg = json.loads(sys.argv[1])
torch.set_num_threads(cfg["threads"])
from fastai.vision.all import (ImageDataLoaders, Normalize, Resize, accuracy, aug_transforms, default_split,
                               imagenet_stats, model_meta, set_seed, vision_learner)
from torchvision.models import mobilenet_v2

set_seed(cfg["seed"])
dls = ImageDataLoaders.from_folder(cfg["path"], train="train", valid=cfg["valid"], item_tfms=Resize(cfg["size"]),
                                   bs=cfg["bs"], seed=cfg["seed"],
                                   batch_tfms=[*aug_transforms(size=cfg["size"], do_flip=cfg["flip"]),
                                               Normalize.from_stats(*imagenet_stats)])
# fastai 2.8 has no model_meta entry for torchvision's mobilenet_v2 (it stops with StopIteration without
# one): keep `features` as the body, the split fastai uses for unknown models (body, head).
model_meta[mobilenet_v2] = {"cut": -1, "split": default_split, "stats": imagenet_stats}
learn = vision_learner(dls, mobilenet_v2, metrics=accuracy)
learn.no_bar(), learn.no_logging() if hasattr(learn, "no_logging") else None
out, t0 = {}, time.perf_counter()
lr = cfg["lr"] or float(learn.lr_find(show_plot=False).valley)
out["lr"], out["lr_find_s"] = lr, time.perf_counter() - t0

def stage(name, run):
    start = time.perf_counter()
    run()
    values = learn.recorder.values[-1]
    out[name] = {"s": time.perf_counter() - start, "accuracy": float(values[2]), "valid_loss": float(values[1])}

stage("frozen", lambda: learn.fit_one_cycle(cfg["frozen"], lr))
learn.unfreeze()
stage("unfrozen", lambda: learn.fit_one_cycle(cfg["unfrozen"], slice(lr / 100, lr / 10)))
out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print("RESULT " + json.dumps(out))
"""


def build_coco(target: Path, seed: int = 0) -> Path:
    """coco_tiny as a classification set: each photo labelled by the category of its largest box, a
    fixed random fifth (seed 0, whatever the run's seed) in `valid/`. Files are linked, not copied."""
    source = SHARED / "data" / "coco_tiny"
    meta = json.loads((source / "train.json").read_text())
    names = {c["id"]: c["name"] for c in meta["categories"]}
    largest: dict[int, tuple[float, int]] = {}
    for a in meta["annotations"]:
        area = a["bbox"][2] * a["bbox"][3]
        if area > largest.get(a["image_id"], (-1.0, 0))[0]:
            largest[a["image_id"]] = (area, a["category_id"])
    images = sorted((i for i in meta["images"] if i["id"] in largest), key=lambda i: i["file_name"])
    held = set(random.Random(seed).sample(range(len(images)), len(images) // 5))
    for k, image in enumerate(images):
        folder = target / ("valid" if k in held else "train") / names[largest[image["id"]][1]]
        folder.mkdir(parents=True, exist_ok=True)
        os.symlink(source / "train" / image["file_name"], folder / image["file_name"])
    return target


def temp_hub(tmp: str) -> dict:
    """The environment that makes `pretrained=True` load ../shared's MobileNetV2 body: a torch hub cache
    in `tmp` holding it under torchvision's file name, and a fastbase home there too, bars off."""
    checkpoints = Path(tmp, "torch", "hub", "checkpoints")
    checkpoints.mkdir(parents=True)
    shutil.copy(WEIGHTS, checkpoints / HUB_NAME)
    return {"TORCH_HOME": str(Path(tmp, "torch")), "FASTBASE_HOME": str(Path(tmp, "fb")), "FASTBASE_NO_BAR": "1"}


def run_child(python: str, code: str, cfg: dict, env: dict) -> dict:
    proc = subprocess.run([python, "-c", code, json.dumps(cfg)], env=env, capture_output=True, text=True,
                          check=False)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    raise RuntimeError(f"{python} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")


def print_table(rows: list[dict], header: str) -> None:
    print(header)
    cols = (f"{'set':<13}{'who':<18}{'seed':>5}{'lr':>9}{'frozen acc':>11}{'loss':>7}{'final acc':>10}{'loss':>7}"
            f"{'change':>8}{'lr_find s':>10}{'frozen s':>9}{'unfrozen s':>11}")
    print(cols)
    print("-" * len(cols))
    for r in rows:
        f, u = r["frozen"], r["unfrozen"]
        print(f"{r['set']:<13}{r['who']:<18}{r['seed']:>5}{r['lr']:>9.2e}{f['accuracy']:>11.4f}{f['valid_loss']:>7.3f}"
              f"{u['accuracy']:>10.4f}{u['valid_loss']:>7.3f}{100 * (u['accuracy'] - f['accuracy']):>+8.2f}"
              f"{r['lr_find_s']:>10.1f}{f['s']:>9.1f}{u['s']:>11.1f}")
    print("\nmeans over seeds (accuracy in %, change = unfrozen minus frozen, time = lr_find + both stages)")
    groups: dict[tuple, list] = {}
    for r in rows:
        groups.setdefault((r["set"], r["who"]), []).append(r)
    for (name, who), rs in groups.items():
        frozen = statistics.mean(r["frozen"]["accuracy"] for r in rs) * 100
        final = statistics.mean(r["unfrozen"]["accuracy"] for r in rs) * 100
        secs = statistics.mean(r["lr_find_s"] + r["frozen"]["s"] + r["unfrozen"]["s"] for r in rs)
        print(f"{name:<13}{who:<18} n={len(rs)} frozen {frozen:6.2f}  final {final:6.2f}  change {final - frozen:+5.2f}"
              f"  time {secs:6.1f} s")
    by_who: dict[str, list] = {}
    for r in rows:
        by_who.setdefault(r["who"], []).append(r)
    print("\nover every set and seed")
    for who, rs in by_who.items():
        frozen = statistics.mean(r["frozen"]["accuracy"] for r in rs) * 100
        final = statistics.mean(r["unfrozen"]["accuracy"] for r in rs) * 100
        worse = sum(r["unfrozen"]["accuracy"] < r["frozen"]["accuracy"] for r in rs)
        secs = sum(r["lr_find_s"] + r["frozen"]["s"] + r["unfrozen"]["s"] for r in rs)
        print(f"{who:<18} n={len(rs)} frozen {frozen:6.2f}  final {final:6.2f}  change {final - frozen:+5.2f}"
              f"  runs made worse by the unfrozen stage {worse}  total time {secs:7.1f} s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", default="hymenoptera,imagenette_4,mnist_tiny,coco_tiny")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--variants", default="default", help=f"fastbase rows, of {', '.join(VARIANTS)}")
    parser.add_argument("--fastai", action="store_true", help="add fastai 2.8 rows (--fastai-python)")
    parser.add_argument("--fastai-python", default="/tmp/fastai-venv/bin/python")
    parser.add_argument("--size", type=int, default=160)
    parser.add_argument("--bs", type=int, default=64)
    parser.add_argument("--frozen", type=int, default=3, help="epochs with the body frozen")
    parser.add_argument("--unfrozen", type=int, default=1, help="epochs after unfreeze()")
    parser.add_argument("--lr", type=float, default=None, help="a fixed lr instead of each lr_find's valley")
    parser.add_argument("--fastai-lr", choices=("own", "fastbase"), default="own",
                        help="fastai's lr: its own lr_find's valley, or the one fastbase's first row found for the "
                             "same set and seed (fastai's lr_find, its slowest part, then does not run: 0 s)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", default=None, help="append each run's result to this JSON-lines file")
    args = parser.parse_args()
    if not WEIGHTS.is_file():
        print(f"skipped: needs {WEIGHTS} (the project's ../shared folder)")
        return 0
    runners = [(v, sys.executable, FASTBASE_RUN) for v in args.variants.split(",") if v]
    if args.fastai:
        if Path(args.fastai_python).exists():
            runners.append(("fastai 2.8", args.fastai_python, FASTAI_RUN))
        else:
            print(f"fastai not measured: {args.fastai_python} not found "
                  "(python -m venv --system-site-packages /tmp/fastai-venv && /tmp/fastai-venv/bin/pip install fastai)")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, **temp_hub(tmp), "OMP_NUM_THREADS": str(args.threads)}
        for name in args.sets.split(","):
            valid, flip = SETS[name]
            path = build_coco(Path(tmp, "coco_cls")) if name == "coco_tiny" else SHARED / "data" / name
            if not path.is_dir():
                print(f"{name} skipped: {path} not found")
                continue
            for seed in (int(s) for s in args.seeds.split(",")):
                found_lr = None
                for who, python, code in runners:
                    lr = found_lr if who == "fastai 2.8" and args.fastai_lr == "fastbase" else args.lr
                    cfg = {"path": str(path), "valid": valid, "flip": flip, "size": args.size, "bs": args.bs,
                           "seed": seed, "threads": args.threads, "frozen": args.frozen, "unfrozen": args.unfrozen,
                           "lr": lr, "variant": who, "bench": str(Path(__file__).parent)}
                    print(f"running {name} {who} seed {seed} ...", file=sys.stderr, flush=True)
                    try:
                        result = run_child(python, code, cfg, env)
                    except RuntimeError as e:  # one failing run still leaves the others' figures
                        print(e, file=sys.stderr)
                        continue
                    row = {"set": name, "who": who, "seed": seed, **result}
                    if found_lr is None and who != "fastai 2.8":
                        found_lr = result["lr"]
                    print(json.dumps(row), file=sys.stderr, flush=True)
                    if args.json:
                        with open(args.json, "a") as f:
                            f.write(json.dumps(row) + "\n")
                    rows.append(row)
    load = os.getloadavg()[0]
    print_table(rows, f"\nmobilenet_v2 (real ImageNet body), {args.size} px, bs {args.bs}, {args.frozen} frozen + "
                      f"{args.unfrozen} unfrozen epochs, {args.threads} threads; load average at the end {load:.1f} "
                      f"on {os.cpu_count()} cores")
    return 0


if __name__ == "__main__":
    sys.exit(main())
