"""Benchmark: lesson 7's GAN stages, time per epoch, fastbase against fastai 2.8 (same models and data).

Data: --n photos of `../shared/data/hymenoptera`, each cropped to a square of --size px (the targets,
`hr/`) and crappified to --small px JPEGs of quality 30 (the inputs, `lr/`, same names), written once
to a temporary folder; the WGAN reads `../shared/data/mnist_tiny` (1,408 digits, 3 channels) at
--wgan-size px. Stages, each in both libraries with the lesson's calls and the same models:

  gen    U-Net generator pretraining: unet_learner(resnet18, pretrained=False, blur=True,
         norm_type=NormType.Weight, self_attention=True, y_range=(-3, 3)), MSELossFlat, wd 1e-3,
         inputs and targets normalised with imagenet_stats, get_transforms(max_zoom=2.) / aug_transforms
  crit   critic pretraining: Learner(gan_critic(), AdaptiveLoss(BCEWithLogitsLoss())) on lr/ against hr/
         (fastai 2.8: gan_critic(n_blocks=2), the v1 critic that fastbase's is)
  gan    GANLearner.from_learners(gen, crit, weights_gen=(1., 50.), AdaptiveGANSwitcher(critic_thresh=0.65),
         Adam(betas=(0, 0.99))) with GANDiscriminativeLR(mult_lr=5.)
  wgan   GANLearner.wgan(basic_generator(--wgan-size, 3, n_extra_layers=1), basic_critic(...,
         leaky 0.2)), Adam(betas=(0, 0.99)), wd 0, no validation set

Each stage fits one epoch twice and times the second (the first pays one-time costs). Each library
runs in its own child process (--threads torch threads, fastai in --fastai-python); with --runs N
the two take turns N times, the order reversed every run (`--first`: the side of run 0), and the
table gives medians. Columns: seconds per epoch per stage, the child's peak resident memory (MiB,
bench/_memory.py), the 1-minute load average when the child ended, and fastbase's median over
fastai's per stage.

    python bench/gan.py [--n 48] [--small 32] [--size 64] [--bs 8] [--wgan-size 32] [--wgan-bs 64]
        [--threads 2] [--runs 3] [--skip-fastai] [--first fastbase|fastai] [--quick]

`--quick` is a smoke test (12 photos, 16 -> 32 px, 16 px WGAN, one run): its figures mean nothing.
Figures and the runs they come from: bench/RESULTS.md.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SHARED = HERE.parent.parent / "shared" / "data"
FASTAI_PYTHON = "/tmp/fastai-venv/bin/python"
STAGES = ("gen", "crit", "gan", "wgan")


def crappify(src: Path, dest: Path, n: int, size: int, small: int) -> None:
    """n photos of `src` -> dest/hr/<name>.png (square, `size` px) and dest/lr/<name>.png (`small` px JPEG q30)."""
    import PIL.Image

    files = sorted(src.rglob("*.jpg"))
    files = files[:: max(1, len(files) // n)][:n]
    for d in ("hr", "lr"):
        (dest / d).mkdir(parents=True, exist_ok=True)
    for fn in files:
        img = PIL.Image.open(fn).convert("RGB")
        side = min(img.size)
        left, top = (img.size[0] - side) // 2, (img.size[1] - side) // 2
        img = img.crop((left, top, left + side, top + side)).resize((size, size), PIL.Image.BICUBIC)
        img.save(dest / "hr" / f"{fn.stem}.png")
        img.resize((small, small), PIL.Image.BILINEAR).save(dest / "tmp.jpg", quality=30)
        PIL.Image.open(dest / "tmp.jpg").save(dest / "lr" / f"{fn.stem}.png")
    (dest / "tmp.jpg").unlink()


def timed(fit) -> float:
    """Seconds of the second of two one-epoch fits."""
    fit()
    start = time.perf_counter()
    fit()
    return time.perf_counter() - start


def run_fastbase(cfg: dict) -> dict:
    from functools import partial

    import torch
    from torch import nn

    from fastbase.vision import (
        ImageImageList,
        ImageList,
        Learner,
        MSELossFlat,
        NormType,
        get_transforms,
        imagenet_stats,
        models,
        noop,
        set_seed,
        unet_learner,
    )
    from fastbase.vision.gan import (
        AdaptiveGANSwitcher,
        AdaptiveLoss,
        GANDiscriminativeLR,
        GANItemList,
        GANLearner,
        accuracy_thresh_expand,
        basic_critic,
        basic_generator,
        crop_pad,
        gan_critic,
    )

    path, bs, size, out = Path(cfg["path"]), cfg["bs"], cfg["size"], {}
    set_seed(0)
    data_gen = (ImageImageList.from_folder(path / "lr").split_by_rand_pct(0.1, seed=42)
                .label_from_func(lambda x: path / "hr" / x.name)
                .transform(get_transforms(max_zoom=2.), size=size, tfm_y=True)
                .databunch(bs=bs, num_workers=0).normalize(imagenet_stats, do_y=True))
    learn_gen = unet_learner(data_gen, models.resnet18, pretrained=False, wd=1e-3, blur=True,
                             norm_type=NormType.Weight, self_attention=True, y_range=(-3., 3.),
                             loss_func=MSELossFlat(), silent=True)
    out["gen"] = timed(lambda: learn_gen.fit_one_cycle(1, 1e-3))
    data_crit = (ImageList.from_folder(path, include=["lr", "hr"]).split_by_rand_pct(0.1, seed=42)
                 .label_from_folder(classes=["lr", "hr"]).transform(get_transforms(max_zoom=2.), size=size)
                 .databunch(bs=bs, num_workers=0).normalize(imagenet_stats))
    learn_crit = Learner(data_crit, gan_critic(), metrics=accuracy_thresh_expand,
                         loss_func=AdaptiveLoss(nn.BCEWithLogitsLoss()), wd=1e-3)
    out["crit"] = timed(lambda: learn_crit.fit_one_cycle(1, 1e-3))
    learn_crit.metrics = []
    learn = GANLearner.from_learners(learn_gen, learn_crit, weights_gen=(1., 50.), show_img=False,
                                     switcher=partial(AdaptiveGANSwitcher, critic_thresh=0.65),
                                     opt_func=partial(torch.optim.Adam, betas=(0., 0.99)), wd=1e-3)
    learn.callback_fns.append(partial(GANDiscriminativeLR, mult_lr=5.))
    out["gan"] = timed(lambda: learn.fit(1, 1e-4))
    ws, stats = cfg["wgan_size"], [torch.tensor([0.5] * 3), torch.tensor([0.5] * 3)]
    data = (GANItemList.from_folder(cfg["mnist"], noise_sz=100).split_none().label_from_func(noop)
            .transform(tfms=[[crop_pad(size=ws, row_pct=(0, 1), col_pct=(0, 1))], []], size=ws, tfm_y=True)
            .databunch(bs=cfg["wgan_bs"], num_workers=0).normalize(stats, do_x=False, do_y=True))
    wgan = GANLearner.wgan(data, basic_generator(in_size=ws, n_channels=3, n_extra_layers=1),
                           basic_critic(in_size=ws, n_channels=3, n_extra_layers=1), switch_eval=False,
                           opt_func=partial(torch.optim.Adam, betas=(0., 0.99)), wd=0.)
    out["wgan"] = timed(lambda: wgan.fit(1, 2e-4))
    return out


def run_fastai(cfg: dict) -> dict:
    from fastai.vision.all import (
        Adam,
        CategoryBlock,
        DataBlock,
        ImageBlock,
        IndexSplitter,
        Learner,
        MSELossFlat,
        Normalize,
        NormType,
        RandomSplitter,
        Resize,
        ResizeMethod,
        TransformBlock,
        aug_transforms,
        get_image_files,
        imagenet_stats,
        parent_label,
        partial,
        resnet18,
        set_seed,
        torch,
        unet_learner,
    )
    from fastai.vision.gan import (
        AdaptiveGANSwitcher,
        AdaptiveLoss,
        GANDiscriminativeLR,
        GANLearner,
        accuracy_thresh_expand,
        basic_critic,
        basic_generator,
        gan_critic,
        generate_noise,
    )
    from torch import nn

    path, bs, size, out = Path(cfg["path"]), cfg["bs"], cfg["size"], {}
    set_seed(0)
    norm = Normalize.from_stats(*imagenet_stats)
    dls_gen = DataBlock(blocks=(ImageBlock, ImageBlock), get_items=lambda p: get_image_files(p / "lr"),
                        get_y=lambda x: path / "hr" / x.name, splitter=RandomSplitter(0.1, seed=42),
                        item_tfms=Resize(size), batch_tfms=[*aug_transforms(max_zoom=2.), norm]
                        ).dataloaders(path, bs=bs, num_workers=0)
    learn_gen = unet_learner(dls_gen, resnet18, pretrained=False, normalize=False, n_out=3, wd=1e-3, blur=True,
                             norm_type=NormType.Weight, self_attention=True, y_range=(-3., 3.),
                             loss_func=MSELossFlat())
    learn_gen.no_bar(), learn_gen.no_logging()
    out["gen"] = timed(lambda: learn_gen.fit_one_cycle(1, 1e-3))
    dls_crit = DataBlock(blocks=(ImageBlock, CategoryBlock(vocab=["lr", "hr"])), get_items=get_image_files,
                         get_y=parent_label, splitter=RandomSplitter(0.1, seed=42), item_tfms=Resize(size),
                         batch_tfms=[*aug_transforms(max_zoom=2.), norm]).dataloaders(path, bs=bs, num_workers=0)
    # n_blocks=2: fastai v1's critic (two stride-2 stages), which fastbase's gan_critic() is; 2.8 defaults to 3
    learn_crit = Learner(dls_crit, gan_critic(n_blocks=2), metrics=accuracy_thresh_expand,
                         loss_func=AdaptiveLoss(nn.BCEWithLogitsLoss()), wd=1e-3)
    learn_crit.no_bar(), learn_crit.no_logging()
    out["crit"] = timed(lambda: learn_crit.fit_one_cycle(1, 1e-3))
    learn_crit.metrics = []
    learn = GANLearner.from_learners(learn_gen, learn_crit, weights_gen=(1., 50.), show_img=False,
                                     switcher=AdaptiveGANSwitcher(critic_thresh=0.65),
                                     opt_func=partial(Adam, mom=0., sqr_mom=0.99), wd=1e-3)
    learn.add_cb(GANDiscriminativeLR(mult_lr=5.))
    learn.no_bar(), learn.no_logging()
    out["gan"] = timed(lambda: learn.fit(1, 1e-4))
    ws = cfg["wgan_size"]
    dls = DataBlock(blocks=(TransformBlock, ImageBlock), get_x=generate_noise, get_items=get_image_files,
                    splitter=IndexSplitter([]), item_tfms=Resize(ws, method=ResizeMethod.Crop),
                    batch_tfms=Normalize.from_stats(torch.tensor([0.5] * 3), torch.tensor([0.5] * 3))
                    ).dataloaders(cfg["mnist"], path=cfg["mnist"], bs=cfg["wgan_bs"], num_workers=0)
    wgan = GANLearner.wgan(dls, basic_generator(ws, n_channels=3, n_extra_layers=1),
                           basic_critic(ws, n_channels=3, n_extra_layers=1,
                                        act_cls=partial(nn.LeakyReLU, negative_slope=0.2)),
                           switch_eval=False, opt_func=partial(Adam, mom=0., sqr_mom=0.99))
    wgan.recorder.train_metrics, wgan.recorder.valid_metrics = True, False
    wgan.no_bar(), wgan.no_logging()
    out["wgan"] = timed(lambda: wgan.fit(1, 2e-4, wd=0.))
    return out


def child(side: str, cfg: dict) -> None:
    import torch

    torch.set_num_threads(cfg["threads"])
    sys.path.insert(0, str(HERE))
    from _memory import peak_rss_mb

    out = run_fastbase(cfg) if side == "fastbase" else run_fastai(cfg)
    out.update(peak_mb=round(peak_rss_mb()), load=round(os.getloadavg()[0], 1))
    print("RESULT " + json.dumps(out))


def run_row(python: str, side: str, cfg: dict) -> dict:
    sys.path.insert(0, str(HERE))
    from _child import run_child

    return run_child(python, Path(__file__).resolve(), side, cfg, tail=3,
                     env={"FASTBASE_NO_BAR": "1", "OMP_NUM_THREADS": str(cfg["threads"])})


def main(argv=None) -> dict:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        child(argv[1], json.loads(argv[2]))
        return {}
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    for name, default in (("n", 48), ("small", 32), ("size", 64), ("bs", 8), ("wgan-size", 32), ("wgan-bs", 64),
                          ("threads", 2), ("runs", 3)):
        parser.add_argument(f"--{name}", type=int, default=default)
    parser.add_argument("--fastai-python", default=FASTAI_PYTHON)
    parser.add_argument("--skip-fastai", action="store_true")
    parser.add_argument("--first", choices=["fastbase", "fastai"], default="fastbase",
                        help="the side that runs first in run 0 (for several calls that alternate)")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    if args.quick:
        args.n, args.small, args.size, args.wgan_size, args.runs = 12, 16, 32, 16, 1
    sides = ["fastbase"] + ([] if args.skip_fastai or not Path(args.fastai_python).exists() else ["fastai"])
    sides = sides[::-1] if args.first == "fastai" else sides
    rows: dict[str, list[dict]] = {s: [] for s in sides}
    with tempfile.TemporaryDirectory() as tmp:
        crappify(SHARED / "hymenoptera", Path(tmp), args.n, args.size, args.small)
        cfg = {"path": tmp, "mnist": str(SHARED / "mnist_tiny"), "bs": args.bs, "size": args.size,
               "wgan_size": args.wgan_size, "wgan_bs": args.wgan_bs, "threads": args.threads}
        for run in range(args.runs):
            for side in (sides if run % 2 == 0 else sides[::-1]):
                row = run_row(sys.executable if side == "fastbase" else args.fastai_python, side, cfg)
                print(json.dumps({"run": run, "side": side, **row}), flush=True)
                rows[side].append(row)
    summary = {}
    for side, results in rows.items():
        ok = [r for r in results if "error" not in r]
        if ok:
            summary[side] = {k: round(statistics.median(r[k] for r in ok), 2) for k in (*STAGES, "peak_mb")}
    if len(summary) == 2:
        summary["ratio"] = {k: round(summary["fastbase"][k] / summary["fastai"][k], 2) for k in STAGES}
    print(json.dumps({"setting": vars(args), "medians": summary}))
    return summary


if __name__ == "__main__":
    main()
