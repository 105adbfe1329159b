"""Benchmark: U-Net training speed and quality, fastbase's unet_learner against fastai 2.8's.

Data (--data): `camvid_tiny` reads `../shared/data/camvid_tiny` with a plain Dataset (images/X.png,
labels/X_P.png, codes.txt; 100 street scenes, 32 classes, `Void` left out of the metrics), split
80/20 at random with --seed, resized to --size rows (width in proportion, 4:3; masks with nearest
neighbours); `digits` (the default when ../shared is absent) makes a two-class segmentation of the
1,797 embedded 8x8 digit scans (ink against background, `untar_data(URLs.DIGITS)`), scaled to
--size x --size with noise. Model: a U-Net on a randomly initialised resnet18 encoder
(pretrained=False), fit_one_cycle(--epochs, --lr), batch size --bs, no augmentation, no
normalisation, the same for both rows. Each row runs in its own child process with --threads torch
threads:

  fastbase   unet_learner(data, models.resnet18, pretrained=False) with its defaults (CrossEntropyFlat
             loss, channels-last on the CPU, Adam with decoupled weight decay 1e-2)
  fastai     fastai 2.8's unet_learner(dls, resnet18, pretrained=False, n_out=c) on DataLoaders of the
             same datasets, CrossEntropyLossFlat(axis=1), in --fastai-python (default
             /tmp/fastai-venv/bin/python; the row says so and is skipped when it is absent)

`--stage frozen` times the camvid lesson's first stage instead: the encoder frozen the way each
library freezes a pretrained one (fastbase: `train_bn=False, freeze_bn_stats="finetune"`, so no
gradient flows into the encoder; fastai: `learn.freeze()` with its BatchNorm layers still training,
so the backward pass runs through the encoder). The weights stay random, so that setting compares
speed only: its accuracy columns say little.

Columns: seconds per epoch (the fit's wall time over its epochs, validation included), then pixel
accuracy and mean IoU over the validation set, both computed here from `get_preds` with one function
(void pixels left out, mean over the classes that occur), so the rows are measured alike; the peak
resident memory of the row's process (MB, `ru_maxrss`: data, model, training); and the 1-minute load
average when the row ended (other processes on the machine slow a row down). With --runs N the two
rows take turns N times (the order reversed every run, each run a fresh process per row) and the
table gives medians; the last line is fastbase's median s/epoch over fastai's.

    python bench/segmentation.py [--data camvid_tiny|digits] [--size 96] [--epochs 2] [--bs 8]
        [--lr 3e-3] [--threads 2] [--n-train N] [--seed 0] [--stage unfrozen|frozen] [--runs 1]
        [--skip-fastai] [--quick]

`--quick` is a smoke test of this script (16 training items, 32 px, one epoch): its figures mean
nothing. Figures and the runs they come from: bench/RESULTS.md or the commit that added them.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image as PILImage
from torch.utils.data import Dataset

HERE = Path(__file__).resolve().parent
CAMVID = HERE.parent.parent / "shared" / "data" / "camvid_tiny"
FASTAI_PYTHON = "/tmp/fastai-venv/bin/python"


class CamvidTiny(Dataset):
    """camvid_tiny's images (float 3xHxW in [0, 1]) and masks (long HxW class codes), resized to
    `size` = (rows, columns); `classes` are the names of codes.txt."""

    def __init__(self, folder: Path, names: list[str], size: tuple[int, int]):
        self.classes = (folder / "codes.txt").read_text().split()
        h, w = size
        images, masks = [], []
        for name in names:
            image = PILImage.open(folder / "images" / f"{name}.png").convert("RGB").resize((w, h), PILImage.BILINEAR)
            mask = PILImage.open(folder / "labels" / f"{name}_P.png").resize((w, h), PILImage.NEAREST)
            images.append(torch.from_numpy(np.asarray(image, dtype=np.float32) / 255).permute(2, 0, 1))
            masks.append(torch.from_numpy(np.asarray(mask, dtype=np.int64)))
        self.x, self.y = torch.stack(images), torch.stack(masks)

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i], self.y[i]


class DigitMasks(Dataset):
    """The embedded digit scans scaled to `size` x `size` with noise; mask: ink (1) vs background (0)."""

    def __init__(self, files: list[Path], size: int, seed: int = 0):
        self.classes = ["background", "digit"]
        ink = torch.stack([torch.from_numpy(np.asarray(PILImage.open(f), dtype=np.float32) / 255)[None] for f in files])
        ink = F.interpolate(ink, size=(size, size), mode="bilinear", align_corners=False)
        noise = 0.2 * torch.randn(ink.shape, generator=torch.Generator().manual_seed(seed))
        self.x = (ink + noise).clamp(0, 1).expand(-1, 3, -1, -1).contiguous()
        self.y = (ink[:, 0] > 0.5).long()

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i], self.y[i]


def datasets(args) -> tuple[Dataset, Dataset, int | None]:
    """(train, valid, void code) for --data."""
    if args.data == "camvid_tiny":
        names = sorted(p.stem for p in (CAMVID / "images").glob("*.png"))
        random.Random(args.seed).shuffle(names)
        n_valid = max(1, len(names) // 5)
        train_names = names[n_valid:][: args.n_train]
        size = (args.size, round(args.size * 4 / 3))
        train, valid = CamvidTiny(CAMVID, train_names, size), CamvidTiny(CAMVID, names[:n_valid], size)
        return train, valid, train.classes.index("Void")
    from fastbase.datasets import URLs, untar_data  # the digits ship with fastbase

    path = untar_data(URLs.DIGITS)
    train_files = sorted((path / "train").glob("*/*.png"))[: args.n_train]
    return (DigitMasks(train_files, args.size), DigitMasks(sorted((path / "valid").glob("*/*.png")), args.size, 1),
            None)


def scores(probs: torch.Tensor, target: torch.Tensor, void: int | None) -> dict:
    """Pixel accuracy and mean IoU of (n, c, H, W) probabilities against (n, H, W) targets over the
    whole set, void pixels left out; the one computation both rows are measured with."""
    c = probs.shape[1]
    pred, target = probs.argmax(1).reshape(-1), target.reshape(-1).long()
    keep = (target >= 0) & (target < c) & ((target != void) if void is not None else True)
    pred, target = pred[keep], target[keep]
    confusion = torch.bincount(target * c + pred, minlength=c * c).view(c, c).double()
    inter = confusion.diagonal()
    union = confusion.sum(0) + confusion.sum(1) - inter
    iou = inter[union > 0] / union[union > 0]
    return {"pixel_acc": (pred == target).double().mean().item(), "mean_iou": iou.mean().item()}


def run_fastbase(args) -> dict:
    from fastbase.data import DataBunch
    from fastbase.vision import models, unet_learner

    train, valid, void = datasets(args)
    data = DataBunch.create(train, valid, bs=args.bs, num_workers=0, device="cpu", seed=args.seed)
    if args.stage == "frozen":  # the settings unet_learner gives a pretrained encoder, on random weights
        learn = unet_learner(data, models.resnet18, pretrained=False, silent=True, train_bn=False,
                             freeze_bn_stats="finetune")
        learn.freeze()
    else:
        learn = unet_learner(data, models.resnet18, pretrained=False, silent=True)
    start = time.perf_counter()
    learn.fit_one_cycle(args.epochs, args.lr)
    seconds = (time.perf_counter() - start) / args.epochs
    probs, target = learn.get_preds()
    return {"row": "fastbase", "s_per_epoch": seconds, **scores(probs, target, void)}


def run_fastai(args) -> dict:
    from fastai.vision.all import CrossEntropyLossFlat, DataLoaders, resnet18
    from fastai.vision.all import unet_learner as fastai_unet_learner

    train, valid, void = datasets(args)
    dls = DataLoaders.from_dsets(train, valid, bs=args.bs, device="cpu", num_workers=0)
    learn = fastai_unet_learner(dls, resnet18, pretrained=False, n_out=len(train.classes),
                                loss_func=CrossEntropyLossFlat(axis=1))
    if args.stage == "frozen":  # what fastai's unet_learner does to a pretrained encoder (BatchNorm trains)
        learn.freeze()
    start = time.perf_counter()
    with learn.no_bar(), learn.no_logging():
        learn.fit_one_cycle(args.epochs, args.lr)
    seconds = (time.perf_counter() - start) / args.epochs
    with learn.no_bar():
        probs, target = learn.get_preds()
    return {"row": "fastai 2.8", "s_per_epoch": seconds, **scores(probs.softmax(1) if probs.min() < 0 else probs,
                                                                      target, void)}


def child(args) -> None:
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    result = run_fastbase(args) if args.row == "fastbase" else run_fastai(args)
    result["load"] = os.getloadavg()[0]  # the machine's 1-minute load when the row ended: other work slows a row
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB
    print("RESULT " + json.dumps(result))


def run_row(python: str, row: str, argv: list[str]) -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(HERE.parent), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run([python, str(Path(__file__).resolve()), *argv, "--row", row], capture_output=True, text=True,
                          env=env, check=False)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        return {"row": row, "error": (proc.stderr or proc.stdout).strip().splitlines()[-1:]}
    return json.loads(lines[-1][len("RESULT "):])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", choices=["camvid_tiny", "digits"], default=None,
                        help="camvid_tiny when ../shared/data/camvid_tiny exists, else digits")
    parser.add_argument("--size", type=int, default=96, help="image rows (camvid: width 4/3 of it)")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--bs", type=int, default=8)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--n-train", type=int, default=None, help="at most this many training items")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--stage", choices=["unfrozen", "frozen"], default="unfrozen",
                        help="unfrozen: the whole U-Net trains; frozen: the encoder is frozen as each library "
                        "freezes a pretrained one (speed only: the weights stay random)")
    parser.add_argument("--runs", type=int, default=1, help="rows take turns this many times; medians reported")
    parser.add_argument("--fastai-python", default=FASTAI_PYTHON)
    parser.add_argument("--skip-fastai", action="store_true")
    parser.add_argument("--quick", action="store_true", help="smoke test of the script; figures mean nothing")
    parser.add_argument("--row", choices=["fastbase", "fastai"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.data is None:
        args.data = "camvid_tiny" if CAMVID.is_dir() else "digits"
    if args.data == "camvid_tiny" and not CAMVID.is_dir():
        parser.error(f"--data camvid_tiny needs {CAMVID}, which is absent; use --data digits")
    if args.quick:
        args.n_train, args.size, args.epochs = 16, 32, 1
    if args.row:
        child(args)
        return
    passed = [a for a in (argv if argv is not None else sys.argv[1:]) if a != "--skip-fastai"]
    passed += ["--data", args.data, "--size", str(args.size), "--epochs", str(args.epochs), "--stage", args.stage]
    if args.n_train is not None:
        passed += ["--n-train", str(args.n_train)]
    fastai_missing = None
    if args.skip_fastai:
        fastai_missing = "skipped (--skip-fastai)"
    elif not Path(args.fastai_python).exists():
        fastai_missing = f"fastai is not installed ({args.fastai_python} is absent); row skipped"
    pythons = {"fastbase": sys.executable, **({} if fastai_missing else {"fastai": args.fastai_python})}
    runs: dict[str, list[dict]] = {row: [] for row in pythons}
    for run in range(args.runs):
        for row in (list(pythons) if run % 2 == 0 else list(reversed(pythons))):
            runs[row].append(run_row(pythons[row], row, passed))
            print(f"run {run + 1} {row}: {json.dumps(runs[row][-1])}", flush=True)  # progress, and figures if cut short
    rows = [median_row(results) for results in runs.values()]
    if fastai_missing:
        rows.append({"row": "fastai 2.8", "error": [fastai_missing]})
    stage = ("encoder frozen as for a pretrained one (fastbase: BatchNorm fixed, fastai: BatchNorm trains)"
             if args.stage == "frozen" else "the whole network trains")
    print(f"U-Net, resnet18 encoder from random weights, {stage}; data {args.data}, size {args.size}, bs {args.bs}, "
          f"{args.epochs} epochs at lr {args.lr}, {args.threads} threads, seed {args.seed}, {args.runs} run(s) "
          f"(medians)")
    print(f"{'row':<12} {'s/epoch':>8} {'pixel acc':>10} {'mean IoU':>9} {'peak MB':>8} {'load':>5}  s/epoch per run")
    for r in rows:
        if "error" in r:
            print(f"{r['row']:<12} {' '.join(r['error'])}")
        else:
            print(f"{r['row']:<12} {r['s_per_epoch']:>8.1f} {r['pixel_acc']:>10.3f} {r['mean_iou']:>9.3f} "
                  f"{r['peak_rss_mb']:>8.0f} {r['load']:>5.1f}  {', '.join(f'{t:.1f}' for t in r['per_run'])}")
    timed = {r["row"]: r["s_per_epoch"] for r in rows if "error" not in r}
    if len(timed) == 2:
        print(f"fastbase / fastai s/epoch: {timed['fastbase'] / timed['fastai 2.8']:.2f} (goal: <= 0.8)")


def median_row(results: list[dict]) -> dict:
    """One row from a row's runs: the median of each figure, and the seconds per epoch of every run."""
    good = [r for r in results if "error" not in r]
    if not good:
        return results[-1]
    row = {k: statistics.median(r[k] for r in good) for k in ("s_per_epoch", "pixel_acc", "mean_iou", "peak_rss_mb",
                                                              "load")}
    return {"row": good[0]["row"], **row, "per_run": [r["s_per_epoch"] for r in good]}

if __name__ == "__main__":
    main()
