"""Layer 8: `fastbase train DATA --task detection`: object detection from the shell on a folder of
images with COCO-format annotations (fastai's COCO_TINY layout: `train.json` beside a `train/`
folder of the images it names). The notebook's steps: `get_annotations`, the `ObjectItemList`
chain, `detection_learner`, `lr_find`, `fit_one_cycle` (body frozen when pretrained), unfreeze and
`fit_one_cycle` with `slice(lr/100, lr/10)`, `export`, then the per-class AP table (`ap_table.csv`)
and the worst images (`worst.png`) from `ObjectDetectionInterpretation`.
"""
from __future__ import annotations

import time

from .core import FastbaseError, Path
from .workflow import LR_RANGE, UsageError

__all__ = ["coco_files", "detection_lines", "load_detection_data", "run_train_detection"]


def coco_files(path: Path, coco: str | None = None) -> tuple[Path, Path]:
    """`(annotations JSON, image folder)` of a COCO-format set in `path`: `coco` (a file in `path`, or
    a path), else the only `*.json` in `path`. The images are in the folder named like the file
    (`train.json` -> `train/`) when there is one, else beside it."""
    if coco is not None:
        ann = Path(coco) if Path(coco).is_absolute() else path / coco
        if not ann.is_file():
            raise UsageError(f"--coco {coco}: no such file in {path}.")
    else:
        found = sorted(p for p in path.glob("*.json") if p.is_file())
        if len(found) != 1:
            what = "none" if not found else ", ".join(p.name for p in found)
            raise UsageError(f"--task detection needs one COCO-format JSON file in {path} (found {what}); name it "
                             "with --coco FILE.")
        ann = found[0]
    folder = ann.parent / ann.stem
    return ann, folder if folder.is_dir() else ann.parent


def load_detection_data(path: Path, coco: str | None = None, size: int = 224, bs: int = 64,
                        valid_pct: float = 0.2, seed: int = 42, workers: int | None = None, flip: bool = True,
                        limit: int | None = None):
    """The `ObjectDataBunch` of the COCO-format set in `path` (`coco_files`), as fastai v1's
    documentation builds it: a random `valid_pct` split, `get_transforms` with `tfm_y=True`, images
    resized to `size`. `limit` keeps that many images. An annotation naming a missing image file is
    a UsageError naming it."""
    from .vision.detection import ObjectItemList, get_annotations
    from .vision.transforms import get_transforms

    ann, folder = coco_files(path, coco)
    images, lbl_bbox = get_annotations(ann)
    missing = [n for n in images if not (folder / n).is_file()]
    if missing:
        raise UsageError(f"{ann} names {len(missing)} image file(s) missing from {folder}, e.g. {missing[0]}.")
    img2bbox = dict(zip(images, lbl_bbox))
    files = [folder / n for n in images][:limit]
    return (ObjectItemList(files, path=path).split_by_rand_pct(valid_pct, seed=seed)
            .label_from_func(lambda o: img2bbox[o.name])
            .transform(get_transforms(do_flip=flip), tfm_y=True, size=size)
            .databunch(bs=bs, num_workers=workers, seed=seed))


def run_train_detection(data, out, arch: str = "resnet34", pretrained: bool = True, epochs: int = 4,
                        unfreeze_epochs: int = 2, lr: float | None = None, lr_find_iters: int = 100,
                        settings=None) -> dict:
    """Train a detector on `data` and write export.pkl, ap_table.csv and worst.png to `out`; returns the
    summary `--json` prints (mAP@0.5, mAP@0.5:0.95, the AP table, lr, seconds, files)."""
    from .vision.detection import ObjectDetectionInterpretation, detection_learner
    from .vision.timm_models import resolve_arch

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    try:
        arch_fn = resolve_arch(arch)
    except FastbaseError as e:
        raise UsageError(str(e)) from e
    times, start = {}, time.perf_counter()
    learn = detection_learner(data, arch_fn, pretrained=pretrained, path=out, silent=True)
    if lr is None:
        valley = learn.lr_find(num_it=lr_find_iters).valley
        lr, lr_source = float(min(max(valley, LR_RANGE[0]), LR_RANGE[1])), "lr_find's valley"
        times["lr_find"] = time.perf_counter() - start
    else:
        lr, lr_source = float(lr), "given with --lr"
    start = time.perf_counter()
    learn.fit_one_cycle(epochs, lr)
    if unfreeze_epochs:
        learn.unfreeze()
        learn.fit_one_cycle(unfreeze_epochs, slice(lr / 100, lr / 10))
    times["fit"] = time.perf_counter() - start
    start = time.perf_counter()
    export = learn.export(out / "export.pkl")
    valid_loss, map50, map_ = learn.validate()
    interp = ObjectDetectionInterpretation.from_learner(learn)
    table = interp.ap_table()
    table.to_csv(out / "ap_table.csv", index=False)
    interp.plot_worst(k=6, save_to=out / "worst.png", return_fig=False)
    times["export_and_plots"] = time.perf_counter() - start
    return {"command": "train", "task": "detection", "map50": float(map50), "map": float(map_),
            "valid_loss": float(valid_loss), "lr": lr, "lr_source": lr_source, "arch": arch,
            "pretrained": pretrained, "classes": list(data.classes), "ap_table": table.to_dict("records"),
            "seconds": {k: round(v, 2) for k, v in times.items()}, "settings": settings or {}, "out": str(out),
            "export": str(export), "files": sorted(p.name for p in out.iterdir() if p.is_file())}


def detection_lines(s: dict) -> list[str]:
    """The text lines `fastbase train --task detection` prints without --json."""
    return [f"validation mAP@0.5 {s['map50']:.4f}, mAP@0.5:0.95 {s['map']:.4f} (loss {s['valid_loss']:.4f})",
            f"lr {s['lr']:.2e} ({s['lr_source']}); {'pretrained' if s['pretrained'] else 'random'} {s['arch']} body; "
            "seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in s["seconds"].items()),
            f"wrote {', '.join(s['files'])} to {s['out']}"]
