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
import traceback
import warnings

from . import __version__
from .cli_commands import (
    EXIT_ERROR,
    EXIT_USAGE,
    cmd_compare,
    cmd_demo,
    cmd_interpret,
    cmd_lr_find,
    cmd_predict,
    cmd_serve,
    cmd_train,
)
from .core import FastbaseError
from .workflow import UsageError, run_demo

EXIT_INTERRUPTED = 130  # 128 + SIGINT: Ctrl-C
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE: what the shell reports for a command whose reader closed the pipe


# --- the parser ---------------------------------------------------------------------------------------------
_EXAMPLES = {
    "demo": ["fastbase demo", "fastbase demo --out /tmp/demo --epochs 1 --unfreeze-epochs 1 --json"],
    "train": ["fastbase train digits --arch resnet18 --size 32 --no-flip --out digits_run",
              "fastbase train ~/data/hymenoptera --epochs 3 --out bees    # train/ and val/ folders",
              "fastbase train pets --label-re '/([^/]+)_\\d+.jpg$' --out pets_run",
              "fastbase train mnist_sample --csv labels.csv --lr 3e-3 --json > summary.json",
              "fastbase train ~/data/bears --csv cleaned.csv --skip-bad --out bears_clean",
              "fastbase train coco_tiny --task detection --size 128 --bs 16 --out coco_run    # train.json + train/"],
    "lr-find": ["fastbase lr-find digits --arch resnet18 --size 32 --out lr", "fastbase lr-find ~/data/flowers --json"],
    "interpret": ["fastbase interpret digits_run/export.pkl digits --out digits_interp"],
    "compare": ["fastbase compare ~/data/hymenoptera --archs resnet18,mobilenet_v2 --modes head,full --out cmp",
                "fastbase compare digits --archs resnet18 --modes scratch --size 32 --epochs 1 --json"],
    "predict": ["fastbase predict digits_run/export.pkl img1.png img2.png",
                "fastbase predict digits_run ~/scans/ --json    # a folder: every image in it"],
    "serve": ["fastbase serve digits_run/export.pkl --port 8000    # then open http://127.0.0.1:8000/",
              "curl -F file=@photo.jpg http://127.0.0.1:8000/predict",
              "fastbase serve run1 --host 0.0.0.0 --workers 2 --max-batch 16 --max-wait-ms 5"],
}


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {text}")
    return value


def _command(commands, name: str, func, help: str,
             json_help: str = "print one JSON document on stdout (nothing else goes there)"):
    cmd = commands.add_parser(name, help=help, description=func.__doc__ or help,
                              epilog="examples:\n" + "\n".join(f"  {e}" for e in _EXAMPLES[name]),
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    cmd.set_defaults(func=func, own_stdout=True, command_parser=cmd)
    cmd.add_argument("--json", action="store_true", help=json_help)
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
    add("--csv", metavar="FILE",
        help="labels from a CSV file in DATA: a file name (relative to DATA) and a label per row")
    add("--seed", type=int, default=42,
        help="random seed for the split, augmentation and weights (default: %(default)s)")
    add("--workers", type=int, default=None, help="data-loading processes (default: automatic)")
    _skip_bad_flag(cmd)
    if training:
        add("--no-flip", dest="flip", action="store_false", help="no horizontal flips (for digits, text, ...)")
        add("--limit", type=_positive, help="train on only this many images (a quick check)")


def _skip_bad_flag(cmd) -> None:
    cmd.add_argument("--skip-bad", action="store_true", help="leave unreadable or missing image files out, with a "
                     "warning naming them (default: stop and name them)")


def _model_flags(cmd) -> None:
    cmd.add_argument("--arch", default="resnet34", help="architecture in fastbase.vision.models, timm:NAME (needs "
                     "timm), or module:function (default: %(default)s)")
    cmd.add_argument("--pretrained", action=argparse.BooleanOptionalAction, default=True,
                     help="start from ImageNet weights (default: yes; they come from the torch hub cache)")
    cmd.add_argument("--lr-find-iters", type=_positive, default=100, help="lr_find iterations (default: %(default)s)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fastbase", description="fastbase: image-classification baselines "
                                     "in the style of fastai v1, from the shell.")
    parser.add_argument("--version", action="version", version=f"fastbase {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    demo = _command(commands, "demo", cmd_demo, "train resnet18 on the embedded digits (no network) and export it")
    demo.description = run_demo.__doc__
    demo.add_argument("--out", default="fastbase_demo", help="folder for the report (default: %(default)s)")
    demo.add_argument("--size", type=_positive, default=32, help="image size in pixels (default: %(default)s)")
    demo.add_argument("--bs", type=_positive, default=64, help="batch size (default: %(default)s)")
    demo.add_argument("--lr-find-iters", type=_positive, default=50, help="lr_find iterations (default: %(default)s)")
    demo.add_argument("--seed", type=int, default=42, help="random seed (default: %(default)s)")
    demo.add_argument("--limit", type=_positive, default=None, help="use only this many training images (quick check)")
    demo.add_argument("--workers", type=int, default=None, help="data-loading processes (default: automatic)")

    train = _command(commands, "train", cmd_train, "train a classifier on an image folder and write a report")
    train.description = ("Lesson 1 on DATA: cnn_learner, lr_find, fit_one_cycle (body frozen when pretrained), "
                         "unfreeze, fit_one_cycle with slice(lr/100, lr/10), export, interpretation; writes "
                         "export.pkl, the PNGs and report.html to --out. DATA's layout is detected: train/ and "
                         "valid/ (or val/) folders of class folders, or class folders alone; else --label-re or --csv.")
    _data_flags(train, 224)
    _model_flags(train)
    train.add_argument("--lr", type=float, default=None, help="max learning rate (default: from lr_find)")
    train.add_argument("--no-cache", action="store_true", help="compute the frozen body's features at every step "
                       "instead of caching them (docs/transfer-learning.md)")
    train.add_argument("--keep-best", action="store_true", help="keep the frozen stage's weights when the unfrozen "
                       "stage did not improve validation accuracy (the result says which were kept)")
    train.add_argument("--out", default="fastbase_train", help="folder for the report (default: %(default)s)")
    train.add_argument("--task", choices=("classification", "detection"), default="classification",
                       help="classification (default), or detection: boxes from a COCO-format JSON in DATA "
                       "(train.json beside a train/ folder of images, as COCO_TINY), a detector trained, exported, "
                       "its per-class AP in ap_table.csv")
    train.add_argument("--coco", metavar="FILE", help="--task detection: the COCO JSON file in DATA (default: the "
                       "only *.json there)")
    for cmd in (demo, train):
        cmd.add_argument("--epochs", type=_positive, default=4, help="epochs of the first stage (default: %(default)s)")
        cmd.add_argument("--unfreeze-epochs", type=int, default=2, help="epochs after unfreeze; 0 skips that stage "
                         "(default: %(default)s)")

    lr_find = _command(commands, "lr-find", cmd_lr_find, "plot loss against learning rate; print the suggestions")
    lr_find.description = ("lr_find on DATA with a new cnn_learner: writes lr_find.png and prints valley, steep, "
                           "minimum.")
    _data_flags(lr_find, 224)
    _model_flags(lr_find)
    lr_find.add_argument("--out", default="fastbase_lr_find", help="folder for lr_find.png (default: %(default)s)")

    interpret = _command(commands, "interpret", cmd_interpret, "the worst predictions and confusions of an exported "
                         "model on DATA's validation images")
    interpret.description = ("Load MODEL (export.pkl), build DATA's validation set as training did (same flags), "
                             "and write top_losses.png, confusion_matrix.png and report.html.")
    interpret.add_argument("model", metavar="MODEL", help="export.pkl, or the folder holding it")
    _data_flags(interpret, None, training=False)
    interpret.add_argument("--out", default="fastbase_interpret", help="folder for the report (default: %(default)s)")

    predict = _command(commands, "predict", cmd_predict, "class and probability for each image")
    predict.description = ("Class and probability for each image with an exported model; a file that is not a "
                           "readable image gets an error line on stderr and exit code 2, the others are predicted.")
    predict.add_argument("model", metavar="MODEL", help="export.pkl, or the folder holding it")
    predict.add_argument("images", metavar="IMAGE", nargs="+", help="image files or folders of images")
    predict.add_argument("--bs", type=_positive, default=64, help="images per batch (default: %(default)s)")
    from .serve_config import add_serve_flags

    add_serve_flags(_command(commands, "serve", cmd_serve, "serve an exported classifier over HTTP (a web page "
                             "and POST /predict)", json_help="once the export is accepted, print one JSON line on "
                             "stdout: the address and what GET /info answers (an error at start: {error, exit_code})"))
    compare = _command(commands, "compare", cmd_compare, "compare architectures and retraining depths on an "
                       "image folder")
    compare.add_argument("data", metavar="DATA", help="image folder with train/<class>/ and valid/ (or val/) "
                         "<class>/ folders, an archive, a URL or a catalogue name")
    compare.add_argument("--archs", default="resnet18,mobilenet_v2,squeezenet1_1",
                         help="comma-separated architectures (names in fastbase.vision.models, timm:NAME "
                         "with timm installed, or module:function)")
    compare.add_argument("--modes", default="head,full", help="comma-separated modes: head, full, scratch "
                         "(default: %(default)s)")
    compare.add_argument("--scratch-only", default="", help="comma-separated archs without pretrained weights here: "
                         "trained once from scratch instead of in each mode")
    compare.add_argument("--epochs", type=_positive, default=2, help="fit_one_cycle epochs per pair "
                         "(default: %(default)s)")
    compare.add_argument("--size", type=_positive, default=128, help="image size in pixels (default: %(default)s)")
    compare.add_argument("--bs", type=_positive, default=32, help="batch size (default: %(default)s)")
    compare.add_argument("--lr", type=float, default=None,
                         help="max learning rate (default: lr_find's valley per pair)")
    compare.add_argument("--lr-find-iters", type=_positive, default=50,
                         help="lr_find iterations (default: %(default)s)")
    compare.add_argument("--train", default="train", help="training folder name (default: %(default)s)")
    compare.add_argument("--valid", default=None, help="validation folder name (default: valid, else val, else a "
                         "random 20%% of the training images)")
    compare.add_argument("--workers", type=int, default=None, help="data-loading processes (default: automatic)")
    _skip_bad_flag(compare)
    compare.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    compare.add_argument("--out", default="fastbase_compare", help="output folder (default: %(default)s)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the `fastbase` command line; returns the exit code (0 ok, 1 failure while running, 2 bad
    command line or data, 130 Ctrl-C)."""
    from .loop import TrainingInterrupted

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
    except BrokenPipeError:
        # The reader of stdout went away (`fastbase predict DIR --json | head`): stop quietly, as a
        # command killed by SIGPIPE would, and keep Python from failing again when it flushes stdout.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    except FastbaseError as e:
        code, message = (EXIT_USAGE if _is_data_error(e) else EXIT_ERROR), _message(e, args.command_parser)
    except Exception as e:  # noqa: BLE001 -- a failure while running: exit 1, with the traceback for a bug report
        traceback.print_exc()
        code, message = EXIT_ERROR, f"{type(e).__name__}: {e}"
    print(f"fastbase {args.command}: error: {message}", file=sys.stderr)
    if own and args.json:
        print(json.dumps({"error": message, "exit_code": code}), file=args.results)
    return code


def _message(e: FastbaseError, command: argparse.ArgumentParser) -> str:
    """`e`'s message with the settings it suggests spelt as `command`'s flags (`skip_bad=True` becomes
    `--skip-bad`); a setting without a flag keeps its Python spelling."""
    def flag(name, value):
        action = next((a for a in command._actions if a.dest == name and a.option_strings), None)
        if action is None:
            return None
        if action.nargs == 0:  # an on/off flag: the spelling that sets `value`, if there is one
            return action.option_strings[0] if action.const == value else None
        return f"{action.option_strings[0]} {value}"

    return e.message_for(flag) if hasattr(e, "message_for") else str(e)


def _is_data_error(e: FastbaseError) -> bool:
    """Errors about what the user gave (paths, data, labels, archives, model files): exit code 2."""
    from .callbacks.checkpoint import CheckpointError
    from .data import DataError
    from .datasets import ArchiveError, CatalogueError
    from .export import UnsafeFileError
    from .file_checks import DamagedFileError

    return isinstance(e, (UsageError, DataError, CatalogueError, ArchiveError, UnsafeFileError, DamagedFileError,
                          CheckpointError))


if __name__ == "__main__":
    sys.exit(main())
