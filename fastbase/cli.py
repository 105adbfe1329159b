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
from .core import FastbaseError, Path, set_seed
from .workflow import (
    UsageError,
    describe_data,
    find_data,
    find_lr,
    load_data,
    make_learner,
    predict_files,
    run_demo,
    run_train,
)

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE: what the shell reports for a command whose reader closed the pipe


def _data_options(args) -> dict:
    names = ("size", "bs", "valid_pct", "label_re", "csv", "seed", "workers", "flip", "limit", "skip_bad")
    return {name: getattr(args, name) for name in names if hasattr(args, name)}


# --- the commands -----------------------------------------------------------------------------------------
def _settings(args) -> dict:
    skip = {"func", "own_stdout", "results", "json", "command", "command_parser"}
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
    if s.get("second_stage"):
        lines.append(s["second_stage"]["message"])
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
                        {"data": time.perf_counter() - start}, feature_cache=not args.no_cache,
                        keep_best=args.keep_best)
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


def _cmd_compare(args) -> int:
    """Train each architecture in each mode on DATA with the same budget and write compare.csv,
    compare.md and compare.png to --out; exit code 1 when every pair failed."""
    from .compare import (
        MODES_HELP,
        compare_archs,
        markdown_table,
        save_compare,
        table_records,
    )
    from .vision.data import ImageDataBunch
    from .vision.transforms import get_transforms

    path, split = find_data(args.data), lambda text: [t.strip() for t in text.split(",") if t.strip()]
    valid = args.valid or next((v for v in ("valid", "val") if (path / v).is_dir()), None)
    data = ImageDataBunch.from_folder(path, train=args.train, valid=valid or "valid",
                                      valid_pct=None if valid else 0.2, seed=args.seed, ds_tfms=get_transforms(),
                                      size=args.size, bs=args.bs, num_workers=args.workers, skip_bad=args.skip_bad)
    table = compare_archs(data, split(args.archs), split(args.modes), epochs=args.epochs, lr=args.lr,
                          scratch_only=split(args.scratch_only), seed=args.seed, lr_find_iters=args.lr_find_iters)
    files = save_compare(table, args.out)
    rows = table_records(table)
    memory = " Memory: peak added by each pair (CUDA: tensors; CPU: the process's resident memory)."
    lines = ["", markdown_table(table), MODES_HELP + memory, f"wrote {', '.join(str(f) for f in files)}"]
    code = EXIT_OK if any(not r.get("error") for r in rows) else EXIT_ERROR
    return _emit(args, {"rows": rows, "files": [str(f) for f in files]}, lines, code)


def _cmd_serve(args) -> int:
    """Serve an exported classifier over HTTP: POST /predict (an image upload or raw image bytes) answers
    {label, probability, probabilities}; GET / is a page to drop an image on; GET /health, GET /info.
    Concurrent requests are batched (--max-batch, --max-wait-ms). Needs pip install 'fastbase[serve]'."""
    from .serve import config_from_args, serve

    def announce(info: dict) -> None:  # --json: one line on stdout once the export is accepted
        print(json.dumps(info), file=args.results, flush=True)

    serve(config_from_args(args), announce if args.json else None)
    return EXIT_OK


# --- the parser -----------------------------------------------------------------------------------------------
_EXAMPLES = {
    "demo": ["fastbase demo", "fastbase demo --out /tmp/demo --epochs 1 --unfreeze-epochs 1 --json"],
    "train": ["fastbase train digits --arch resnet18 --size 32 --no-flip --out digits_run",
              "fastbase train ~/data/hymenoptera --epochs 3 --out bees    # train/ and val/ folders",
              "fastbase train pets --label-re '/([^/]+)_\\d+.jpg$' --out pets_run",
              "fastbase train mnist_sample --csv labels.csv --lr 3e-3 --json > summary.json",
              "fastbase train ~/data/bears --csv cleaned.csv --skip-bad --out bears_clean"],
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
    add("--csv", metavar="FILE", help="labels from a CSV file in DATA: a file name (relative to DATA) and a label per row")
    add("--seed", type=int, default=42, help="random seed for the split, augmentation and weights (default: %(default)s)")
    add("--workers", type=int, default=None, help="data-loading processes (default: automatic)")
    _skip_bad_flag(cmd)
    if training:
        add("--no-flip", dest="flip", action="store_false", help="no horizontal flips (for digits, text, ...)")
        add("--limit", type=_positive, help="train on only this many images (a quick check)")


def _skip_bad_flag(cmd) -> None:
    cmd.add_argument("--skip-bad", action="store_true", help="leave unreadable or missing image files out, with a "
                     "warning naming them (default: stop and name them)")


def _model_flags(cmd) -> None:
    cmd.add_argument("--arch", default="resnet34", help="architecture in fastbase.vision.models, timm:NAME (needs timm), or "
                     "module:function (default: %(default)s)")
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
    train.add_argument("--no-cache", action="store_true", help="compute the frozen body's features at every step "
                       "instead of caching them (docs/transfer-learning.md)")
    train.add_argument("--keep-best", action="store_true", help="keep the frozen stage's weights when the unfrozen "
                       "stage did not improve validation accuracy (the result says which were kept)")
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
    from .serve import add_serve_flags

    add_serve_flags(_command(commands, "serve", _cmd_serve, "serve an exported classifier over HTTP (a web page "
                             "and POST /predict)", json_help="once the export is accepted, print one JSON line on "
                             "stdout: the address and what GET /info answers (an error at start: {error, exit_code})"))
    compare = _command(commands, "compare", _cmd_compare, "compare architectures and retraining depths on an "
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
    compare.add_argument("--lr", type=float, default=None, help="max learning rate (default: lr_find's valley per pair)")
    compare.add_argument("--lr-find-iters", type=_positive, default=50, help="lr_find iterations (default: %(default)s)")
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
    from .data import DataError
    from .datasets import ArchiveError, CatalogueError
    from .export import UnsafeFileError

    return isinstance(e, (UsageError, DataError, CatalogueError, ArchiveError, UnsafeFileError))


if __name__ == "__main__":
    sys.exit(main())
