"""Object detection on coco_tiny (issue 29): fastbase's `detection_learner` against a plain torchvision
training loop over the same model, data, transforms and epochs.

Both sides train the same `Detector` (torchvision's FCOS over the ImageNet MobileNetV2 body of
`../shared/weights`, through a temporary torch hub cache), built from the same seed, on the same
`ObjectDataBunch` batches (fastbase's loaders and augmentation: the loop under test is the training
loop, not the data pipeline), for the same number of epochs of one-cycle AdamW at the same lr with
the body frozen. fastbase: `detection_learner(...)` then `learn.fit_one_cycle(EPOCHS, LR)`. The plain
loop: the body's parameters set to `requires_grad=False` and its BatchNorm in eval mode (what
fastbase's frozen pretrained body does), `torch.optim.AdamW` with `OneCycleLR`, `loss =
sum(model(x, boxes, labels).losses.values())`, backward, step, and after each epoch (`--plain-eval
epoch`, what `fit` and torchvision's reference `train.py` do) the validation loss and the same two
`MeanAP` metrics (torchmetrics with pycocotools); `--plain-eval end` leaves that out, so the plain side
does less work than `fit`. Each side is then scored by `learn.validate()` on the validation set.

Runs alternate (fastbase, plain, fastbase, ...) in one invocation, each in its own child process so
peak memory (`bench/_memory.py`, after the imports) is its own; the table gives medians.

    python bench/detection.py [--runs 3] [--epochs 3] [--size 128] [--bs 16] [--lr 1e-3] [--threads 2]
        [--fpn 128] [--head-convs 2] [--plain-eval epoch|end] [--json out.json]
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

RUN = r"""
import json, sys, time, torch
cfg = json.loads(sys.argv[1])
torch.set_num_threads(cfg["threads"])
sys.path.insert(0, cfg["bench"])
from _memory import peak_rss_mb, reset_peak_rss
from fastbase.core import Path, set_seed
from fastbase.vision import *

coco = Path(cfg["coco"])
images, lbl_bbox = get_annotations(coco/'train.json')
img2bbox = dict(zip(images, lbl_bbox))
set_seed(0)
data = (ObjectItemList.from_folder(coco).split_by_rand_pct(0.2, seed=0).label_from_func(lambda o: img2bbox[o.name])
        .transform(get_transforms(), tfm_y=True, size=cfg["size"])
        .databunch(bs=cfg["bs"], collate_fn=bb_pad_collate, num_workers=0, seed=0))
set_seed(0)
learn = detection_learner(data, models.mobilenet_v2, pretrained=True, fpn_channels=cfg["fpn"],
                          head_convs=cfg["head_convs"], silent=True)
reset_peak_rss()
start = time.perf_counter()
if cfg["side"] == "fastbase":
    learn.fit_one_cycle(cfg["epochs"], cfg["lr"])
else:  # the plain loop over the same model and batches
    model = learn.model
    body = {id(p) for p in model.body.parameters()}
    for p in model.body.parameters():
        p.requires_grad_(False)
    params = [p for p in model.parameters() if id(p) not in body]
    opt = torch.optim.AdamW(params, lr=cfg["lr"], weight_decay=1e-2)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, cfg["lr"], total_steps=cfg["epochs"] * len(data.train_dl))
    metrics = [MeanAP(iou=0.5), MeanAP()]
    for epoch in range(cfg["epochs"]):
        model.train()
        model.body.eval()  # a frozen pretrained body keeps its BatchNorm statistics
        for x, (boxes, labels) in data.train_dl:
            loss = sum(model(x, boxes, labels).losses.values())
            loss.backward()
            opt.step()
            opt.zero_grad()
            sched.step()
        if cfg["plain_eval"] == "epoch":  # as torchvision's reference train.py and fit do: loss and mAP each epoch
            model.eval()
            for m in metrics:
                m.reset()
            with torch.no_grad():
                for x, (boxes, labels) in data.valid_dl:
                    out = model(x, boxes, labels)
                    valid_loss = sum(out.losses.values())
                    for m in metrics:
                        m.accumulate(out, boxes, labels)
            scores = [float(m.value) for m in metrics]
seconds = time.perf_counter() - start
peak = peak_rss_mb()
_, map50, map_ = learn.validate()  # the same MeanAP metrics (mAP@0.5, mAP@0.5:0.95) for both sides
print(json.dumps({"side": cfg["side"], "seconds": seconds, "map50": float(map50), "map": float(map_),
                  "peak_mb": peak}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add = parser.add_argument
    add("--runs", type=int, default=3)
    add("--epochs", type=int, default=3)
    add("--size", type=int, default=128)
    add("--bs", type=int, default=16)
    add("--lr", type=float, default=1e-3)
    add("--fpn", type=int, default=128)
    add("--head-convs", type=int, default=2)
    add("--threads", type=int, default=2)
    add("--plain-eval", choices=("epoch", "end"), default="epoch",
        help="the plain loop's validation loss and mAP: after every epoch (as fit) or only at the end")
    add("--json", default=None)
    args = parser.parse_args()
    if not WEIGHTS.exists():
        sys.exit(f"needs {WEIGHTS} (../shared)")
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, **temp_hub(tmp), "OMP_NUM_THREADS": str(args.threads),
               "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
        for run in range(args.runs):
            for side in ("fastbase", "plain"):
                cfg = {"side": side, "coco": str(SHARED / "data" / "coco_tiny"), "bench": str(ROOT / "bench"),
                       "threads": args.threads, "size": args.size, "bs": args.bs, "epochs": args.epochs,
                       "lr": args.lr, "fpn": args.fpn, "head_convs": args.head_convs,
                       "plain_eval": args.plain_eval}
                out = subprocess.run([sys.executable, "-c", RUN, json.dumps(cfg)], check=False, env=env, capture_output=True,
                                     text=True)
                if out.returncode:
                    sys.exit(out.stderr[-3000:])
                results.append(json.loads(out.stdout.strip().splitlines()[-1]))
                print(run, results[-1], flush=True)
    print(f"\n| side | seconds (median of {args.runs}) | mAP@0.5 | mAP@0.5:0.95 | peak RSS MiB |")
    print("|---|---|---|---|---|")
    med = {}
    for side in ("fastbase", "plain"):
        rs = [r for r in results if r["side"] == side]
        med[side] = {k: statistics.median(r[k] for r in rs) for k in ("seconds", "map50", "map", "peak_mb")}
        m = med[side]
        print(f"| {side} | {m['seconds']:.1f} | {m['map50']:.3f} | {m['map']:.3f} | {m['peak_mb']:.0f} |")
    print(f"time ratio fastbase/plain: {med['fastbase']['seconds'] / med['plain']['seconds']:.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "runs": results, "medians": med}, indent=2))


if __name__ == "__main__":
    main()
