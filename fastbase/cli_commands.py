"""Layer 8: the commands of the `fastbase` command line (`fastbase.cli` parses the flags and runs
one of them): each runs a step of the notebook workflow (`fastbase.workflow`) and prints its result
on stdout, as text lines or, with `--json`, one JSON document; they return the exit code.
"""
from __future__ import annotations

import json
import sys
import time

from .core import Path, set_seed
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

__all__ = ["EXIT_ERROR", "EXIT_OK", "EXIT_USAGE", "cmd_compare", "cmd_demo", "cmd_interpret", "cmd_lr_find",
           "cmd_predict", "cmd_serve", "cmd_train"]

EXIT_OK = 0
EXIT_ERROR = 1  # a failure while running
EXIT_USAGE = 2  # a bad command line, or data that cannot be used


def _comma_list(text: str) -> list[str]:
    """'a, b,,c' -> ['a', 'b', 'c']: a flag's comma-separated values."""
    return [t.strip() for t in text.split(",") if t.strip()]


def _data_options(args) -> dict:
    names = ("size", "bs", "valid_pct", "label_re", "csv", "seed", "workers", "flip", "limit", "skip_bad")
    return {name: getattr(args, name) for name in names if hasattr(args, name)}


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


def cmd_demo(args) -> int:
    summary = run_demo(Path(args.out), size=args.size, bs=args.bs, epochs=args.epochs,
                       unfreeze_epochs=args.unfreeze_epochs, lr_find_iters=args.lr_find_iters, seed=args.seed,
                       limit=args.limit, workers=args.workers)
    return _emit(args, summary, _result_lines(summary))


def cmd_train(args) -> int:
    path = find_data(args.data)
    set_seed(args.seed)
    if args.task == "detection":
        return _train_detection(args, path)
    start = time.perf_counter()
    data, layout = load_data(path, **_data_options(args))
    summary = run_train(data, args.out, args.arch, args.pretrained, args.epochs, args.unfreeze_epochs, args.lr,
                        args.lr_find_iters, "train", _settings(args), describe_data(data, path, layout),
                        {"data": time.perf_counter() - start}, feature_cache=not args.no_cache,
                        keep_best=args.keep_best)
    return _emit(args, summary, _result_lines(summary))


def _train_detection(args, path: Path) -> int:
    from .workflow_detection import detection_lines, load_detection_data, run_train_detection

    data = load_detection_data(path, args.coco, size=args.size, bs=args.bs, valid_pct=args.valid_pct, seed=args.seed,
                               workers=args.workers, flip=args.flip, limit=args.limit)
    summary = run_train_detection(data, args.out, args.arch, args.pretrained, args.epochs, args.unfreeze_epochs,
                                  args.lr, args.lr_find_iters, _settings(args))
    return _emit(args, summary, detection_lines(summary))


def cmd_lr_find(args) -> int:
    path = find_data(args.data)
    out = Path(args.out)
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


def cmd_interpret(args) -> int:
    from .learner import Learner, load_learner
    from .metrics import accuracy, error_rate
    from .report import save_interpretation, write_report

    model = _existing_file(args.model, "model file")
    exported = load_learner(model)
    path = find_data(args.data)
    out = Path(args.out)
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


def cmd_predict(args) -> int:
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


def cmd_compare(args) -> int:
    """Train each architecture in each mode on DATA with the same budget and write compare.csv,
    compare.md and compare.png to --out; exit code 1 when every pair failed."""
    from .vision.compare import (
        MODES_HELP,
        compare_archs,
        markdown_table,
        save_compare,
        table_records,
    )
    from .vision.data import ImageDataBunch
    from .vision.transforms import get_transforms

    path = find_data(args.data)
    valid = args.valid or next((v for v in ("valid", "val") if (path / v).is_dir()), None)
    data = ImageDataBunch.from_folder(path, train=args.train, valid=valid or "valid",
                                      valid_pct=None if valid else 0.2, seed=args.seed, ds_tfms=get_transforms(),
                                      size=args.size, bs=args.bs, num_workers=args.workers, skip_bad=args.skip_bad)
    table = compare_archs(data, _comma_list(args.archs), _comma_list(args.modes), epochs=args.epochs, lr=args.lr,
                          scratch_only=_comma_list(args.scratch_only), seed=args.seed, lr_find_iters=args.lr_find_iters)
    files = save_compare(table, args.out)
    rows = table_records(table)
    memory = " Memory: peak added by each pair (CUDA: tensors; CPU: the process's resident memory)."
    lines = ["", markdown_table(table), MODES_HELP + memory, f"wrote {', '.join(str(f) for f in files)}"]
    code = EXIT_OK if any(not r.get("error") for r in rows) else EXIT_ERROR
    return _emit(args, {"rows": rows, "files": [str(f) for f in files]}, lines, code)


def cmd_serve(args) -> int:
    """Serve an exported classifier over HTTP: POST /predict (an image upload or raw image bytes) answers
    {label, probability, probabilities}; GET / is a page to drop an image on; GET /health, GET /info.
    Concurrent requests are batched (--max-batch, --max-wait-ms). Needs pip install 'fastbase[serve]'."""
    from .serve import config_from_args, serve

    def announce(info: dict) -> None:  # --json: one line on stdout once the export is accepted
        print(json.dumps(info), file=args.results, flush=True)

    serve(config_from_args(args), announce if args.json else None)
    return EXIT_OK
