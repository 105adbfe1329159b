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

    python bench/transfer.py [--bs 32] [--seeds 0] [--threads 2] [--skip-fastai] [--skip-fastbase] [--bn-eval]
        [--bn-fixed] [--bn-cached] [--stats-fixed] [--recal] [--only-extra]

`--bn-eval` adds a fastbase row with `cnn_learner(..., train_bn=False, freeze_bn_stats=True)`: the
frozen body's BatchNorm keeps its ImageNet weights and statistics, so a frozen step runs no backward
through the body (and FeatureCache can apply); the recipe is otherwise the same. `--recal` adds a
row with the defaults and `callbacks=[RecalibrateBN()]` in both fits: after each epoch's training
the BatchNorm statistics are recomputed on the training photos without augmentation.
`--bn-fixed` adds a row with `train_bn=False, freeze_bn_stats="finetune"`: as `--bn-eval` while the
body is frozen, and after `unfreeze()` every BatchNorm layer (the head's too) keeps its statistics.
`--bn-cached` adds the `--bn-fixed` row with `callbacks=[FeatureCache(n_views=1)]` in the frozen fit:
the body's features of one augmented pass over the photos are computed once and the head trains on
them every epoch (issue 9).
`--stats-fixed` adds a row with `freeze_bn_stats="finetune"` alone: `train_bn` keeps its default, True,
so the frozen body's BatchNorm weights train while its statistics stay.
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
DATA = SHARED / "data" / "hymenoptera"
WEIGHTS = SHARED / "weights" / "mobilenet_v2_imagenet_body.pth"
HUB_NAME = "mobilenet_v2-b0353104.pth"  # torchvision's file name for MobileNet_V2_Weights.IMAGENET1K_V1

FASTBASE_RUN = """
import json, resource, sys, time, torch
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
torch.set_num_threads(threads)
set_seed(seed)

class EpochTimer(Callback):
    def __init__(self): self.times = []
    def before_epoch(self): self.start = time.perf_counter()
    def after_epoch(self): self.times.append(time.perf_counter() - self.start)

data = ImageDataBunch.from_folder(path, train="train", valid="val", ds_tfms=get_transforms(), size=224, bs=bs,
                                  seed=seed).normalize(imagenet_stats)
bn = {"bn-eval": dict(train_bn=False, freeze_bn_stats=True),
      "bn-fixed": dict(train_bn=False, freeze_bn_stats="finetune"),  # fixed after unfreeze() too
      "bn-cached": dict(train_bn=False, freeze_bn_stats="finetune"),
      "stats-fixed": dict(freeze_bn_stats="finetune")}
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
import json, resource, sys, time, torch
from fastai.vision.all import (Callback, ImageDataLoaders, Normalize, Resize, accuracy, aug_transforms,
                               default_split, imagenet_stats, model_meta, set_seed, vision_learner)
from torchvision.models import mobilenet_v2

path, bs, seed, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
torch.set_num_threads(threads)
set_seed(seed)

class EpochTimer(Callback):
    order = 0
    def __init__(self): self.times = []
    def before_epoch(self): self.start = time.perf_counter()
    def after_epoch(self): self.times.append(time.perf_counter() - self.start)

dls = ImageDataLoaders.from_folder(path, train="train", valid="val", item_tfms=Resize(224), bs=bs, seed=seed,
                                   batch_tfms=[*aug_transforms(size=224), Normalize.from_stats(*imagenet_stats)])
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
    proc = subprocess.run([python, "-c", textwrap.dedent(code), str(DATA), str(args.bs), str(args.seed_now),
                           str(args.threads), *extra], env=env, capture_output=True, text=True, check=False)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    raise RuntimeError(f"{python} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bs", type=int, default=32)
    parser.add_argument("--seeds", default="0", help="comma-separated seeds, one run per framework and seed")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--fastai-python", default="/tmp/fastai-venv/bin/python")
    parser.add_argument("--skip-fastai", action="store_true")
    parser.add_argument("--skip-fastbase", action="store_true")
    parser.add_argument("--bn-eval", action="store_true",
                        help="also run fastbase with train_bn=False, freeze_bn_stats=True (the frozen body's "
                             "BatchNorm fixed: faster steps, and the setting FeatureCache needs)")
    parser.add_argument("--bn-fixed", action="store_true",
                        help="also run fastbase with train_bn=False, freeze_bn_stats='finetune' (every BatchNorm "
                             "layer's statistics fixed after unfreeze() too)")
    parser.add_argument("--bn-cached", action="store_true",
                        help="also run --bn-fixed's row with callbacks=[FeatureCache(n_views=1)] in the frozen fit")
    parser.add_argument("--stats-fixed", action="store_true",
                        help="also run fastbase with freeze_bn_stats='finetune' alone (train_bn stays True)")
    parser.add_argument("--only-extra", action="store_true", help="leave out the fastbase defaults row")
    parser.add_argument("--recal", action="store_true",
                        help="also run fastbase's defaults with callbacks=[RecalibrateBN()] in both fits")
    args = parser.parse_args()
    if not (DATA.is_dir() and WEIGHTS.is_file()):
        print(f"skipped: needs {DATA} and {WEIGHTS} (the project's ../shared folder)")
        return 0
    runners = [] if args.skip_fastbase or args.only_extra else [("fastbase", sys.executable, FASTBASE_RUN, ())]
    if args.bn_eval and not args.skip_fastbase:
        runners.append(("fastbase, BN eval", sys.executable, FASTBASE_RUN, ("bn-eval",)))
    if args.bn_fixed and not args.skip_fastbase:
        runners.append(("fastbase, BN fixed", sys.executable, FASTBASE_RUN, ("bn-fixed",)))
    if args.bn_cached and not args.skip_fastbase:
        runners.append(("fastbase, cached", sys.executable, FASTBASE_RUN, ("bn-cached",)))
    if args.stats_fixed and not args.skip_fastbase:
        runners.append(("fastbase, stats", sys.executable, FASTBASE_RUN, ("stats-fixed",)))
    if args.recal and not args.skip_fastbase:
        runners.append(("fastbase, recal", sys.executable, FASTBASE_RUN, ("recal",)))
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
               "FASTBASE_NO_BAR": "1", "OMP_NUM_THREADS": str(args.threads)}
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
    print(f"\nhymenoptera, mobilenet_v2 (real ImageNet body), 224 px, bs {args.bs}, {args.threads} threads; "
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
