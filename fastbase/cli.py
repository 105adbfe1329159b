"""Layer 8: the `fastbase` command line: the same calls as the notebooks, from the shell.

`fastbase demo` runs the lesson-1 workflow on the embedded digits with no network: untar_data,
ImageDataBunch.from_folder, cnn_learner(resnet18), lr_find and its plot, fit_one_cycle, unfreeze,
a second fit_one_cycle with `slice` learning rates, then the export and the plots in a folder.
"""
from __future__ import annotations

import argparse
import json
import sys
import time

from . import __version__
from .core import FastbaseError, Path, set_seed

EXIT_OK, EXIT_ERROR, EXIT_USAGE = 0, 1, 2


def _save(fig, path: Path) -> None:
    fig.savefig(path, dpi=90, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)


def run_demo(out: Path, size: int = 32, bs: int = 64, epochs: int = 4, unfreeze_epochs: int = 2,
             lr_find_iters: int = 50, seed: int = 42, limit: int | None = None) -> dict:
    """The lesson-1 workflow on the embedded digits; writes export.pkl and PNG plots to `out` and
    returns a summary (accuracy, chosen learning rate, seconds per stage, files)."""
    import torchvision

    from .data import imagenet_stats
    from .datasets import URLs, untar_data
    from .metrics import accuracy, error_rate
    from .vision import models
    from .vision.data import ImageDataBunch
    from .vision.learner import cnn_learner
    from .vision.models import arch_meta, weights_file

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    set_seed(seed)
    times, start = {}, time.perf_counter()
    path = untar_data(URLs.DIGITS)
    data = ImageDataBunch.from_folder(path, ds_tfms=_digit_transforms(), size=size, bs=bs, seed=seed)
    if limit:  # a reduced run for tests: fewer training items, same workflow
        data = _limited(data, limit, seed)
    data.normalize(imagenet_stats)
    weights = torchvision.models.get_model_weights("resnet18")[arch_meta(models.resnet18).weights]
    pretrained = weights_file(weights).is_file()
    learn = cnn_learner(data, models.resnet18, pretrained=pretrained, metrics=[accuracy, error_rate], path=out)
    times["data_and_model"] = time.perf_counter() - start

    start = time.perf_counter()
    suggestions = learn.lr_find(num_it=lr_find_iters)
    n_points = len(learn.recorder.lrs)
    _save(learn.recorder.plot(skip_start=min(10, n_points // 5), skip_end=min(5, n_points // 10), suggestion=True),
          out / "lr_find.png")
    times["lr_find"] = time.perf_counter() - start
    # The valley suggestion, kept inside the range where one-cycle training of this model is stable.
    lr = float(min(max(suggestions.valley, 1e-3), 1e-2))

    start = time.perf_counter()
    learn.fit_one_cycle(epochs, lr)
    times["fit_one_cycle"] = time.perf_counter() - start
    learn.unfreeze()
    start = time.perf_counter()
    learn.fit_one_cycle(unfreeze_epochs, max_lr=slice(lr / 100, lr / 10))
    times["fit_unfrozen"] = time.perf_counter() - start

    _save(learn.recorder.plot_losses(), out / "losses.png")
    _save(learn.recorder.plot_lr(), out / "lr.png")
    _save(learn.recorder.plot_metrics(), out / "metrics.png")
    export = learn.export(out / "export.pkl")
    valid_loss, acc, err = learn.validate()
    return {"accuracy": acc, "error_rate": err, "valid_loss": valid_loss, "lr": lr, "pretrained": pretrained,
            "lr_find": suggestions._asdict(), "seconds": times, "out": str(out),
            "files": sorted(p.name for p in out.iterdir() if p.is_file()), "export": str(export)}


def _digit_transforms():
    from .vision.transforms import get_transforms

    # Digits are not mirror-symmetric: no flips; the default small rotations, zooms and warps.
    return get_transforms(do_flip=False)


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


def _cmd_demo(args) -> int:
    summary = run_demo(Path(args.out), size=args.size, bs=args.bs, epochs=args.epochs,
                       unfreeze_epochs=args.unfreeze_epochs, lr_find_iters=args.lr_find_iters, seed=args.seed,
                       limit=args.limit)
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        secs = summary["seconds"]
        print(f"\nvalidation accuracy {summary['accuracy']:.4f} (error rate {summary['error_rate']:.4f}); "
              f"lr {summary['lr']:.2e} from lr_find's valley; "
              f"{'pretrained' if summary['pretrained'] else 'random'} resnet18 body")
        print("seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in secs.items()))
        print(f"wrote {', '.join(summary['files'])} to {summary['out']}")
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fastbase", description="fastbase: image-classification baselines "
                                     "in the style of fastai v1, from the shell.")
    parser.add_argument("--version", action="version", version=f"fastbase {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    demo = commands.add_parser("demo", help="train resnet18 on the embedded digits (no network) and export it",
                               description=run_demo.__doc__)
    demo.add_argument("--out", default="fastbase_demo", help="folder for export.pkl and the plots (default: %(default)s)")
    demo.add_argument("--size", type=int, default=32, help="image size in pixels (default: %(default)s)")
    demo.add_argument("--bs", type=int, default=64, help="batch size (default: %(default)s)")
    demo.add_argument("--epochs", type=int, default=4, help="epochs of the first fit_one_cycle (default: %(default)s)")
    demo.add_argument("--unfreeze-epochs", type=int, default=2, help="epochs after unfreeze (default: %(default)s)")
    demo.add_argument("--lr-find-iters", type=int, default=50, help="lr_find iterations (default: %(default)s)")
    demo.add_argument("--seed", type=int, default=42, help="random seed (default: %(default)s)")
    demo.add_argument("--limit", type=int, default=None, help="use only this many training images (quick check)")
    demo.add_argument("--json", action="store_true", help="print the summary as JSON")
    demo.set_defaults(func=_cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    try:
        return args.func(args)
    except FastbaseError as e:
        print(f"fastbase {args.command}: error: {e}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
