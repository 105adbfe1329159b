"""Check on real data: the lesson-1 transfer-learning recipe on real photos with a real pretrained body.

Data: `../shared/data/hymenoptera` (245 training, 153 validation photos of ants and bees).
Body: `../shared/weights/mobilenet_v2_imagenet_body.pth`, a real ImageNet-trained MobileNetV2,
copied into a temporary torch hub cache (`$TORCH_HOME/hub/checkpoints/mobilenet_v2-b0353104.pth`)
so that `pretrained=True` loads it through torchvision's own weights API, as it would after a
download. Recipe, the same for both frameworks (size 224, batch size --bs, ImageNet stats, the
default flips/rotations/zooms/lighting/warps of `get_transforms` / `aug_transforms`):

  fastbase    cnn_learner(data, models.mobilenet_v2, metrics=accuracy)
              fit_one_cycle(4); unfreeze(); fit_one_cycle(2, max_lr=slice(1e-6, 1e-4))
  fastai 2.8  vision_learner(dls, mobilenet_v2, metrics=accuracy)   (same cache, same epochs; fastai
              needs a model_meta entry for it, cut=-1, or it raises StopIteration: see FASTAI_RUN)
              fit_one_cycle(4); unfreeze(); fit_one_cycle(2, lr_max=slice(1e-6, 1e-4))

fastai runs in its own interpreter (--fastai-python, default /tmp/fastai-venv/bin/python; skipped
with a message when absent: `python -m venv /tmp/fastai-venv && /tmp/fastai-venv/bin/pip install
fastai`). Each framework runs in a child process with the same threads and loader workers; the
table gives validation accuracy after each stage, the median seconds per epoch of each stage
(training and validation together) and the child's peak RSS. One run per framework and seed:
accuracy on 153 images moves by a photo or two between seeds (0.65 points each), so --seeds runs
several and reports each.

`--data mnist_tiny` runs the same recipe on fastai's MNIST_TINY (`../shared/data/mnist_tiny`: 709
training and 699 validation 28 px grayscale 3s and 7s) at 112 px without flips: far from ImageNet's
photos, so it shows what fixed ImageNet BatchNorm statistics cost where the domain differs.

    python bench/transfer.py [--data hymenoptera|mnist_tiny] [--size N] [--bs 64] [--seeds 0]
        [--threads 2] [--skip-fastai] [--skip-fastbase] [--fastai-bn] [--bn-eval] [--stats-fixed] [--recal]
        [--bn-cached] [--only-extra]

The defaults row is cnn_learner's defaults for a pretrained body: `train_bn=False`,
`freeze_bn_stats="finetune"` (the body's BatchNorm keeps ImageNet's weights and statistics; after
`unfreeze()` every BatchNorm layer, the head's too, keeps its statistics). Extra rows:
`--fastai-bn` adds `train_bn=True, freeze_bn_stats=False`: fastai's behaviour, where the frozen
body's BatchNorm weights train and every BatchNorm layer learns statistics from the augmented batches.
`--bn-eval` adds `freeze_bn_stats=True`: statistics fixed while the body is frozen, learnt after
`unfreeze()`. `--stats-fixed` adds `train_bn=True`: the frozen body's BatchNorm weights train, its
statistics stay fixed. `--recal` adds the `--fastai-bn` row with `callbacks=[RecalibrateBN()]` in
both fits: after each epoch's training the BatchNorm statistics are recomputed on the training photos
without augmentation. `--bn-cached` adds the defaults with `callbacks=[FeatureCache(n_views=1)]` in
the frozen fit: the body's features of one augmented pass over the photos are computed once and the
head trains on them every epoch (issue 9).
`--only-extra` leaves out the defaults row (to run just the extra rows).

About 5 minutes per framework and seed on 2 idle CPU cores.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("FASTBASE_SHARED", ROOT.parent / "shared"))
DATA = SHARED / "data" / "hymenoptera"  # the default data set (vs_fastai.py imports it)
DATASETS = {"hymenoptera": ("val", 224, True), "mnist_tiny": ("valid", 112, False)}  # valid folder, size, flips
WEIGHTS = SHARED / "weights" / "mobilenet_v2_imagenet_body.pth"
HUB_NAME = "mobilenet_v2-b0353104.pth"  # torchvision's file name for MobileNet_V2_Weights.IMAGENET1K_V1

FASTBASE_RUN = """
import json, os, resource, sys, time, torch
from fastbase.callback import Callback
from fastbase.callbacks.bn_stats import RecalibrateBN
from fastbase.core import set_seed
from fastbase.data import imagenet_stats
from fastbase.metrics import accuracy
from fastbase.vision import models
from fastbase.vision.data import ImageDataBunch
from fastbase.vision.feature_cache import FeatureCache
from fastbase.vision.learner import cnn_learner
from fastbase.vision.transforms import get_transforms

path, bs, seed, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
variant = sys.argv[5] if len(sys.argv) > 5 else ""
valid, size, flip = os.environ["TRANSFER_VALID"], int(os.environ["TRANSFER_SIZE"]), os.environ["TRANSFER_FLIP"] == "1"
torch.set_num_threads(threads)
set_seed(seed)

class EpochTimer(Callback):
    def __init__(self): self.times = []
    def before_epoch(self): self.start = time.perf_counter()
    def after_epoch(self): self.times.append(time.perf_counter() - self.start)

data = ImageDataBunch.from_folder(path, train="train", valid=valid, ds_tfms=get_transforms(do_flip=flip), size=size, bs=bs,
                                  seed=seed).normalize(imagenet_stats)
fastai_bn = dict(train_bn=True, freeze_bn_stats=False)
bn = {"fastai-bn": fastai_bn, "recal": fastai_bn, "bn-eval": dict(freeze_bn_stats=True),
      "stats-fixed": dict(train_bn=True)}
learn = cnn_learner(data, models.mobilenet_v2, metrics=accuracy, silent=True, **bn.get(variant, {}))
result = {"workers": data.train_dl.num_workers}
extra = [RecalibrateBN()] if variant == "recal" else []
cached = [FeatureCache(n_views=1)] if variant == "bn-cached" else []  # frozen stage: cached features, one view
for stage, run in (("frozen", lambda cb: learn.fit_one_cycle(4, callbacks=[cb, *extra, *cached])),
                   ("unfrozen", lambda cb: (learn.unfreeze(), learn.fit_one_cycle(2, max_lr=slice(1e-6, 1e-4),
                                                                                    callbacks=[cb, *extra])))):
    timer = EpochTimer()
    run(timer)
    result[stage] = {"epoch_s": timer.times, "accuracy": float(learn.recorder.metrics[-1][0])}
result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print("RESULT " + json.dumps(result))
"""

FASTAI_RUN = """
import json, os, resource, sys, time, torch
from fastai.vision.all import (Callback, ImageDataLoaders, Normalize, Resize, accuracy, aug_transforms,
                               default_split, imagenet_stats, model_meta, set_seed, vision_learner)
from torchvision.models import mobilenet_v2

path, bs, seed, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
valid, size, flip = os.environ["TRANSFER_VALID"], int(os.environ["TRANSFER_SIZE"]), os.environ["TRANSFER_FLIP"] == "1"
torch.set_num_threads(threads)
set_seed(seed)

class EpochTimer(Callback):
    order = 0
    def __init__(self): self.times = []
    def before_epoch(self): self.start = time.perf_counter()
    def after_epoch(self): self.times.append(time.perf_counter() - self.start)

dls = ImageDataLoaders.from_folder(path, train="train", valid=valid, item_tfms=Resize(size), bs=bs, seed=seed,
                                   batch_tfms=[*aug_transforms(size=size, do_flip=flip),
                                               Normalize.from_stats(*imagenet_stats)])
# fastai 2.8 has no entry for torchvision's mobilenet_v2 in model_meta, finds no pooling layer among its
# children (torchvision pools in forward) and stops with StopIteration; vision_learner's `cut=` argument
# is not passed on to create_vision_model, so the table entry is the way: keep `features`, as fastbase does.
model_meta[mobilenet_v2] = {"cut": -1, "split": default_split, "stats": imagenet_stats}
learn = vision_learner(dls, mobilenet_v2, metrics=accuracy)
result = {"workers": dls.train.fake_l.num_workers}  # fastai reports 1 on dls.train itself
for stage, run in (("frozen", lambda cb: learn.fit_one_cycle(4, cbs=[cb])),
                   ("unfrozen", lambda cb: (learn.unfreeze(), learn.fit_one_cycle(2, lr_max=slice(1e-6, 1e-4),
                                                                                    cbs=[cb])))):
    timer = EpochTimer()
    run(timer)
    result[stage] = {"epoch_s": timer.times, "accuracy": float(learn.recorder.values[-1][2])}
result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print("RESULT " + json.dumps(result))
"""


def run_child(python: str, code: str, args, env, *extra: str) -> dict:
    proc = subprocess.run([python, "-c", textwrap.dedent(code), str(args.path), str(args.bs), str(args.seed_now),
                           str(args.threads), *extra], env=env, capture_output=True, text=True, check=False)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    raise RuntimeError(f"{python} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", choices=sorted(DATASETS), default="hymenoptera",
                        help="hymenoptera (photos, 224 px) or mnist_tiny (grayscale 3s and 7s, 112 px, no flips)")
    parser.add_argument("--size", type=int, default=None, help="image size (default: the data set's)")
    parser.add_argument("--bs", type=int, default=64, help="64: from_folder's default, and lesson 1's")
    parser.add_argument("--seeds", default="0", help="comma-separated seeds, one run per framework and seed")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--fastai-python", default="/tmp/fastai-venv/bin/python")
    parser.add_argument("--skip-fastai", action="store_true")
    parser.add_argument("--skip-fastbase", action="store_true")
    parser.add_argument("--fastai-bn", action="store_true",
                        help="also run fastbase with train_bn=True, freeze_bn_stats=False (fastai's BatchNorm)")
    parser.add_argument("--bn-eval", action="store_true",
                        help="also run fastbase with freeze_bn_stats=True (statistics learnt after unfreeze())")
    parser.add_argument("--stats-fixed", action="store_true",
                        help="also run fastbase with train_bn=True (frozen body's BatchNorm weights train)")
    parser.add_argument("--recal", action="store_true",
                        help="also run the --fastai-bn row with callbacks=[RecalibrateBN()] in both fits")
    parser.add_argument("--bn-cached", action="store_true",
                        help="also run the defaults with callbacks=[FeatureCache(n_views=1)] in the frozen fit")
    parser.add_argument("--only-extra", action="store_true", help="leave out the fastbase defaults row")
    args = parser.parse_args()
    valid, size, flip = DATASETS[args.data]
    args.path, size = SHARED / "data" / args.data, args.size or size
    if not (args.path.is_dir() and WEIGHTS.is_file()):
        print(f"skipped: needs {args.path} and {WEIGHTS} (the project's ../shared folder)")
        return 0
    runners = [] if args.skip_fastbase or args.only_extra else [("fastbase", sys.executable, FASTBASE_RUN, ())]
    extras = {"fastai_bn": ("fastbase, fastai BN", "fastai-bn"), "bn_eval": ("fastbase, BN eval", "bn-eval"),
              "stats_fixed": ("fastbase, stats", "stats-fixed"), "recal": ("fastbase, recal", "recal"),
              "bn_cached": ("fastbase, cached", "bn-cached")}
    for flag, (name, variant) in extras.items():
        if getattr(args, flag) and not args.skip_fastbase:
            runners.append((name, sys.executable, FASTBASE_RUN, (variant,)))
    if args.skip_fastai:
        pass
    elif Path(args.fastai_python).exists():
        runners.append(("fastai 2.8", args.fastai_python, FASTAI_RUN, ()))
    else:
        print(f"fastai not measured: {args.fastai_python} not found (see this script's docstring)")

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        checkpoints = Path(tmp, "torch", "hub", "checkpoints")
        checkpoints.mkdir(parents=True)
        shutil.copy(WEIGHTS, checkpoints / HUB_NAME)
        env = {**os.environ, "TORCH_HOME": str(Path(tmp, "torch")), "FASTBASE_HOME": str(Path(tmp, "fb")),
               "FASTBASE_NO_BAR": "1", "OMP_NUM_THREADS": str(args.threads), "TRANSFER_VALID": valid,
               "TRANSFER_SIZE": str(size), "TRANSFER_FLIP": str(int(flip))}
        for seed in (int(s) for s in args.seeds.split(",")):
            args.seed_now = seed
            for name, python, code, extra in runners:
                print(f"running {name}, seed {seed} ...", file=sys.stderr, flush=True)
                try:
                    result = run_child(python, code, args, env, *extra)
                except RuntimeError as e:  # one framework failing still leaves the other's figures
                    print(e, file=sys.stderr)
                    continue
                print(f"{name}, seed {seed}: {json.dumps(result)}", file=sys.stderr, flush=True)
                rows.append((name, seed, result))

    load = os.getloadavg()[0]
    print(f"\n{args.data}, mobilenet_v2 (real ImageNet body), {size} px, bs {args.bs}, {args.threads} threads; "
          f"load average at the end {load:.1f} on {os.cpu_count()} cores")
    header = (f"{'framework':<18}{'seed':>5}{'workers':>8}{'frozen acc':>11}{'s/epoch':>9}"
              f"{'unfrozen acc':>13}{'s/epoch':>9}{'peak RSS MB':>12}")
    print(header)
    print("-" * len(header))
    for name, seed, r in rows:
        print(f"{name:<18}{seed:>5}{r['workers']:>8}{r['frozen']['accuracy']:>11.4f}"
              f"{statistics.median(r['frozen']['epoch_s']):>9.1f}{r['unfrozen']['accuracy']:>13.4f}"
              f"{statistics.median(r['unfrozen']['epoch_s']):>9.1f}{r['peak_rss_mb']:>12.0f}")
    print("s/epoch: median over the stage's epochs (4 frozen, 2 unfrozen), training plus validation.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
