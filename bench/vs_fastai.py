"""Benchmark: fastbase against fastai 2.8 and a plain PyTorch loop, same data, model and schedule.

Data: `../shared/data/hymenoptera` (245 training, 153 validation photos of ants and bees).
Models: MobileNetV2 with the real ImageNet body of `../shared/weights` (copied into a temporary
torch hub cache, so `pretrained=True` loads it through torchvision's own weights API), trained
frozen then unfrozen; and resnet18 from scratch (pretrained=False), unfrozen only. Every row runs in
its own child process, one after the other in one invocation, with the same threads, image size,
batch size, epochs, learning rates and one-cycle schedule (cosine, pct_start 0.3, div 25, final
lr max_lr/25e4, momentum 0.95-0.85-0.95, Adam(0.9, 0.99), decoupled weight decay 1e-2 kept off
BatchNorm and biases):

  plain loop               hand-written PyTorch: torchvision ImageFolder, Resize + RandomCrop + flip
                           (valid: Resize + CenterCrop), the same body and a head of fastbase's
                           create_head shape, torch.optim.AdamW + OneCycleLR, torch.no_grad()
                           validation, --workers loader workers (not persistent). Frozen stage: the
                           body's weights frozen, its BatchNorm trainable (fastai's train_bn).
  fastbase, same settings  cnn_learner with the same crop window + flip only, --workers workers,
                           BatchNorm trainable while frozen and learning statistics
                           (train_bn=True, freeze_bn_stats=False), no caching (neither FeatureCache nor
                           the item cache: every epoch decodes every photo, as the plain loop does),
                           NCHW memory format (channels_last=False), as the plain loop.
  fastbase defaults        get_transforms(), fastbase's default worker count and item cache
                           (decoded photos kept in memory after the first epoch, then read in the
                           main process), channels-last on the CPU (cnn_learner's default for these
                           two architectures); BatchNorm as cnn_learner sets it for a pretrained body
                           (train_bn=False, freeze_bn_stats="finetune": ImageNet's statistics kept,
                           the head's fixed after unfreeze()); frozen stage with
                           FeatureCache(n_views=--cache-views) (the body runs once per fit on
                           --cache-views augmented passes).
  fastai 2.8 defaults      vision_learner(dls, arch, metrics=accuracy), Resize + aug_transforms(),
                           fastai's default worker count; fit_one_cycle per stage with the same lrs,
                           pct_start and final lr as the others (fine_tune's stages, without its own
                           lr choices), no progress bar (fastbase rows are silent too).

Columns: loader workers; data throughput (images/s of one pass over the training loader, the
second of two, no model: decoding, augmentation, normalisation); lr_find's time for
--lr-find-iters iterations (1e-7 to 10, stop_div off, so every row runs them all; the plain loop
has a hand-written range test with weights restored); the median seconds per epoch of each stage
(training and validation) and the whole stage's seconds (for the cached row, including building
the cache); validation accuracy after each stage (153 photos: one photo is 0.65 points); the
child's peak RSS (ru_maxrss of the training process; loader worker processes are not included);
the 1-minute load average when the row ended. Then the goals of issue 9, each PASS or MISS from the
measured figures: fastbase-same within 3% of the plain loop, fastbase-defaults unfrozen epochs at
most 0.85x fastai's, frozen epochs with caching at most 0.2x fastai's, accuracy no lower than fastai's.

    python bench/vs_fastai.py [--size 224] [--bs 32] [--threads 2] [--workers 2] [--frozen-epochs 2]
        [--unfrozen-epochs 2] [--scratch-epochs 3] [--lr-find-iters 20] [--seed 0] [--skip-fastai]
        [--only ROWS] [--quick]

`--only` takes comma-separated rows (plain, same, defaults, fastai), models (mobilenet_v2,
resnet18) or both (mobilenet_v2:fastai). `--quick` is a smoke test of this script only (32 training
and 16 validation photos, 64 px, bs 8, one epoch per stage, 5 lr_find iterations): its figures mean
nothing. fastai runs in --fastai-python (default /tmp/fastai-venv/bin/python; skipped with a
message when absent: `python -m venv --system-site-packages /tmp/fastai-venv &&
/tmp/fastai-venv/bin/pip install fastai`).

Runtime: 18.1 minutes on 2 idle cores with the defaults (2026-12-01, all 8 rows; bench/RESULTS.md,
"vs_fastai.py"); 22.8-24.5 minutes on 2026-11-23, before channels-last and in-process loading, with 1
scratch epoch. --only runs a part; --lr-find-iters 0 saves about a third.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _memory import peak_rss_mb
from transfer import DATA, HUB_NAME, WEIGHTS  # the same data, weights and hub file name

ROWS = ("plain", "same", "defaults", "fastai")
LABELS = {"plain": "plain PyTorch loop", "same": "fastbase, same settings", "defaults": "fastbase defaults",
          "fastai": "fastai 2.8 defaults"}
MODELS = ("mobilenet_v2", "resnet18")  # pretrained (frozen, then unfrozen); from scratch (unfrozen only)
IMAGENET = ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
PCT_START, DIV, FINAL_DIV, MOMS, WD = 0.3, 25.0, 25e4, (0.95, 0.85), 1e-2  # fastbase's fit_one_cycle defaults


# --- shared by the children ---------------------------------------------------------------------
def throughput(loader) -> float:
    """Images per second of the second of two passes over `loader` (the first starts the workers and
    warms the file cache)."""
    for _ in range(2):
        start, n = time.perf_counter(), 0
        for batch in loader:
            n += len(batch[1])
        elapsed = time.perf_counter() - start
    return n / elapsed


def stages(cfg) -> list[tuple[str, int, float]]:
    """(stage, epochs, max_lr) for this model: frozen then unfrozen when pretrained, else unfrozen only."""
    if cfg["pretrained"]:
        return [("frozen", cfg["frozen_epochs"], cfg["lr"]), ("unfrozen", cfg["unfrozen_epochs"], cfg["unfrozen_lr"])]
    return [("unfrozen", cfg["scratch_epochs"], cfg["scratch_lr"])]


class EpochTimes:
    """Seconds of every epoch and when the first began; mixed into each framework's own Callback class."""

    def __init__(self):
        self.times, self.first = [], None

    def before_epoch(self):
        self.start = time.perf_counter()
        self.first = self.first or self.start

    def after_epoch(self):
        self.times.append(time.perf_counter() - self.start)


def stage_result(epoch_s, start, first_epoch, accuracy) -> dict:
    return {"epoch_s": epoch_s, "stage_s": time.perf_counter() - start, "setup_s": first_epoch - start,
            "accuracy": float(accuracy)}


# --- the plain PyTorch loop ---------------------------------------------------------------------
def child_plain(cfg) -> dict:
    import copy

    import torch
    import torchvision
    from torch import nn
    from torch.utils.data import DataLoader
    from torchvision import transforms as T

    torch.set_num_threads(cfg["threads"])
    torch.manual_seed(cfg["seed"])
    size, bs, workers, data = cfg["size"], cfg["bs"], cfg["workers"], Path(cfg["data"])
    norm = T.Normalize(*IMAGENET)
    train_tfm = T.Compose([T.Resize(size), T.RandomCrop(size), T.RandomHorizontalFlip(), T.ToTensor(), norm])
    valid_tfm = T.Compose([T.Resize(size), T.CenterCrop(size), T.ToTensor(), norm])
    train_ds = torchvision.datasets.ImageFolder(data / "train", train_tfm)
    valid_ds = torchvision.datasets.ImageFolder(data / "val", valid_tfm)
    train_dl = DataLoader(train_ds, batch_size=bs, shuffle=True, drop_last=len(train_ds) > bs, num_workers=workers,
                          generator=torch.Generator().manual_seed(cfg["seed"]))
    valid_dl = DataLoader(valid_ds, batch_size=bs, num_workers=workers)
    result = {"workers": workers, "throughput": throughput(train_dl)}

    if cfg["arch"] == "mobilenet_v2":
        body = torchvision.models.mobilenet_v2(weights="IMAGENET1K_V1").features
    else:
        body = nn.Sequential(*list(torchvision.models.resnet18(weights=None).children())[:-2])
    with torch.no_grad():
        nf = body.eval()(torch.zeros(1, 3, 64, 64)).shape[1]

    class ConcatPool(nn.Module):  # max and average pooling side by side, as fastbase's (and fastai's) head
        def forward(self, x):
            return torch.cat([nn.functional.adaptive_max_pool2d(x, 1), nn.functional.adaptive_avg_pool2d(x, 1)], 1)

    # the shape of fastbase's create_head(2 * nf, n_classes): BN-dropout-linear-ReLU, BN-dropout-linear
    head = nn.Sequential(ConcatPool(), nn.Flatten(), nn.BatchNorm1d(2 * nf), nn.Dropout(0.25), nn.Linear(2 * nf, 512),
                         nn.ReLU(inplace=True), nn.BatchNorm1d(512), nn.Dropout(0.5),
                         nn.Linear(512, len(train_ds.classes)))
    for m in head.modules():
        if isinstance(m, nn.Linear):
            nn.init.kaiming_normal_(m.weight)
            nn.init.zeros_(m.bias)
    model = nn.Sequential(body, head)
    bn_types = (nn.BatchNorm1d, nn.BatchNorm2d)
    decay, no_decay = [], []
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            (no_decay if isinstance(module, bn_types) or name == "bias" else decay).append(p)
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": WD}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=cfg["lr"], betas=(0.9, 0.99))
    loss_func = nn.CrossEntropyLoss()

    def set_frozen(frozen: bool) -> None:
        body.requires_grad_(not frozen)
        for m in body.modules():
            if isinstance(m, bn_types):
                m.requires_grad_(True)  # train_bn: the body's BatchNorm trains while the rest is frozen

    def step(x, y) -> torch.Tensor:
        loss = loss_func(model(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.detach()

    set_frozen(cfg["pretrained"])
    if cfg["lr_find_iters"]:  # LR range test: exponential 1e-7 -> 10, weights and optimizer restored after
        saved = copy.deepcopy(model.state_dict()), copy.deepcopy(opt.state_dict())
        start, it, n = time.perf_counter(), 0, cfg["lr_find_iters"]
        model.train()
        while it < n:
            for x, y in train_dl:
                for group in opt.param_groups:
                    group["lr"] = 1e-7 * (10 / 1e-7) ** (it / max(1, n - 1))
                step(x, y)
                it += 1
                if it == n:
                    break
        model.load_state_dict(saved[0])
        opt.load_state_dict(saved[1])
        result["lr_find_s"] = time.perf_counter() - start

    for stage, epochs, lr in stages(cfg):
        set_frozen(stage == "frozen")
        sched = torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=lr, total_steps=epochs * len(train_dl), pct_start=PCT_START, div_factor=DIV,
            final_div_factor=FINAL_DIV / DIV, base_momentum=MOMS[1], max_momentum=MOMS[0])
        start, times = time.perf_counter(), []
        for _ in range(epochs):
            epoch_start = time.perf_counter()
            model.train()
            for x, y in train_dl:
                step(x, y)
                sched.step()
            model.eval()
            correct, count = torch.zeros((), dtype=torch.long), 0
            with torch.no_grad():
                for x, y in valid_dl:
                    correct += (model(x).argmax(1) == y).sum()
                    count += len(y)
            accuracy = correct.item() / count  # read once per epoch
            times.append(time.perf_counter() - epoch_start)
        result[stage] = stage_result(times, start, start, accuracy)
    result["peak_rss_mb"] = peak_rss_mb()
    return result


# --- fastbase ------------------------------------------------------------------------------------
def child_fastbase(cfg, own_defaults: bool) -> dict:
    import torch

    from fastbase.callback import Callback, Order
    from fastbase.core import set_seed
    from fastbase.data import imagenet_stats
    from fastbase.metrics import accuracy
    from fastbase.vision import models
    from fastbase.vision.data import ImageDataBunch
    from fastbase.vision.feature_cache import FeatureCache
    from fastbase.vision.learner import cnn_learner
    from fastbase.vision.transforms import CenterCrop, Flip, RandomCrop, get_transforms

    class EpochTimer(EpochTimes, Callback):
        order = Order.DISTRIBUTED - 10  # before every fastbase callback

    torch.set_num_threads(cfg["threads"])
    set_seed(cfg["seed"])
    if own_defaults:
        tfms, workers = get_transforms(), None
        cache = cfg["pretrained"]  # FeatureCache needs cnn_learner's pretrained defaults: BatchNorm fixed
        learn_kwargs = {}
    else:  # BatchNorm as the plain loop (and fastai) train it
        tfms, workers, cache = ([RandomCrop(), Flip()], [CenterCrop()]), cfg["workers"], False
        learn_kwargs = {"train_bn": True, "freeze_bn_stats": False}
    data = ImageDataBunch.from_folder(cfg["data"], train="train", valid="val", ds_tfms=tfms, size=cfg["size"],
                                      bs=cfg["bs"], num_workers=workers, seed=cfg["seed"],
                                      # the same settings decode every epoch, as the plain loop does
                                      cache_items=None if own_defaults else False).normalize(imagenet_stats)
    result = {"workers": data.train_dl.num_workers, "throughput": throughput(data.train_dl)}
    if not own_defaults:
        learn_kwargs["channels_last"] = False  # the plain loop's memory format (fastbase's CPU default is NHWC)
    learn = cnn_learner(data, getattr(models, cfg["arch"]), pretrained=cfg["pretrained"], metrics=accuracy,
                        silent=True, **learn_kwargs)
    if cfg["lr_find_iters"]:
        start = time.perf_counter()
        learn.lr_find(num_it=cfg["lr_find_iters"], stop_div=False)
        result["lr_find_s"] = time.perf_counter() - start
    for stage, epochs, lr in stages(cfg):
        if stage == "unfrozen":
            learn.unfreeze()
        timer = EpochTimer()
        extra = [FeatureCache(n_views=cfg["cache_views"])] if cache and stage == "frozen" else []
        start = time.perf_counter()
        learn.fit_one_cycle(epochs, lr, moms=MOMS, div_factor=DIV, pct_start=PCT_START, final_div=FINAL_DIV,
                            callbacks=[timer, *extra])
        result[stage] = stage_result(timer.times, start, timer.first, learn.recorder.metrics[-1][0])
        result[stage]["cached"] = bool(extra)
    result["peak_rss_mb"] = peak_rss_mb()
    return result


# --- fastai 2.8 ------------------------------------------------------------------------------------
def child_fastai(cfg) -> dict:
    import fastai
    import torch
    from fastai.vision.all import (
        Callback,
        ImageDataLoaders,
        Normalize,
        Resize,
        accuracy,
        aug_transforms,
        default_split,
        imagenet_stats,
        model_meta,
        resnet18,
        set_seed,
        vision_learner,
    )
    from torchvision.models import mobilenet_v2

    class EpochTimer(EpochTimes, Callback):
        order = -20  # before fastai's TrainEvalCallback and Recorder

    torch.set_num_threads(cfg["threads"])
    set_seed(cfg["seed"])
    size = cfg["size"]
    dls = ImageDataLoaders.from_folder(cfg["data"], train="train", valid="val", item_tfms=Resize(size), bs=cfg["bs"],
                                       seed=cfg["seed"],
                                       batch_tfms=[*aug_transforms(size=size), Normalize.from_stats(*imagenet_stats)])
    result = {"workers": dls.train.fake_l.num_workers, "throughput": throughput(dls.train),
              "version": fastai.__version__}
    if cfg["arch"] == "mobilenet_v2":
        # fastai 2.8 has no model_meta entry for torchvision's mobilenet_v2 and finds no pooling layer
        # among its children: keep `features`, as fastbase does (see bench/transfer.py)
        model_meta[mobilenet_v2] = {"cut": -1, "split": default_split, "stats": imagenet_stats}
        arch = mobilenet_v2
    else:
        arch = resnet18
    # path: lr_find saves the weights to path/models/_tmp.pth; keep that out of the data folder
    learn = vision_learner(dls, arch, pretrained=cfg["pretrained"], metrics=accuracy, path=cfg["tmp"])
    with learn.no_bar():
        if cfg["lr_find_iters"]:
            start = time.perf_counter()
            learn.lr_find(num_it=cfg["lr_find_iters"], stop_div=False, show_plot=False)
            result["lr_find_s"] = time.perf_counter() - start
        for stage, epochs, lr in stages(cfg):
            if stage == "unfrozen":
                learn.unfreeze()
            timer = EpochTimer()
            start = time.perf_counter()
            learn.fit_one_cycle(epochs, lr, pct_start=PCT_START, div=DIV, div_final=FINAL_DIV, cbs=[timer])
            result[stage] = stage_result(timer.times, start, timer.first, learn.recorder.values[-1][-1])
    result["peak_rss_mb"] = peak_rss_mb()
    return result


def child_main(row: str, cfg: dict) -> None:
    run = {"plain": child_plain, "same": lambda c: child_fastbase(c, False),
           "defaults": lambda c: child_fastbase(c, True), "fastai": child_fastai}[row]
    print("RESULT " + json.dumps(run(cfg)), flush=True)


# --- the parent ------------------------------------------------------------------------------------
def quick_subset(root: Path, n_train: int = 16, n_valid: int = 8) -> Path:
    """A copy (symbolic links) of hymenoptera with the first few photos of each class."""
    for split, n in (("train", n_train), ("val", n_valid)):
        for cls in sorted(p for p in (DATA / split).iterdir() if p.is_dir()):
            (root / split / cls.name).mkdir(parents=True)
            for f in sorted(cls.iterdir())[:n]:
                (root / split / cls.name / f.name).symlink_to(f)
    return root


def machine_info() -> str:
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import torch
    import torchvision
    return (f"{platform.node()}: {model}, {os.cpu_count()} CPUs ({len(os.sched_getaffinity(0))} usable), "
            f"Python {platform.python_version()}, torch {torch.__version__}, torchvision {torchvision.__version__}")


def selected(only: str | None) -> list[tuple[str, str]]:
    pairs = [(m, r) for m in MODELS for r in ROWS]
    if not only:
        return pairs
    wanted = [w.strip() for w in only.split(",") if w.strip()]
    for w in wanted:
        if not any(w in (m, r, f"{m}:{r}") for m, r in pairs):
            raise SystemExit(f"--only: unknown row {w!r}; use {', '.join(ROWS)}, {', '.join(MODELS)} or MODEL:ROW")
    return [(m, r) for m, r in pairs if any(w in (m, r, f"{m}:{r}") for w in wanted)]


def run_child(python: str, row: str, cfg: dict, env: dict, script: str = __file__) -> dict:
    """The RESULT line of `script --child row --config cfg` run by `python` (bench/lesson1.py shares it)."""
    proc = subprocess.run([python, str(Path(script).resolve()), "--child", row, "--config", json.dumps(cfg)],
                          env=env, capture_output=True, text=True, check=False)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    raise RuntimeError(f"{row} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")


def fmt(value, spec: str = ".1f") -> str:
    return "—" if value is None else format(value, spec)


def median_epoch(r: dict | None, stage: str) -> float | None:
    s = (r or {}).get(stage)
    return statistics.median(s["epoch_s"]) if s and s["epoch_s"] else None


def per_epoch_with_setup(r: dict | None, stage: str) -> float | None:
    """The stage's whole time (cache building included) over its epochs."""
    s = (r or {}).get(stage)
    return s["stage_s"] / len(s["epoch_s"]) if s and s["epoch_s"] else None


def table(results: dict) -> list[str]:
    lines = [("| model | row | workers | data img/s | lr_find s | frozen s/epoch | frozen stage s | frozen acc "
              "| unfrozen s/epoch | unfrozen stage s | unfrozen acc | peak RSS MB | load |"),
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for (model, row), r in results.items():
        frozen, unfrozen = r.get("frozen"), r.get("unfrozen")
        cached = " (cached)" if frozen and frozen.get("cached") else ""
        name = f"{model} {'pretrained' if model == 'mobilenet_v2' else 'scratch'}"
        lines.append(
            f"| {name} | {LABELS[row]}{cached} | {r['workers']} | {r['throughput']:.0f} | {fmt(r.get('lr_find_s'))} "
            f"| {fmt(median_epoch(r, 'frozen'))} | {fmt(frozen and frozen['stage_s'])} "
            f"| {fmt(frozen and frozen['accuracy'], '.4f')} | {fmt(median_epoch(r, 'unfrozen'))} "
            f"| {fmt(unfrozen and unfrozen['stage_s'])} | {fmt(unfrozen and unfrozen['accuracy'], '.4f')} "
            f"| {r['peak_rss_mb']:.0f} | {r['load']:.1f} |")
    return lines


def goals(results: dict) -> list[str]:
    """The issue's targets, each checked against the measured figures."""
    lines = []

    def check(label: str, num: float | None, den: float | None, target: float, kind: str = "ratio") -> None:
        if num is None or den is None:
            lines.append(f"- {label}: n/a (a row or stage was not measured)")
            return
        if kind == "ratio":
            ratio = num / den
            verdict = "PASS" if ratio <= target else "MISS"
            lines.append(f"- {label}: {num:.2f} / {den:.2f} s = {ratio:.3f}x (target <= {target:.2f}x) {verdict}")
        else:
            verdict = "PASS" if num >= den else "MISS"
            lines.append(f"- {label}: {num:.4f} vs {den:.4f} (target >=) {verdict}")

    for model in MODELS:
        plain, same = results.get((model, "plain")), results.get((model, "same"))
        fbd, fai = results.get((model, "defaults")), results.get((model, "fastai"))
        if not any((plain, same, fbd, fai)):
            continue
        stage_names = ("frozen", "unfrozen") if model == "mobilenet_v2" else ("unfrozen",)
        for stage in stage_names:
            check(f"{model}, {stage}: fastbase same settings vs plain loop, s/epoch", median_epoch(same, stage),
                  median_epoch(plain, stage), 1.03)
        check(f"{model}, unfrozen: fastbase defaults vs fastai defaults, s/epoch", median_epoch(fbd, "unfrozen"),
              median_epoch(fai, "unfrozen"), 0.85)
        if model == "mobilenet_v2":
            check(f"{model}, frozen: fastbase defaults (cached) vs fastai, s/epoch, cache building excluded",
                  median_epoch(fbd, "frozen"), median_epoch(fai, "frozen"), 0.2)
            check(f"{model}, frozen: fastbase defaults (cached) vs fastai, stage s / epochs, cache building included",
                  per_epoch_with_setup(fbd, "frozen"), per_epoch_with_setup(fai, "frozen"), 0.2)
        last = stage_names[-1]
        for row, r in (("fastbase defaults", fbd), ("fastbase same settings", same)):
            check(f"{model}: final accuracy, {row} vs fastai", (r or {}).get(last, {}).get("accuracy"),
                  (fai or {}).get(last, {}).get("accuracy"), 0, kind="accuracy")
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=None, help="image size (224; --quick: 64)")
    parser.add_argument("--bs", type=int, default=None, help="batch size (32; --quick: 8)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads in every child")
    parser.add_argument("--workers", type=int, default=2, help="loader workers of the plain and same-settings rows")
    parser.add_argument("--frozen-epochs", type=int, default=None, help="(2; --quick: 1)")
    parser.add_argument("--unfrozen-epochs", type=int, default=None, help="(2; --quick: 1)")
    parser.add_argument("--scratch-epochs", type=int, default=3, help="resnet18 from scratch (3)")
    parser.add_argument("--lr-find-iters", type=int, default=None, help="(20; --quick: 5; 0 skips lr_find)")
    parser.add_argument("--lr", type=float, default=3e-3, help="max lr of the frozen stage")
    parser.add_argument("--unfrozen-lr", type=float, default=1e-4, help="max lr of the unfrozen stage (all layers)")
    parser.add_argument("--scratch-lr", type=float, default=1e-3, help="max lr for resnet18 from scratch")
    parser.add_argument("--cache-views", type=int, default=1, help="FeatureCache(n_views=) of the defaults row")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", default=None, help="comma-separated rows, models or MODEL:ROW (see the docstring)")
    parser.add_argument("--skip-fastai", action="store_true")
    parser.add_argument("--fastai-python", default="/tmp/fastai-venv/bin/python")
    parser.add_argument("--quick", action="store_true", help="smoke test on a tiny subset; the figures mean nothing")
    parser.add_argument("--child", choices=ROWS, help=argparse.SUPPRESS)
    parser.add_argument("--config", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child_main(args.child, json.loads(args.config))
        return 0
    if not (DATA.is_dir() and WEIGHTS.is_file()):
        print(f"skipped: needs {DATA} and {WEIGHTS} (the project's ../shared folder)")
        return 0
    quick = args.quick
    for name, full, small in (("size", 224, 64), ("bs", 32, 8), ("frozen_epochs", 2, 1), ("unfrozen_epochs", 2, 1),
                              ("lr_find_iters", 20, 5)):
        if getattr(args, name) is None:
            setattr(args, name, small if quick else full)
    pairs = selected(args.only)
    fastai_ok = Path(args.fastai_python).exists()
    if any(r == "fastai" for _, r in pairs):
        if args.skip_fastai:
            pairs = [(m, r) for m, r in pairs if r != "fastai"]
        elif not fastai_ok:
            print(f"fastai not measured: {args.fastai_python} not found (see this script's docstring)", file=sys.stderr)
            pairs = [(m, r) for m, r in pairs if r != "fastai"]

    load_start, info = os.getloadavg(), machine_info()
    results, begin = {}, time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        checkpoints = Path(tmp, "torch", "hub", "checkpoints")
        checkpoints.mkdir(parents=True)
        shutil.copy(WEIGHTS, checkpoints / HUB_NAME)
        data = quick_subset(Path(tmp, "data")) if quick else DATA
        env = {**os.environ, "TORCH_HOME": str(Path(tmp, "torch")), "FASTBASE_HOME": str(Path(tmp, "fb")),
               "FASTBASE_NO_BAR": "1", "OMP_NUM_THREADS": str(args.threads)}
        base = {"data": str(data), "tmp": str(Path(tmp, "fastai")), "size": args.size, "bs": args.bs,
                "threads": args.threads, "workers": args.workers, "seed": args.seed,
                "frozen_epochs": args.frozen_epochs, "unfrozen_epochs": args.unfrozen_epochs,
                "scratch_epochs": args.scratch_epochs, "lr_find_iters": args.lr_find_iters, "lr": args.lr,
                "unfrozen_lr": args.unfrozen_lr, "scratch_lr": args.scratch_lr, "cache_views": args.cache_views}
        for i, (model, row) in enumerate(pairs, 1):
            cfg = {**base, "arch": model, "pretrained": model == "mobilenet_v2"}
            python = args.fastai_python if row == "fastai" else sys.executable
            print(f"[{i}/{len(pairs)}] {model}: {LABELS[row]} ... ({time.perf_counter() - begin:.0f} s so far)",
                  file=sys.stderr, flush=True)
            try:
                result = run_child(python, row, cfg, env)
            except RuntimeError as e:  # one row failing still leaves the others' figures
                print(e, file=sys.stderr, flush=True)
                continue
            result["load"] = os.getloadavg()[0]
            print(f"  {json.dumps(result)}", file=sys.stderr, flush=True)
            results[(model, row)] = result

    fastai_version = next((r["version"] for r in results.values() if "version" in r), None)
    print(f"\n{'QUICK SMOKE TEST (tiny subset): these figures mean nothing. ' if quick else ''}"
          f"hymenoptera{' subset (32 train / 16 valid)' if quick else ''}, {args.size} px, bs {args.bs}, "
          f"{args.threads} threads, seed {args.seed}; epochs: {args.frozen_epochs} frozen + {args.unfrozen_epochs} "
          f"unfrozen (mobilenet_v2), {args.scratch_epochs} (resnet18); lr {args.lr:g} frozen, {args.unfrozen_lr:g} "
          f"unfrozen, {args.scratch_lr:g} scratch; lr_find {args.lr_find_iters} iterations; FeatureCache "
          f"n_views={args.cache_views}")
    print(f"{info}{f', fastai {fastai_version}' if fastai_version else ''}")
    load_end = os.getloadavg()
    print(f"load average (1, 5, 15 min): at start {', '.join(f'{v:.1f}' for v in load_start)}; "
          f"at end {', '.join(f'{v:.1f}' for v in load_end)}; whole run {time.perf_counter() - begin:.0f} s\n")
    if not results:
        print("no row was measured")
        return 1
    print("\n".join(table(results)))
    cached = [(m, r["frozen"]["setup_s"]) for (m, row), r in results.items() if r.get("frozen", {}).get("cached")]
    print("\ns/epoch: median over the stage's epochs (training + validation); stage s: the whole fit_one_cycle "
          "call. data img/s: second pass over the training loader, no model. peak RSS: the training process "
          "only (loader workers not included). load: 1-min load average when the row ended.")
    for model, setup in cached:
        print(f"{model}, fastbase defaults: building the feature cache took {setup:.1f} s of the frozen stage.")
    print("\nGoals (issue 9):")
    print("\n".join(goals(results)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
