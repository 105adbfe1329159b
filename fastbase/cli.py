"""Layer 8: the `fastbase` command line: the notebook workflow from the shell.

`fastbase train DATA` runs lesson 1 on a labelled image folder, a catalogue name, a URL or an
archive: it finds how the images are labelled, builds an ImageDataBunch and a cnn_learner, runs
lr_find, fit_one_cycle with the body frozen, unfreeze, fit_one_cycle with `slice` learning rates,
exports the model, looks at its mistakes, and writes a report folder (`fastbase.report`). `demo`
is `train` on the embedded digits; `lr-find`, `interpret` and `predict` run one step each.
Results go to stdout (one JSON document with `--json`), progress bars and errors to stderr. Exit
codes: 0 ok, 1 failure while running, 2 bad command line or data, 130 interrupted (Ctrl-C).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
import traceback
import warnings

from . import __version__
from .compare import add_compare_parser
from .core import FastbaseError, Path, import_ref, set_seed

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
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
              limit: int | None = None, augment: bool = True, classes=None, stats=None, resize_method=None):
    """(ImageDataBunch normalised with `stats` (default ImageNet's), layout) for the images in `path`;
    `limit` keeps that many training images, `augment` False skips get_transforms (for evaluation)."""
    from .data import imagenet_stats
    from .vision.data import ImageDataBunch
    from .vision.image import get_image_files
    from .vision.transforms import get_transforms

    layout, factory_args = detect_layout(path, label_re, csv)
    common = {"ds_tfms": get_transforms(do_flip=flip) if augment else None, "size": size, "bs": bs, "seed": seed,
              "num_workers": workers, "classes": classes, "resize_method": resize_method}
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


def _data_options(args) -> dict:
    names = ("size", "bs", "valid_pct", "label_re", "csv", "seed", "workers", "flip", "limit")
    return {name: getattr(args, name) for name in names if hasattr(args, name)}


def _limited(data, n: int, seed: int):
    """The same bunch with only `n` training items (a fixed random choice)."""
    import torch
    from torch.utils.data import Subset

    idx = torch.randperm(len(data.train_ds), generator=torch.Generator().manual_seed(seed))[:n].tolist()
    subset = Subset(data.train_ds, idx)
    for attr in ("classes", "c", "multi_label"):
        setattr(subset, attr, getattr(data.train_ds, attr, None))
    data.train_dl = data.train_dl.new(dataset=subset, drop_last=len(subset) > data.train_dl.batch_size)
    return data


def describe_data(data, path, layout: str) -> dict:
    return {"path": str(path), "layout": layout, "classes": [str(c) for c in data.classes],
            "train_images": len(data.train_dl.dataset), "valid_images": len(data.valid_ds)}


# --- the workflow's steps -------------------------------------------------------------------------------
def make_learner(data, arch: str, pretrained: bool, out: Path):
    """cnn_learner with `arch` (a name in fastbase.vision.models or 'module:function'), accuracy and error_rate."""
    from .metrics import accuracy, error_rate
    from .vision import models
    from .vision.learner import cnn_learner

    if ":" in arch:
        arch_fn = import_ref(arch)
    elif arch in models.model_meta:
        arch_fn = getattr(models, arch)
    else:
        raise UsageError(f"Unknown architecture {arch!r}; choose one of {', '.join(models.model_meta)}, or give "
                         "'package.module:function'.")
    return cnn_learner(data, arch_fn, pretrained=pretrained, metrics=[accuracy, error_rate], path=out)


def find_lr(learn, out: Path, iters: int):
    """lr_find with `iters` iterations; writes `out/lr_find.png` and returns the suggestions."""
    from .report import save_lr_find_plot

    suggestions = learn.lr_find(num_it=iters)
    save_lr_find_plot(learn.recorder, out)
    return suggestions


def run_train(data, out, arch: str = "resnet34", pretrained: bool = True, epochs: int = 4, unfreeze_epochs: int = 2,
              lr: float | None = None, lr_find_iters: int = 100, command: str = "train", settings=None,
              data_info=None, seconds=None) -> dict:
    """Lesson 1 on `data`: cnn_learner, lr_find, fit_one_cycle (body frozen when pretrained), unfreeze,
    fit_one_cycle with slice(lr/100, lr/10), export, interpretation; writes export.pkl, the PNGs and
    report.html to `out` and returns the summary that `--json` prints. `lr` None: lr_find's valley."""
    from . import report

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    times, start = dict(seconds or {}), time.perf_counter()
    learn = make_learner(data, arch, pretrained, out)
    suggestions = find_lr(learn, out, lr_find_iters)
    times["lr_find"] = time.perf_counter() - start
    lr_source = "given with --lr" if lr else f"lr_find's valley, kept within {LR_RANGE[0]:g}..{LR_RANGE[1]:g}"
    lr = float(lr) if lr else float(min(max(suggestions.valley, LR_RANGE[0]), LR_RANGE[1]))
    stages = [report.StageLog("stage 1: head, body frozen" if learn.n_frozen else "stage 1: all layers")]
    start = time.perf_counter()
    learn.fit_one_cycle(epochs, lr, callbacks=[stages[0]])
    times["fit_one_cycle"] = time.perf_counter() - start
    if unfreeze_epochs:
        learn.unfreeze()
        stages.append(report.StageLog("stage 2: unfrozen, slice(lr/100, lr/10)"))
        start = time.perf_counter()
        learn.fit_one_cycle(unfreeze_epochs, max_lr=slice(lr / 100, lr / 10), callbacks=[stages[1]])
        times["fit_unfrozen"] = time.perf_counter() - start
    start = time.perf_counter()
    for name, fig in report.plot_training(stages).items():
        report.save_figure(fig, out / f"{name}.png")
    export = learn.export(out / "export.pkl")
    valid_loss, acc, err = learn.validate()
    most_confused = report.save_interpretation(learn, out)
    times["export_and_plots"] = time.perf_counter() - start
    summary = {"command": command, "accuracy": acc, "error_rate": err, "valid_loss": valid_loss, "lr": lr,
               "lr_source": lr_source, "arch": arch, "pretrained": pretrained, "lr_find": suggestions._asdict(),
               "stages": [s.as_dict() for s in stages], "most_confused": most_confused,
               "seconds": {k: round(v, 2) for k, v in times.items()}, "settings": settings or {},
               "data": data_info or {}, "out": str(out), "export": str(export)}
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
    {'file', 'error'} for a file that cannot be read; the model sees batches of `bs` images."""
    import torch

    from .metrics import loss_activation

    results, batch, activation, classes = [], [], loss_activation(learn.loss_func), learn.data.classes

    def run_batch():
        with torch.no_grad():
            probs = activation(learn.model(torch.cat([x for _, x in batch]))).float().cpu()
        for (i, _), p in zip(batch, probs):
            if learn.data.multi_label:
                picked = [k for k in range(len(p)) if p[k] > 0.5]
                results[i].update(classes=[str(classes[k]) for k in picked], probabilities=[float(p[k]) for k in picked])
            else:
                k = int(p.argmax())
                results[i].update({"class": str(classes[k]), "probability": float(p[k])})
        batch.clear()

    learn.model.eval()
    for fn in files:
        results.append({"file": str(fn)})
        try:
            batch.append((len(results) - 1, learn.data.one_item(fn)[0]))
        except (FastbaseError, OSError, ValueError) as e:  # this file is unreadable: say so, go on with the rest
            results[-1]["error"] = str(e)
        if len(batch) == bs:
            run_batch()
    if batch:
        run_batch()
    return results


# --- the commands -----------------------------------------------------------------------------------------
def _settings(args) -> dict:
    skip = {"func", "own_stdout", "results", "json", "command"}
    return {k: (v if isinstance(v, (int, float, str, bool, type(None))) else str(v))
            for k, v in vars(args).items() if k not in skip}


def _emit(args, payload: dict, lines: list[str], code: int = EXIT_OK) -> int:
    """The command's result on stdout: one JSON document with --json, else the text lines."""
    text = json.dumps(payload, indent=2, default=str) if args.json else "\n".join(lines)
    print(text, file=args.results, flush=True)
    return code


def _result_lines(s: dict) -> list[str]:
    confused = ", ".join(f"{a} as {p} ({n})" for a, p, n in s["most_confused"][:5]) or "none"
    lines = [f"validation accuracy {s['accuracy']:.4f} (error rate {s['error_rate']:.4f}, loss {s['valid_loss']:.4f})"]
    if "lr" in s:
        lines.append(f"lr {s['lr']:.2e} ({s['lr_source']}); {'pretrained' if s['pretrained'] else 'random'} "
                     f"{s['arch']} body; seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in s["seconds"].items()))
    return [*lines, f"most confused (actual as predicted): {confused}",
            f"wrote {', '.join(s['files'])} to {s['out']}; open {s['report']}"]


def _cmd_demo(args) -> int:
    summary = run_demo(Path(args.out), size=args.size, bs=args.bs, epochs=args.epochs,
                       unfreeze_epochs=args.unfreeze_epochs, lr_find_iters=args.lr_find_iters, seed=args.seed,
                       limit=args.limit, workers=args.workers)
    return _emit(args, summary, _result_lines(summary))


def _cmd_train(args) -> int:
    path = find_data(args.data)
    set_seed(args.seed)
    start = time.perf_counter()
    data, layout = load_data(path, **_data_options(args))
    summary = run_train(data, args.out, args.arch, args.pretrained, args.epochs, args.unfreeze_epochs, args.lr,
                        args.lr_find_iters, "train", _settings(args), describe_data(data, path, layout),
                        {"data": time.perf_counter() - start})
    return _emit(args, summary, _result_lines(summary))


def _cmd_lr_find(args) -> int:
    path, out = find_data(args.data), Path(args.out)
    set_seed(args.seed)
    data, _ = load_data(path, **_data_options(args))
    out.mkdir(parents=True, exist_ok=True)
    suggestions = find_lr(make_learner(data, args.arch, args.pretrained, out), out, args.lr_find_iters)
    payload = {**suggestions._asdict(), "plot": str(out / "lr_find.png")}
    lines = [f"{name:<8} {value:.2e}" for name, value in suggestions._asdict().items()] + [f"wrote {payload['plot']}"]
    return _emit(args, payload, lines)


def _existing_file(name: str, what: str) -> Path:
    path = Path(name).expanduser()
    if not path.exists():
        raise UsageError(f"No {what} {path}: give the export.pkl that `fastbase train` wrote, or its folder.")
    return path


def _cmd_interpret(args) -> int:
    from .learner import Learner, load_learner
    from .metrics import accuracy, error_rate
    from .report import save_interpretation, write_report

    model = _existing_file(args.model, "model file")
    exported, path, out = load_learner(model), find_data(args.data), Path(args.out)
    set_seed(args.seed)
    saved = exported.data
    options = {**_data_options(args), "size": args.size or saved.size, "limit": None}
    data, layout = load_data(path, **options, augment=False, classes=saved.classes, stats=saved.stats,
                             resize_method=saved.resize_method)
    out.mkdir(parents=True, exist_ok=True)
    learn = Learner(data, exported.model, loss_func=exported.loss_func, metrics=[accuracy, error_rate], path=out)
    valid_loss, acc, err = learn.validate()
    summary = {"command": "interpret", "model": str(model), "accuracy": acc, "error_rate": err,
               "valid_loss": valid_loss, "most_confused": save_interpretation(learn, out),
               "settings": _settings(args), "data": describe_data(data, path, layout), "out": str(out)}
    summary["report"] = str(write_report(out, summary))
    summary["files"] = sorted(p.name for p in out.iterdir() if p.is_file())
    return _emit(args, summary, _result_lines(summary))


def _cmd_predict(args) -> int:
    from .learner import load_learner
    from .vision.image import get_image_files

    learn = load_learner(_existing_file(args.model, "model file"))
    files, empty = [], []
    for item in map(Path, args.images):
        found = get_image_files(item) if item.is_dir() else [item]
        files += found
        empty += [] if found else [{"file": str(item), "error": "this folder holds no image files"}]
    results = empty + predict_files(learn, files, bs=args.bs)
    errors = [r for r in results if "error" in r]
    for r in errors:
        print(f"fastbase predict: error: {r['file']}: {r['error']}", file=sys.stderr)
    lines = [f"{r['file']}\t{r['class']}\t{r['probability']:.4f}" if "class" in r else
             f"{r['file']}\t{';'.join(r.get('classes', ['ERROR']))}" for r in results]
    payload = {"model": args.model, "predictions": results, "errors": len(errors)}
    return _emit(args, payload, lines, EXIT_USAGE if errors else EXIT_OK)


# --- the parser -----------------------------------------------------------------------------------------------
_EXAMPLES = {
    "demo": ["fastbase demo", "fastbase demo --out /tmp/demo --epochs 1 --unfreeze-epochs 1 --json"],
    "train": ["fastbase train digits --arch resnet18 --size 32 --no-flip --out digits_run",
              "fastbase train ~/data/hymenoptera --epochs 3 --out bees    # train/ and val/ folders",
              "fastbase train pets --label-re '/([^/]+)_\\d+.jpg$' --out pets_run",
              "fastbase train mnist_sample --csv labels.csv --lr 3e-3 --json > summary.json"],
    "lr-find": ["fastbase lr-find digits --arch resnet18 --size 32 --out lr", "fastbase lr-find ~/data/flowers --json"],
    "interpret": ["fastbase interpret digits_run/export.pkl digits --out digits_interp"],
    "predict": ["fastbase predict digits_run/export.pkl img1.png img2.png",
                "fastbase predict digits_run ~/scans/ --json    # a folder: every image in it"],
}


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {text}")
    return value


def _command(commands, name: str, func, help: str):
    cmd = commands.add_parser(name, help=help, description=func.__doc__ or help,
                              epilog="examples:\n" + "\n".join(f"  {e}" for e in _EXAMPLES[name]),
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    cmd.set_defaults(func=func, own_stdout=True)
    cmd.add_argument("--json", action="store_true", help="print one JSON document on stdout (nothing else goes there)")
    return cmd


def _data_flags(cmd, size: int | None, training: bool = True) -> None:
    add = cmd.add_argument
    add("data", metavar="DATA", help="image folder, archive, URL, or catalogue name (digits, mnist_sample, pets...)")
    add("--size", type=_positive, default=size,
        help=f"image size in pixels (default: {size or 'the size the model was trained at'})")
    add("--bs", type=_positive, default=64, help="batch size (default: %(default)s)")
    add("--valid-pct", type=float, default=0.2, help="share of the images kept for validation when the data have "
        "no validation folder (default: %(default)s)")
    add("--label-re", metavar="REGEX", help="label each image with the first group of REGEX, searched in its path")
    add("--csv", metavar="FILE", help="labels from a CSV file in DATA: a file name (relative to DATA) and a label per row")
    add("--seed", type=int, default=42, help="random seed for the split, augmentation and weights (default: %(default)s)")
    add("--workers", type=int, default=None, help="data-loading processes (default: automatic)")
    if training:
        add("--no-flip", dest="flip", action="store_false", help="no horizontal flips (for digits, text, ...)")
        add("--limit", type=_positive, help="train on only this many images (a quick check)")


def _model_flags(cmd) -> None:
    cmd.add_argument("--arch", default="resnet34", help="architecture in fastbase.vision.models, or module:function "
                     "(default: %(default)s)")
    cmd.add_argument("--pretrained", action=argparse.BooleanOptionalAction, default=True,
                     help="start from ImageNet weights (default: yes; they come from the torch hub cache)")
    cmd.add_argument("--lr-find-iters", type=_positive, default=100, help="lr_find iterations (default: %(default)s)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fastbase", description="fastbase: image-classification baselines "
                                     "in the style of fastai v1, from the shell.")
    parser.add_argument("--version", action="version", version=f"fastbase {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    demo = _command(commands, "demo", _cmd_demo, "train resnet18 on the embedded digits (no network) and export it")
    demo.description = run_demo.__doc__
    demo.add_argument("--out", default="fastbase_demo", help="folder for the report (default: %(default)s)")
    demo.add_argument("--size", type=_positive, default=32, help="image size in pixels (default: %(default)s)")
    demo.add_argument("--bs", type=_positive, default=64, help="batch size (default: %(default)s)")
    demo.add_argument("--lr-find-iters", type=_positive, default=50, help="lr_find iterations (default: %(default)s)")
    demo.add_argument("--seed", type=int, default=42, help="random seed (default: %(default)s)")
    demo.add_argument("--limit", type=_positive, default=None, help="use only this many training images (quick check)")
    demo.add_argument("--workers", type=int, default=None, help="data-loading processes (default: automatic)")

    train = _command(commands, "train", _cmd_train, "train a classifier on an image folder and write a report")
    train.description = ("Lesson 1 on DATA: cnn_learner, lr_find, fit_one_cycle (body frozen when pretrained), "
                         "unfreeze, fit_one_cycle with slice(lr/100, lr/10), export, interpretation; writes "
                         "export.pkl, the PNGs and report.html to --out. DATA's layout is detected: train/ and "
                         "valid/ (or val/) folders of class folders, or class folders alone; else --label-re or --csv.")
    _data_flags(train, 224)
    _model_flags(train)
    train.add_argument("--lr", type=float, default=None, help="max learning rate (default: from lr_find)")
    train.add_argument("--out", default="fastbase_train", help="folder for the report (default: %(default)s)")
    for cmd in (demo, train):
        cmd.add_argument("--epochs", type=_positive, default=4, help="epochs of the first stage (default: %(default)s)")
        cmd.add_argument("--unfreeze-epochs", type=int, default=2, help="epochs after unfreeze; 0 skips that stage "
                         "(default: %(default)s)")

    lr_find = _command(commands, "lr-find", _cmd_lr_find, "plot loss against learning rate; print the suggestions")
    lr_find.description = "lr_find on DATA with a new cnn_learner: writes lr_find.png and prints valley, steep, minimum."
    _data_flags(lr_find, 224)
    _model_flags(lr_find)
    lr_find.add_argument("--out", default="fastbase_lr_find", help="folder for lr_find.png (default: %(default)s)")

    interpret = _command(commands, "interpret", _cmd_interpret, "the worst predictions and confusions of an exported "
                         "model on DATA's validation images")
    interpret.description = ("Load MODEL (export.pkl), build DATA's validation set as training did (same flags), "
                             "and write top_losses.png, confusion_matrix.png and report.html.")
    interpret.add_argument("model", metavar="MODEL", help="export.pkl, or the folder holding it")
    _data_flags(interpret, None, training=False)
    interpret.add_argument("--out", default="fastbase_interpret", help="folder for the report (default: %(default)s)")

    predict = _command(commands, "predict", _cmd_predict, "class and probability for each image")
    predict.description = ("Class and probability for each image with an exported model; a file that is not a "
                           "readable image gets an error line on stderr and exit code 2, the others are predicted.")
    predict.add_argument("model", metavar="MODEL", help="export.pkl, or the folder holding it")
    predict.add_argument("images", metavar="IMAGE", nargs="+", help="image files or folders of images")
    predict.add_argument("--bs", type=_positive, default=64, help="images per batch (default: %(default)s)")
    add_compare_parser(commands)  # `fastbase compare` lives with compare_archs
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the `fastbase` command line; returns the exit code (0 ok, 1 failure while running, 2 bad
    command line or data, 130 Ctrl-C)."""
    from .learner import TrainingInterrupted

    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    args.results = sys.stdout
    own = getattr(args, "own_stdout", False)  # stdout is for the result: progress output goes to stderr
    try:
        with contextlib.redirect_stdout(sys.stderr) if own else contextlib.nullcontext(), warnings.catch_warnings():
            warnings.simplefilter("error", TrainingInterrupted)  # Ctrl-C in a fit stops the command, not only the fit
            return args.func(args)
    except (KeyboardInterrupt, TrainingInterrupted):
        code, message = EXIT_INTERRUPTED, "interrupted (Ctrl-C)"
    except FastbaseError as e:
        code, message = (EXIT_USAGE if _is_data_error(e) else EXIT_ERROR), str(e)
    except Exception as e:  # noqa: BLE001 -- a failure while running: exit 1, with the traceback for a bug report
        traceback.print_exc()
        code, message = EXIT_ERROR, f"{type(e).__name__}: {e}"
    print(f"fastbase {args.command}: error: {message}", file=sys.stderr)
    if own and args.json:
        print(json.dumps({"error": message, "exit_code": code}), file=args.results)
    return code


def _is_data_error(e: FastbaseError) -> bool:
    """Errors about what the user gave (paths, data, labels, archives, model files): exit code 2."""
    from .data import DataError
    from .datasets import ArchiveError, CatalogueError
    from .learner import UnsafeFileError

    return isinstance(e, (UsageError, DataError, CatalogueError, ArchiveError, UnsafeFileError))


if __name__ == "__main__":
    sys.exit(main())
