"""Points on faces68_tiny (issue 29): mean pixel error of the nose tip and of the 68 landmarks on the
validation people after lesson 3's head-pose recipe, against predicting the training mean, with
fastai 2.8's `PointBlock` on the same data and epochs beside it.

The recipe, the same in both frameworks: the ImageNet MobileNetV2 body of `../shared/weights`
(through a temporary torch hub cache), images squished to `--size` (so a scaled coordinate maps to
the photo's pixels by its own width and height), the default augmentation, the body frozen,
`fit_one_cycle(EPOCHS, slice(2e-2))` as the lesson, MSE on coordinates scaled to [-1, 1]. The error
of each validation photo is the mean Euclidean distance, in pixels of the stored photo, between the
predicted and the true points (`get_preds` on the validation set, scaled back by each photo's size).
The floor: every photo given the training photos' mean point(s), in the same scaled coordinates.

Runs alternate (fastbase, fastai, fastbase, ...) in one invocation, each a child process; the
table gives medians of error and of training seconds.

    python bench/points.py [--targets nose,landmarks] [--runs 3] [--epochs 5] [--unfrozen 0] [--size 128] [--bs 32]
        [--lr 2e-2] [--ps 0.5] [--no-flip] [--flip-idx] [--no-cache] [--threads 2]
        [--fastai-python /tmp/fastai-venv/bin/python] [--no-fastai] [--json out.json]

Each run also reports the error on the training photos (predicted without augmentation), which
tells underfitting (as high as the floor) from overfitting (far below the validation error).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from finetune import SHARED, WEIGHTS, temp_hub  # ../shared's MobileNetV2 body through a temporary hub cache

ROOT = Path(__file__).resolve().parents[1]

COMMON = r"""
import json, sys, time, numpy as np, pandas as pd, PIL.Image, torch
cfg = json.loads(sys.argv[1])
torch.set_num_threads(cfg["threads"])
path = cfg["path"]
df = pd.read_csv(path + "/points.csv")
def xy(r):  # (k, 2) (x, y) pixels of a row
    return np.array(r.points.split(), dtype=np.float32).reshape(-1, 2) if cfg["target"] == "landmarks" \
        else np.array([[r.nose_x, r.nose_y]], dtype=np.float32)
rows = {r.fname: r for r in df.itertuples()}
sizes = {f: PIL.Image.open(path + "/images/" + f).size for f in df.fname}  # (w, h)
def scaled(f, pts):  # (x, y) pixels -> [-1, 1]
    w, h = sizes[f]
    return pts / np.array([w / 2, h / 2], dtype=np.float32) - 1
def error(files, pred_xy_scaled):  # mean pixel distance per photo, pred in scaled (x, y)
    out = []
    for f, p in zip(files, pred_xy_scaled):
        w, h = sizes[f]
        truth = xy(rows[f])
        d = (np.asarray(p).reshape(-1, 2) + 1) * np.array([w / 2, h / 2]) - truth
        out.append(np.linalg.norm(d, axis=1).mean())
    return float(np.mean(out))
train, valid = df[~df.is_valid], df[df.is_valid]
mean_scaled = np.mean([scaled(r.fname, xy(r)) for r in train.itertuples()], axis=0)
floor = error(list(valid.fname), [mean_scaled] * len(valid))
def fit_recipe(learn):  # the same calls in both frameworks; returns the seconds they took
    start = time.perf_counter()
    learn.fit_one_cycle(cfg["epochs"], slice(cfg["lr"]))
    if cfg["unfrozen"]:  # the lesson stops frozen; --unfrozen N adds N epochs of the whole network
        learn.unfreeze()
        learn.fit_one_cycle(cfg["unfrozen"], slice(2e-5, 2e-3))
    return time.perf_counter() - start
"""

FASTBASE_RUN = COMMON + r"""
# the iBUG 68 landmarks renumbered on a mirrored face (docs/points.md): jaw, brows, nose bridge, nostrils, eyes, mouth
FACE68_FLIP_IDX = [*range(16, -1, -1), *range(26, 16, -1), 27, 28, 29, 30, 35, 34, 33, 32, 31,
                   45, 44, 43, 42, 47, 46, 39, 38, 37, 36, 41, 40, 54, 53, 52, 51, 50, 49, 48, 59, 58, 57, 56, 55,
                   64, 63, 62, 61, 60, 67, 66, 65]
from fastbase.core import set_seed
from fastbase.vision import *
set_seed(0)
pts = {r.fname: torch.from_numpy(xy(r)[:, ::-1].copy()) for r in df.itertuples()}  # the course's (y, x)
data = (PointsItemList.from_df(df, path, cols="fname", folder="images").split_from_df(col="is_valid")
        .label_from_func(lambda f: pts[f.name], outside="keep",  # 4 photos have landmarks up to 3 px out
                         flip_idx=FACE68_FLIP_IDX if cfg["flip_idx"] and cfg["target"] == "landmarks" else None)
        .transform(get_transforms(do_flip=cfg["flip"]), tfm_y=True, size=cfg["size"],
                   resize_method=ResizeMethod.SQUISH)
        .databunch(bs=cfg["bs"], seed=0).normalize(imagenet_stats))
learn = cnn_learner(data, models.mobilenet_v2, silent=True, ps=cfg["ps"], feature_cache=cfg["cache"])
seconds = fit_recipe(learn)
def errors(ds_type, ds):  # mean pixel error of a set's photos, predicted without augmentation
    preds, _ = learn.get_preds(ds_type)
    return error([Path(f).name for f in ds.items], [p.reshape(-1, 2).flip(1).numpy() for p in preds])  # (y,x)->(x,y)
print("RESULT " + json.dumps({"side": "fastbase", "seconds": seconds, "error": errors(DatasetType.Valid, data.valid_ds),
                              "train_error": errors(DatasetType.Fix, data.train_ds), "floor": floor}))
"""

FASTAI_RUN = COMMON + r"""
from fastai.vision.all import (ColReader, ColSplitter, DataBlock, ImageBlock, Normalize, PointBlock, Resize,
                               ResizeMethod, aug_transforms, default_split, imagenet_stats, model_meta, set_seed,
                               vision_learner)
from torchvision.models import mobilenet_v2
set_seed(0)
block = DataBlock(blocks=(ImageBlock, PointBlock), get_x=ColReader("fname", pref=path + "/images/"),
                  get_y=lambda r: torch.from_numpy(xy(r)), splitter=ColSplitter("is_valid"),
                  item_tfms=Resize(cfg["size"], method=ResizeMethod.Squish),
                  batch_tfms=[*aug_transforms(size=cfg["size"], do_flip=cfg["flip"]),
                              Normalize.from_stats(*imagenet_stats)])
dls = block.dataloaders(df, bs=cfg["bs"])
model_meta[mobilenet_v2] = {"cut": -1, "split": default_split, "stats": imagenet_stats}
learn = vision_learner(dls, mobilenet_v2, ps=cfg["ps"])
learn.no_bar()
seconds = fit_recipe(learn)
preds, _ = learn.get_preds()
train_preds, _ = learn.get_preds(dl=dls.test_dl(train))  # the training photos without augmentation
print("RESULT " + json.dumps({"side": "fastai 2.8", "seconds": seconds, "error": error(list(valid.fname), list(preds.numpy())),
                              "train_error": error(list(train.fname), list(train_preds.numpy())), "floor": floor}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add = parser.add_argument
    add("--targets", default="nose,landmarks")
    add("--runs", type=int, default=3)
    add("--epochs", type=int, default=5)
    add("--unfrozen", type=int, default=0, help="epochs after unfreeze() (the lesson: 0)")
    add("--size", type=int, default=128)
    add("--lr", type=float, default=2e-2, help="the frozen stage's lr (the lesson: 2e-2)")
    add("--ps", type=float, default=0.5, help="the head's dropout (fastai's default 0.5)")
    add("--no-flip", action="store_true", help="no left-right flips in the augmentation")
    add("--flip-idx", action="store_true", help="fastbase, landmarks: flip with FACE68_FLIP_IDX (fastai has none)")
    add("--no-cache", action="store_true", help="fastbase: no cached body features (fresh augmentation every epoch)")
    add("--bs", type=int, default=32)
    add("--threads", type=int, default=2)
    add("--fastai-python", default="/tmp/fastai-venv/bin/python")
    add("--no-fastai", action="store_true")
    add("--json", default=None)
    args = parser.parse_args()
    if not WEIGHTS.exists():
        sys.exit(f"needs {WEIGHTS} (../shared)")
    sides = [("fastbase", sys.executable, FASTBASE_RUN)]
    if not args.no_fastai:
        sides.append(("fastai 2.8", args.fastai_python, FASTAI_RUN))
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, **temp_hub(tmp), "OMP_NUM_THREADS": str(args.threads),
               "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
        for target in args.targets.split(","):
            for run in range(args.runs):
                for _, python, code in sides:
                    cfg = {"target": target, "path": str(SHARED / "data" / "faces68_tiny"), "threads": args.threads,
                           "size": args.size, "bs": args.bs, "epochs": args.epochs,
                           "unfrozen": args.unfrozen, "lr": args.lr, "ps": args.ps, "flip": not args.no_flip,
                           "flip_idx": args.flip_idx,
                           "cache": False if args.no_cache else None}
                    out = subprocess.run([python, "-c", code, json.dumps(cfg)], check=False, env=env,
                                         capture_output=True, text=True)
                    if out.returncode:
                        sys.exit(out.stderr[-3000:])
                    line = next(s for s in out.stdout.splitlines() if s.startswith("RESULT "))
                    results.append({"target": target, **json.loads(line[7:])})
                    print(run, results[-1], flush=True)
    print(f"\n| target | side | error px (median of {args.runs}) | training photos px | training-mean floor px "
          "| fit seconds |")
    print("|---|---|---|---|---|---|")
    for target in args.targets.split(","):
        for side, _, _ in sides:
            rs = [r for r in results if r["target"] == target and r["side"] == side]
            print(f"| {target} | {side} | {statistics.median(r['error'] for r in rs):.2f} | "
                  f"{statistics.median(r['train_error'] for r in rs):.2f} | {rs[0]['floor']:.2f} | "
                  f"{statistics.median(r['seconds'] for r in rs):.1f} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "runs": results}, indent=2))


if __name__ == "__main__":
    main()
