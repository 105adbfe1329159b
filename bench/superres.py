"""Benchmark: lesson 7's super-resolution on real photos: does the U-Net beat bicubic upsampling?

Data: the photos of `--data` (default `../shared/data/hymenoptera`, train/ and val/ folders), each
centre-cropped to a square and resized to --size px (the targets), and "crappified" to --small px
(bilinear, then a JPEG of quality --quality: the inputs), written to a temporary folder with
`parallel`. The data pipeline resizes each input to the target's size (bilinear), as the lesson's
`transform(..., size=, tfm_y=True)` does, and the U-Net learns from that.

The model: `unet_learner(data, models.<--arch>, pretrained=, blur=True, norm_type=NormType.Weight,
self_attention=True, y_range=(-3., 3.))` with `L1LossFlat` or (`--loss mse`, the loss of
lesson7-superres-gan's generator) `MSELossFlat`, inputs and targets normalised with
`imagenet_stats`, `get_transforms(max_zoom=--max-zoom, max_lighting=--max-lighting)`,
fit_one_cycle(--epochs, --lr), batch size --bs, weight decay --wd. `--arch mobilenet_v2 --pretrained`
puts the ImageNet MobileNetV2 body of `../shared/weights` into a temporary torch hub cache, where
torchvision's weights API finds it.
`--sides fastbase fastai` trains the same U-Net in fastai 2.8 too (`--fastai-python`; DataBlock of
two ImageBlocks, Resize(--size), aug_transforms(max_zoom=), the same body, decoder options, loss,
epochs and learning rate); each side trains in its own child process and saves its predictions.

Columns: PSNR (dB) and SSIM over the validation photos (torchmetrics, images in [0, 1]) of the
inputs upsampled with bicubic and with bilinear interpolation (PIL; bilinear is what the U-Net is
given), and of each side's predictions; then seconds per epoch and the 1-minute load average.

    python bench/superres.py [--data PATH] [--small 48] [--size 96] [--epochs 4] [--bs 16]
        [--lr 3e-3] [--wd 0.01] [--max-zoom 2] [--max-lighting 0.2] [--quality 30] [--seed 0] [--limit N]
        [--arch resnet18] [--pretrained] [--loss l1|mse] [--sides fastbase [fastai]] [--quick]

`--quick` is a smoke test of this script (24 photos, 32 px, one epoch): its figures mean nothing.
Figures and the runs they come from: bench/RESULTS.md.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MOBILENET = ROOT.parent / "shared" / "weights" / "mobilenet_v2_imagenet_body.pth"
FASTAI_PYTHON = "/tmp/fastai-venv/bin/python"
STATS = ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])  # imagenet_stats


class Crappify:
    """hr photo -> (square `size` target, `small` JPEG input) under `dest` (picklable for `parallel`)."""

    def __init__(self, src, dest, size: int, small: int, quality: int):
        self.src, self.dest, self.size, self.small, self.quality = src, dest, size, small, quality

    def __call__(self, fn, i):
        import PIL.Image

        rel = fn.relative_to(self.src).with_suffix(".png")
        hr, lr = self.dest / "hr" / rel, self.dest / "lr" / rel
        hr.parent.mkdir(parents=True, exist_ok=True)
        lr.parent.mkdir(parents=True, exist_ok=True)
        img = PIL.Image.open(fn).convert("RGB")
        side = min(img.size)
        left, top = (img.size[0] - side) // 2, (img.size[1] - side) // 2
        img = img.crop((left, top, left + side, top + side)).resize((self.size, self.size), PIL.Image.BICUBIC)
        img.save(hr)
        tmp = lr.with_suffix(".jpg")
        img.resize((self.small, self.small), PIL.Image.BILINEAR).save(tmp, quality=self.quality)
        PIL.Image.open(tmp).save(lr)
        tmp.unlink()


def scores(pred, target):
    from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

    return (round(float(peak_signal_noise_ratio(pred, target, data_range=1.0)), 2),
            round(float(structural_similarity_index_measure(pred, target, data_range=1.0)), 3))


def hub_cache(dest: Path, cfg: dict) -> None:
    """The ImageNet MobileNetV2 of ../shared/weights under torchvision's file name in a hub cache."""
    import torch

    if cfg["pretrained"] and cfg["arch"] == "mobilenet_v2":
        (dest / "hub" / "checkpoints").mkdir(parents=True, exist_ok=True)
        link = dest / "hub" / "checkpoints" / "mobilenet_v2-b0353104.pth"
        if not link.exists():
            link.symlink_to(MOBILENET)
        torch.hub.set_dir(str(dest / "hub"))


def train_fastbase(cfg: dict, dest: Path) -> tuple[dict, float]:
    from fastbase.vision import (
        ImageImageList,
        L1LossFlat,
        MSELossFlat,
        NormType,
        get_transforms,
        imagenet_stats,
        models,
        set_seed,
        unet_learner,
    )

    set_seed(cfg["seed"])
    data = (ImageImageList.from_folder(dest / "lr").split_by_folder("train", cfg["valid"])
            .label_from_func(lambda x: dest / "hr" / x.relative_to(dest / "lr"))
            .transform(get_transforms(max_zoom=cfg["max_zoom"], max_lighting=cfg["max_lighting"]), size=cfg["size"],
                       tfm_y=True)
            .databunch(bs=cfg["bs"], num_workers=0, seed=cfg["seed"]).normalize(imagenet_stats, do_y=True))
    loss = MSELossFlat() if cfg["loss"] == "mse" else L1LossFlat()
    learn = unet_learner(data, getattr(models, cfg["arch"]), pretrained=cfg["pretrained"], blur=True,
                         norm_type=NormType.Weight, self_attention=True, y_range=(-3., 3.), loss_func=loss,
                         wd=cfg["wd"], silent=True)
    start = time.perf_counter()
    learn.fit_one_cycle(cfg["epochs"], cfg["lr"])
    per_epoch = (time.perf_counter() - start) / cfg["epochs"]
    preds, _ = learn.get_preds()
    preds = data.denorm_y(preds).clamp(0, 1)
    return {str(Path(fn).relative_to(dest / "lr")): p for fn, p in zip(data.valid_ds.items, preds)}, per_epoch


def train_fastai(cfg: dict, dest: Path) -> tuple[dict, float]:
    import torchvision
    from fastai.vision.all import (
        DataBlock,
        FuncSplitter,
        ImageBlock,
        L1LossFlat,
        MSELossFlat,
        Normalize,
        NormType,
        Resize,
        aug_transforms,
        get_image_files,
        resnet18,
        set_seed,
        torch,
        unet_learner,
    )

    set_seed(cfg["seed"])
    norm = Normalize.from_stats(*STATS)
    dls = DataBlock(blocks=(ImageBlock, ImageBlock), get_items=lambda p: get_image_files(p / "lr"),
                    get_y=lambda x: dest / "hr" / x.relative_to(dest / "lr"),
                    splitter=FuncSplitter(lambda x: x.relative_to(dest / "lr").parts[0] == cfg["valid"]),
                    item_tfms=Resize(cfg["size"]),
                    batch_tfms=[*aug_transforms(max_zoom=cfg["max_zoom"], max_lighting=cfg["max_lighting"]), norm]
                    ).dataloaders(dest, bs=cfg["bs"], num_workers=0)
    if cfg["arch"] == "mobilenet_v2":  # torchvision's weights API; the body is `features`, as fastbase cuts it
        def arch(pretrained=False):
            return torchvision.models.mobilenet_v2(weights="IMAGENET1K_V1" if pretrained else None)
        extra = {"cut": lambda m: m.features}
    else:
        arch, extra = {"resnet18": resnet18}[cfg["arch"]], {}
    loss = MSELossFlat() if cfg["loss"] == "mse" else L1LossFlat()
    learn = unet_learner(dls, arch, pretrained=cfg["pretrained"], normalize=False, n_out=3, blur=True,
                         norm_type=NormType.Weight, self_attention=True, y_range=(-3., 3.), loss_func=loss,
                         wd=cfg["wd"], **extra)
    learn.no_bar(), learn.no_logging()
    start = time.perf_counter()
    learn.fit_one_cycle(cfg["epochs"], cfg["lr"])
    per_epoch = (time.perf_counter() - start) / cfg["epochs"]
    preds, _ = learn.get_preds()
    mean, std = torch.tensor(STATS[0])[:, None, None], torch.tensor(STATS[1])[:, None, None]
    preds = (preds * std + mean).clamp(0, 1)
    return {str(Path(fn).relative_to(dest / "lr")): p for fn, p in zip(dls.valid.items, preds)}, per_epoch


def child(side: str, cfg: dict) -> None:
    import torch

    dest = Path(cfg["dest"])
    hub_cache(dest, cfg)
    preds, per_epoch = (train_fastbase if side == "fastbase" else train_fastai)(cfg, dest)
    torch.save({k: v.as_subclass(torch.Tensor).contiguous() for k, v in preds.items()}, dest / f"preds_{side}.pt")
    print("RESULT " + json.dumps({"s_per_epoch": round(per_epoch, 1)}))


def run_side(side: str, cfg: dict, fastai_python: str) -> dict:
    sys.path.insert(0, str(ROOT / "bench"))
    from _child import run_child

    python = sys.executable if side == "fastbase" else fastai_python
    return run_child(python, Path(__file__).resolve(), side, cfg,
                     env={"FASTBASE_NO_BAR": "1", "PYTHONPATH": os.environ.get("PYTHONPATH", str(ROOT))})


def load(fn, size=None, method=None):
    import numpy as np
    import PIL.Image
    import torch

    img = PIL.Image.open(fn).convert("RGB")
    img = img if size is None else img.resize((size, size), method)
    return torch.from_numpy(np.asarray(img, dtype=np.float32) / 255).permute(2, 0, 1)


def main(argv=None) -> dict:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        child(argv[1], json.loads(argv[2]))
        return {}
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "hymenoptera"))
    for name, default in (("small", 48), ("size", 96), ("epochs", 4), ("bs", 16), ("quality", 30), ("seed", 0)):
        parser.add_argument(f"--{name}", type=int, default=default)
    for name, default in (("lr", 3e-3), ("wd", 1e-2), ("max-zoom", 2.), ("max-lighting", 0.2)):
        parser.add_argument(f"--{name}", type=float, default=default)
    parser.add_argument("--limit", type=int, default=None, help="use only the first N photos")
    parser.add_argument("--arch", default="resnet18", help="a name in fastbase.vision.models")
    parser.add_argument("--pretrained", action="store_true", help="ImageNet weights (mobilenet_v2: ../shared/weights)")
    parser.add_argument("--loss", choices=["l1", "mse"], default="l1")
    parser.add_argument("--sides", nargs="+", choices=["fastbase", "fastai"], default=["fastbase"])
    parser.add_argument("--fastai-python", default=FASTAI_PYTHON)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    if args.quick:
        args.small, args.size, args.epochs, args.limit = 16, 32, 1, 24

    import PIL.Image
    import torch

    from fastbase.vision import get_image_files, parallel

    src = Path(args.data)
    files = get_image_files(src)
    if args.limit:  # spread over the folders, so a limited run still has training and validation photos
        files = files[:: max(1, len(files) // args.limit)][: args.limit]
    row = {"setting": {k: v for k, v in vars(args).items() if k != "fastai_python"}}
    with tempfile.TemporaryDirectory() as tmp:
        dest = Path(tmp)
        parallel(Crappify(src, dest, args.size, args.small, args.quality), files, max_workers=2)
        valid = "val" if (dest / "lr" / "val").is_dir() else "valid"
        if not ((dest / "lr" / "train").is_dir() and (dest / "lr" / valid).is_dir()):
            raise SystemExit(f"{src} needs train/ and {valid}/ folders (the split of both sides).")
        names = sorted(str(p.relative_to(dest / "lr")) for p in (dest / "lr" / valid).rglob("*.png"))
        targets = torch.stack([load(dest / "hr" / n) for n in names])
        row["n_valid"] = len(names)
        for name, method in (("bicubic", PIL.Image.BICUBIC), ("bilinear", PIL.Image.BILINEAR)):
            upsampled = torch.stack([load(dest / "lr" / n, args.size, method) for n in names])
            row[f"{name}_psnr_ssim"] = scores(upsampled, targets)
        cfg = {**{k: v for k, v in vars(args).items() if k not in ("sides", "fastai_python", "data", "quick")},
               "dest": tmp, "valid": valid}
        for side in args.sides:
            out = run_side(side, cfg, args.fastai_python)
            if "error" not in out:
                preds = torch.load(dest / f"preds_{side}.pt")
                out = {"psnr_ssim": scores(torch.stack([preds[n] for n in names]), targets), **out}
            row[side] = out
    row["load_1min"] = round(os.getloadavg()[0], 1)
    print(json.dumps(row))
    return row


if __name__ == "__main__":
    main()
