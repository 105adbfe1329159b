"""Layer 8: the lesson-1 workflow as functions, shared by the `fastbase` command line and notebooks:
find the data and how it is labelled (`find_data`, `detect_layout`, `load_data`), then `run_train`
(cnn_learner, lr_find, fit_one_cycle with the body frozen, unfreeze, fit_one_cycle with `slice`
learning rates, export, interpretation, report folder), `run_demo` (the same on the embedded
digits) and `predict_files`.
"""
from __future__ import annotations

import dataclasses
import os
import sys
import time

from .core import FastbaseError, Path, set_seed
from .data import BadFilesError
from .figures import save_figure
from .finetune import two_stages

__all__ = ["LR_RANGE", "UsageError", "describe_data", "detect_layout", "find_data", "find_lr", "load_data",
           "make_learner", "predict_files", "run_demo", "run_train"]

LR_RANGE = (1e-3, 1e-2)  # the automatic lr: lr_find's valley kept inside the range where one-cycle training is stable


class UsageError(FastbaseError):
    """A command line naming a missing path, or data whose layout fastbase cannot tell (exit code 2)."""


# --- data: where the images are and how they are labelled -------------------------------------------
def find_data(source) -> Path:
    """An existing folder as it is; a catalogue name ('digits'), a URL or an archive through `untar_data`."""
    from .datasets import untar_data

    text = os.fspath(source)
    path = Path(text).expanduser()
    if path.is_dir():
        return path
    if "://" not in text and not path.exists() and (os.sep in text or "/" in text or text.startswith(".")):
        raise UsageError(f"No folder or archive {path}. Give an image folder, an archive, a URL or a dataset "
                         "name from the catalogue (e.g. digits, mnist_sample).")
    return untar_data(text)


def _class_folders(folder: Path) -> bool:
    """True when `folder` holds two or more folders of images and no image anywhere else."""
    from .vision.image import get_image_files

    parents = {fn.parent for fn in get_image_files(folder)} if folder.is_dir() else set()
    return len(parents) >= 2 and all(p.parent == folder for p in parents)


def detect_layout(path: Path, label_re: str | None = None, csv: str | None = None) -> tuple[str, dict]:
    """(layout, arguments for the ImageDataBunch factory): 'csv' (from_csv), 'name_re' (from_name_re),
    'train_valid' (from_folder: train/ and valid/ or val/ folders of class folders), 'train_split' (only
    train/: a random split), 'class_folders' (class folders directly in `path`: a random split)."""
    if csv:
        return "csv", {"csv_labels": csv}
    if label_re:
        return "name_re", {"pat": label_re}
    valid = next((name for name in ("valid", "val") if (path / name).is_dir()), None)
    if valid and (path / "train").is_dir():
        return "train_valid", {"train": "train", "valid": valid}
    if _class_folders(path / "train"):
        return "train_split", {"train": "train"}
    if _class_folders(path):
        return "class_folders", {"train": "."}
    found = sorted(p.name + ("/" if p.is_dir() else "") for p in path.iterdir())[:12]
    raise UsageError(f"Cannot tell how the images in {path} are labelled (it holds: {', '.join(found) or 'nothing'}). "
                     "fastbase understands train/ and valid/ (or val/) folders of class folders, or class folders "
                     "alone. Otherwise pass --label-re REGEX (its first group, searched in each file's path, is the "
                     "label, e.g. '/([^/]+)_\\d+.jpg$') or --csv FILE (a file name and a label per row).")


def load_data(path: Path, size=224, bs: int = 64, valid_pct: float = 0.2, label_re: str | None = None,
              csv: str | None = None, seed: int = 42, workers: int | None = None, flip: bool = True,
              limit: int | None = None, augment: bool = True, classes=None, stats=None, resize_method=None,
              skip_bad: bool = False):
    """(ImageDataBunch normalised with `stats` (default ImageNet's), layout) for the images in `path`;
    `limit` keeps that many training images, `augment` False skips get_transforms (for evaluation),
    `skip_bad` leaves unreadable or missing files out (with a warning) instead of stopping."""
    from .data import imagenet_stats
    from .vision.data import ImageDataBunch
    from .vision.image import get_image_files
    from .vision.transforms import get_transforms

    layout, factory_args = detect_layout(path, label_re, csv)
    common = {"ds_tfms": get_transforms(do_flip=flip) if augment else None, "size": size, "bs": bs, "seed": seed,
              "num_workers": workers, "classes": classes, "resize_method": resize_method, "skip_bad": skip_bad}
    if layout == "csv":
        data = ImageDataBunch.from_csv(path, valid_pct=valid_pct, **factory_args, **common)
    elif layout == "name_re":
        data = ImageDataBunch.from_name_re(path, _matching(get_image_files(path), label_re), valid_pct=valid_pct,
                                           **factory_args, **common)
    else:
        split = None if layout == "train_valid" else valid_pct
        data = ImageDataBunch.from_folder(path, valid_pct=split, **factory_args, **common)
    if limit:
        data = _limited(data, limit, seed)
    return data.normalize(stats or imagenet_stats), layout


def _matching(files, label_re: str) -> list:
    """The files whose path `label_re` matches (all of them when none does, so that from_name_re explains);
    e.g. the pets folder's annotation masks are left out, with a note on stderr."""
    import re

    kept = [fn for fn in files if re.search(label_re, fn.as_posix())]
    if kept and len(kept) < len(files):
        print(f"note: {len(files) - len(kept)} of {len(files)} images do not match --label-re and are left out",
              file=sys.stderr)
    return kept or files


def _limited(data, n: int, seed: int):
    """The same bunch with only `n` training items (a fixed random choice)."""
    import torch
    from torch.utils.data import Subset

    idx = torch.randperm(len(data.train_ds), generator=torch.Generator().manual_seed(seed))[:n].tolist()
    subset = Subset(data.train_ds, idx)
    subset.classes = data.classes
    subset.c = data.c
    subset.multi_label = data.multi_label
    data.train_dl = data.train_dl.new(dataset=subset, drop_last=len(subset) > data.train_dl.batch_size)
    return data


def describe_data(data, path, layout: str) -> dict:
    return {"path": str(path), "layout": layout, "classes": [str(c) for c in data.classes],
            "train_images": len(data.train_dl.dataset), "valid_images": len(data.valid_ds)}


# --- the workflow's steps -------------------------------------------------------------------------------
def make_learner(data, arch: str, pretrained: bool, out: Path, feature_cache: bool = True):
    """cnn_learner with `arch` (a name in fastbase.vision.models, 'timm:NAME' or another timm model name,
    or 'module:function'), accuracy and error_rate; `feature_cache=False` turns cnn_learner's
    cached body features off."""
    from .metrics import accuracy, error_rate
    from .vision.learner import cnn_learner
    from .vision.timm_models import resolve_arch

    try:
        arch_fn = resolve_arch(arch)
    except FastbaseError as e:
        raise UsageError(str(e)) from e
    return cnn_learner(data, arch_fn, pretrained=pretrained, metrics=[accuracy, error_rate], path=out,
                       feature_cache=None if feature_cache else False)


def find_lr(learn, out: Path, iters: int):
    """lr_find with `iters` iterations; writes `out/lr_find.png` and returns the suggestions."""
    from .report import save_lr_find_plot

    suggestions = learn.lr_find(num_it=iters)
    save_lr_find_plot(learn.recorder, out)
    return suggestions


def run_train(data, out, arch: str = "resnet34", pretrained: bool = True, epochs: int = 4, unfreeze_epochs: int = 2,
              lr: float | None = None, lr_find_iters: int = 100, command: str = "train", settings=None,
              data_info=None, seconds=None, feature_cache: bool = True, keep_best: bool = False) -> dict:
    """Lesson 1 on `data`: cnn_learner, lr_find, fit_one_cycle (body frozen when pretrained), unfreeze,
    fit_one_cycle with slice(lr/100, lr/10), export, interpretation; writes export.pkl, the PNGs and
    report.html to `out` and returns the summary that `--json` prints. `lr` None: lr_find's valley.
    `feature_cache=False`: no cached body features (cnn_learner's default for a pretrained body).
    With a pretrained body, the summary says whether the unfrozen stage improved accuracy
    (`second_stage`); `keep_best` then keeps the frozen stage's weights when it did not."""
    from . import report

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    times, start = dict(seconds or {}), time.perf_counter()
    learn = make_learner(data, arch, pretrained, out, feature_cache)
    suggestions = find_lr(learn, out, lr_find_iters)
    times["lr_find"] = time.perf_counter() - start
    lr_source = "given with --lr" if lr else f"lr_find's valley, kept within {LR_RANGE[0]:g}..{LR_RANGE[1]:g}"
    lr = float(lr) if lr else float(min(max(suggestions.valley, LR_RANGE[0]), LR_RANGE[1]))
    stages = [report.StageLog("stage 1: head, body frozen" if learn.n_frozen else "stage 1: all layers")]

    def frozen_fit() -> None:
        start = time.perf_counter()
        learn.fit_one_cycle(epochs, lr, callbacks=[stages[0]])
        times["fit_one_cycle"] = time.perf_counter() - start

    def unfrozen_fit() -> None:
        stages.append(report.StageLog("stage 2: unfrozen, slice(lr/100, lr/10)"))
        start = time.perf_counter()
        learn.fit_one_cycle(unfreeze_epochs, slice(lr / 100, lr / 10), callbacks=[stages[1]])
        times["fit_unfrozen"] = time.perf_counter() - start

    comparison = None
    if unfreeze_epochs and learn.n_frozen:  # a pretrained body: say whether unfreezing helped
        comparison = two_stages(learn, frozen_fit, unfrozen_fit, keep_best=keep_best, say=False)
    else:
        frozen_fit()
        if unfreeze_epochs:
            learn.unfreeze()
            unfrozen_fit()
    start = time.perf_counter()
    for name, fig in report.plot_training(stages).items():
        save_figure(fig, out / f"{name}.png", dpi=90)
    export = learn.export(out / "export.pkl")
    valid_loss, acc, err = learn.validate()
    most_confused = report.save_interpretation(learn, out)
    times["export_and_plots"] = time.perf_counter() - start
    summary = {"command": command, "accuracy": acc, "error_rate": err, "valid_loss": valid_loss, "lr": lr,
               "lr_source": lr_source, "arch": arch, "pretrained": pretrained, "lr_find": suggestions._asdict(),
               "stages": [s.as_dict() for s in stages], "most_confused": most_confused,
               "seconds": {k: round(v, 2) for k, v in times.items()}, "settings": settings or {},
               "data": data_info or {}, "out": str(out), "export": str(export),
               "second_stage": None if comparison is None else {
                   **dataclasses.asdict(comparison), "helped": comparison.helped, "message": comparison.message}}
    summary["report"] = str(report.write_report(out, summary))
    summary["files"] = sorted(p.name for p in out.iterdir() if p.is_file())
    return summary


def run_demo(out: Path, size: int = 32, bs: int = 64, epochs: int = 4, unfreeze_epochs: int = 2,
             lr_find_iters: int = 50, seed: int = 42, limit: int | None = None, workers: int | None = None) -> dict:
    """The lesson-1 workflow on the embedded digits with resnet18 (pretrained when its weights are in the
    torch hub cache); writes export.pkl, the PNG plots and report.html to `out` and returns a summary
    (accuracy, chosen learning rate, seconds per stage, files)."""
    import torchvision

    from .datasets import URLs, untar_data
    from .vision.models import model_meta, weights_file

    set_seed(seed)
    start = time.perf_counter()
    path = untar_data(URLs.DIGITS)
    # Digits are not mirror-symmetric: no flips; the default small rotations, zooms and warps.
    data, layout = load_data(path, size=size, bs=bs, seed=seed, workers=workers, flip=False, limit=limit)
    weights = torchvision.models.get_model_weights("resnet18")[model_meta["resnet18"].weights]
    pretrained = weights_file(weights).is_file()
    settings = {"data": "digits (embedded)", "arch": "resnet18", "pretrained": pretrained, "size": size, "bs": bs,
                "epochs": epochs, "unfreeze_epochs": unfreeze_epochs, "lr_find_iters": lr_find_iters, "seed": seed,
                "limit": limit}
    return run_train(data, out, "resnet18", pretrained, epochs, unfreeze_epochs, None, lr_find_iters, "demo",
                     settings, describe_data(data, path, layout), {"data": time.perf_counter() - start})


def predict_files(learn, files, bs: int = 64) -> list[dict]:
    """{'file', 'class', 'probability'} per image ('classes' and 'probabilities' for multi-label), or
    {'file', 'error'} for a file that cannot be read; the Learner's batch prediction (`predict_folder`)
    in batches of `bs`."""
    from .deploy import predict_items

    files = list(files)
    if not files:
        return []
    errors = {}
    try:
        found = predict_items(learn, files, bs=bs, progress=False, errors=errors)
    except BadFilesError as e:  # none could be read
        return [{"file": str(fn), "error": why} for fn, why in e.bad]
    results = []
    for i, (fn, label, probs) in enumerate(zip(found.files, found.classes, found.probs)):
        if i in errors:
            results.append({"file": str(fn), "error": errors[i]})
        elif learn.data.multi_label:
            picked = [learn.data.classes.index(c) for c in label]
            results.append({"file": str(fn), "classes": [str(c) for c in label],
                            "probabilities": [float(probs[k]) for k in picked]})
        else:
            results.append({"file": str(fn), "class": str(label), "probability": float(probs.max())})
    return results
