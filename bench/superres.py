"""Benchmark: lesson 7's super-resolution on real photos: does the U-Net beat bicubic upsampling?

Data: the photos of `--data` (default `../shared/data/hymenoptera`, train/ and val/ folders), each
centre-cropped to a square and resized to --size px (the targets), and "crappified" to --small px
(bilinear, then a JPEG of quality --quality: the inputs), written to a temporary folder with
`parallel`. The model: `unet_learner(data, models.<--arch>, pretrained=, blur=True,
norm_type=NormType.Weight, self_attention=True, y_range=(-3., 3.))` with `L1LossFlat` or (`--loss mse`,
the loss of lesson7-superres-gan's generator) `MSELossFlat`, data
normalised with `imagenet_stats, do_y=True`, `get_transforms(max_zoom=2.)`, fit_one_cycle(--epochs,
--lr), batch size --bs. `--arch mobilenet_v2 --pretrained` puts the ImageNet MobileNetV2 body of
`../shared/weights` into a temporary torch hub cache, where torchvision's weights API finds it.

Columns: PSNR (dB) and SSIM over the validation photos (torchmetrics, images in [0, 1]) of the
inputs upsampled with bicubic interpolation (PIL), and of the U-Net's predictions; then the seconds
per epoch and the 1-minute load average at the end (other processes slow a run down).

    python bench/superres.py [--data PATH] [--small 48] [--size 96] [--epochs 4] [--bs 16]
        [--lr 3e-3] [--quality 30] [--seed 0] [--limit N] [--arch resnet18] [--pretrained]
        [--loss l1|mse] [--quick]

`--quick` is a smoke test of this script (24 photos, 32 px, one epoch): its figures mean nothing.
Figures and the runs they come from: bench/RESULTS.md.
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MOBILENET = ROOT.parent / "shared" / "weights" / "mobilenet_v2_imagenet_body.pth"


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

    return (float(peak_signal_noise_ratio(pred, target, data_range=1.0)),
            float(structural_similarity_index_measure(pred, target, data_range=1.0)))


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "hymenoptera"))
    parser.add_argument("--small", type=int, default=48)
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--bs", type=int, default=16)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--quality", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--limit", type=int, default=None, help="use only the first N photos")
    parser.add_argument("--arch", default="resnet18", help="a name in fastbase.vision.models")
    parser.add_argument("--pretrained", action="store_true", help="ImageNet weights (mobilenet_v2: ../shared/weights)")
    parser.add_argument("--loss", choices=["l1", "mse"], default="l1")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    if args.quick:
        args.small, args.size, args.epochs, args.limit = 16, 32, 1, 24

    import numpy as np
    import PIL.Image
    import torch

    from fastbase.vision import (
        ImageImageList,
        L1LossFlat,
        MSELossFlat,
        NormType,
        get_image_files,
        get_transforms,
        imagenet_stats,
        models,
        parallel,
        set_seed,
        unet_learner,
    )

    src = Path(args.data)
    files = get_image_files(src)
    if args.limit:  # spread over the folders, so a limited run still has training and validation photos
        files = files[:: max(1, len(files) // args.limit)][: args.limit]
    set_seed(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        dest = Path(tmp)
        if args.pretrained and args.arch == "mobilenet_v2":  # torchvision's file name in its hub cache
            (dest / "hub" / "checkpoints").mkdir(parents=True)
            (dest / "hub" / "checkpoints" / "mobilenet_v2-b0353104.pth").symlink_to(MOBILENET)
            torch.hub.set_dir(str(dest / "hub"))
        parallel(Crappify(src, dest, args.size, args.small, args.quality), files, max_workers=2)
        valid = "val" if (dest / "lr" / "val").is_dir() else "valid"
        lists = ImageImageList.from_folder(dest / "lr")
        folders = (dest / "lr" / "train").is_dir() and (dest / "lr" / valid).is_dir()
        lists = lists.split_by_folder("train", valid) if folders else lists.split_by_rand_pct(0.2, seed=args.seed)
        data = (lists.label_from_func(lambda x: dest / "hr" / x.relative_to(dest / "lr"))
                .transform(get_transforms(max_zoom=2.), size=args.size, tfm_y=True)
                .databunch(bs=args.bs, num_workers=0, seed=args.seed).normalize(imagenet_stats, do_y=True))
        loss = MSELossFlat() if args.loss == "mse" else L1LossFlat()
        learn = unet_learner(data, getattr(models, args.arch), pretrained=args.pretrained, blur=True,
                             norm_type=NormType.Weight, self_attention=True, y_range=(-3., 3.), loss_func=loss,
                             silent=True)
        start = time.perf_counter()
        learn.fit_one_cycle(args.epochs, args.lr)
        per_epoch = (time.perf_counter() - start) / args.epochs
        preds, targets = learn.get_preds()
        preds, targets = data.denorm_y(preds).clamp(0, 1), data.denorm_y(targets).clamp(0, 1)
        bicubic = torch.stack([torch.from_numpy(np.asarray(PIL.Image.open(fn).resize(
            (args.size, args.size), PIL.Image.BICUBIC), dtype=np.float32) / 255).permute(2, 0, 1)
            for fn in data.valid_ds.items])
    row = {"setting": vars(args), "n_train": len(data.train_ds), "n_valid": len(data.valid_ds),
           "bicubic_psnr_ssim": scores(bicubic, targets), "fastbase_psnr_ssim": scores(preds, targets),
           "s_per_epoch": round(per_epoch, 1), "load_1min": round(os.getloadavg()[0], 1)}
    print(json.dumps(row))
    return row


if __name__ == "__main__":
    main()
