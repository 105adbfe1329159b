"""Benchmark: how fast ImageDataBunch feeds a model, against torchvision's and fastai's pipelines.

Part 1, loader throughput: images/s of one pass through the training loader of
/work/shared/data/hymenoptera (245 photos, about 500x375 JPEG) at size 224, bs 32, with
augmentation, everything on the CPU:
  fastbase     ImageDataBunch.from_folder(ds_tfms=get_transforms(), size=224).normalize(imagenet_stats),
               batches taken from `data.train_dl`, so the batch augmentation and normalisation are counted
  torchvision  ImageFolder + RandomResizedCrop(224) + RandomHorizontalFlip + ToTensor + Normalize,
               DataLoader with the same settings (shuffle, drop_last, persistent workers)
  fastai       ImageDataLoaders.from_folder(item_tfms=Resize(224), batch_tfms=aug_transforms() +
               Normalize), when fastai imports here or through --fastai-python
for 0, 1 and 2 workers and fastbase's default. Each (pipeline, workers) runs in its own process: one
warm-up pass (worker start-up), then the median of --passes timed passes, and the peak RSS of the
main process and of its largest worker.

`fastbase` keeps each decoded, resized image in shared memory after the first pass (its default
`cache_items`, as the 245 photos take 66 MB), and once they are in memory it loads in the main process
(`DeviceDataLoader.in_memory`): the timed passes are copies from memory, with the augmentation drawn
afresh on all of torch's threads. `fastbase-workers` is the same with the workers kept throughout (the
behaviour before); `fastbase-nocache` decodes every pass (`cache_items=False`); `first pass` is pass 0
of every row (worker start-up included; it fills fastbase's cache). `fastbase-lite` is fastbase with
only the baseline's augmentation (random crop window and flip).

Part 2, workers while training: seconds per training step (random init, 224 px, bs 32, SGD) of
resnet18 (compute-bound) and of a small convnet (loading-bound) fed by fastbase with 0 workers, with 2
(loading in the main process once the cache is full: the default) and with 2 kept throughout; a first
epoch that fills the cache is timed on its own. It checks that the default is not slower than the best
fixed choice when the model needs the cores.

    python bench/data_loader.py [--passes 3] [--epochs 1] [--rounds 2] [--fastai-python PYTHON] [--quick]
                                [--part all|loader|training]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

DATA = Path(os.environ.get("FASTBASE_BENCH_DATA", "/work/shared/data/hymenoptera"))
SIZE, BS = 224, 32
STATS = ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])


def fastbase_loader(workers: int, lite: bool = False, cache=None, stay_in_workers: bool = False):
    from fastbase.data import imagenet_stats
    from fastbase.vision.data import ImageDataBunch
    from fastbase.vision.transforms import get_transforms
    # lite: the torchvision baseline's augmentation only (random crop window and flip)
    tfms = get_transforms(max_rotate=0, max_zoom=1.0, max_warp=0, max_lighting=0) if lite else get_transforms()
    data = ImageDataBunch.from_folder(DATA, valid="val", ds_tfms=tfms, size=SIZE, bs=BS, num_workers=workers,
                                      device="cpu", seed=0, cache_items=cache)
    dl = data.normalize(imagenet_stats).train_dl
    dl.in_process_when_cached = not stay_in_workers
    return dl


def torchvision_loader(workers: int):
    import torch
    from torchvision import datasets, transforms
    tfms = transforms.Compose([transforms.RandomResizedCrop(SIZE), transforms.RandomHorizontalFlip(),
                               transforms.ToTensor(), transforms.Normalize(*STATS)])
    ds = datasets.ImageFolder(DATA / "train", transform=tfms)
    return torch.utils.data.DataLoader(ds, batch_size=BS, shuffle=True, drop_last=True, num_workers=workers,
                                       persistent_workers=workers > 0)


def fastai_loader(workers: int):
    import torch
    from fastai.vision.all import ImageDataLoaders, Normalize, Resize, aug_transforms
    dls = ImageDataLoaders.from_folder(DATA, train="train", valid="val", item_tfms=Resize(SIZE),
                                       batch_tfms=[*aug_transforms(), Normalize.from_stats(*STATS)], bs=BS,
                                       num_workers=workers, device=torch.device("cpu"))
    return dls.train


LOADERS = {"fastbase": fastbase_loader, "fastbase-nocache": lambda w: fastbase_loader(w, cache=False),
           "fastbase-lite": lambda w: fastbase_loader(w, lite=True),
           "fastbase-workers": lambda w: fastbase_loader(w, stay_in_workers=True),
           "torchvision": torchvision_loader, "fastai": fastai_loader}


def measure_loader(pipeline: str, workers: int, passes: int) -> dict:
    """Run in a child process: warm-up pass, then `passes` timed passes; images/s and peak RSS."""
    import gc
    loader = LOADERS[pipeline](workers)
    rates = []
    for i in range(passes + 1):
        start, n = time.perf_counter(), 0
        for x, _ in loader:
            n += len(x)
        rate = n / (time.perf_counter() - start)
        if i:  # pass 0 starts the workers and fills fastbase's item cache
            rates.append(rate)
        else:
            first = rate
    del loader
    gc.collect()
    time.sleep(0.5)  # let persistent workers exit, so RUSAGE_CHILDREN sees them
    return {"rates": rates, "first": first, "images": n, "rss_main_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "rss_worker_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}


def small_convnet():
    """Four stride-2 conv blocks and a linear head: little compute per image, so loading shows."""
    from torch import nn
    blocks = [nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride=2, padding=1), nn.BatchNorm2d(c_out), nn.ReLU())
              for c_in, c_out in ((3, 16), (16, 32), (32, 64), (64, 64))]
    return nn.Sequential(*blocks, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 2))


def measure_training(workers: int, epochs: int, arch: str, stay: bool) -> dict:
    """Run in a child process: one epoch that fills the item cache, then `epochs` timed epochs of `arch`
    (fwd+bwd+SGD) fed by fastbase; seconds of the first epoch and per step of the others."""
    import torch
    from torchvision.models import resnet18
    torch.manual_seed(0)
    model = resnet18(num_classes=2) if arch == "resnet18" else small_convnet()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    loader = fastbase_loader(workers, stay_in_workers=stay)

    def epoch():
        start, n = time.perf_counter(), 0
        for x, y in loader:
            torch.nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
            opt.zero_grad()
            n += 1
        return time.perf_counter() - start, n

    first, _ = epoch()
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    timed = [epoch() for _ in range(epochs)]
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
    return {"step_s": [t / n for t, n in timed], "first_epoch_s": first,
            "faults_per_step": faults / sum(n for _, n in timed)}


def child(args: list[str], python: str = sys.executable) -> dict:
    out = subprocess.run([python, __file__, "--child", *args], capture_output=True, text=True, check=False)
    if out.returncode != 0:
        return {"error": (out.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def fastai_python(given: str | None) -> str | None:
    """An interpreter where fastai imports: --fastai-python, else this one, else None."""
    for python in ([given] if given else []) + [sys.executable]:
        ok = subprocess.run([python, "-c", "import fastai.vision.all"], capture_output=True, check=False).returncode == 0
        if ok:
            return python
    return None


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--passes", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=1, help="timed training epochs per setup and round")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds of the training check")
    parser.add_argument("--fastai-python", default=None, help="a Python where fastai is installed")
    parser.add_argument("--quick", action="store_true", help="2 passes, 1 round")
    parser.add_argument("--part", choices=("all", "loader", "training"), default="all",
                        help="part 1 (loader throughput), part 2 (workers while training) or both")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, *rest = args.child
        result = measure_training(int(rest[0]), int(rest[1]), rest[2], bool(int(rest[3]))) if kind == "train" else \
            measure_loader(kind, int(rest[0]), int(rest[1]))
        print(json.dumps(result))
        return
    if not (DATA / "train").is_dir():
        print(f"SKIPPED: {DATA} is absent (set FASTBASE_BENCH_DATA to an ImageFolder-style folder with train/ "
              "and val/).")
        return
    if args.quick:
        args.passes, args.rounds = 2, 1
    import torch

    from fastbase.core import num_cpus
    from fastbase.data import default_num_workers
    default = default_num_workers(torch.device("cpu"))
    fa_python = fastai_python(args.fastai_python)
    print(f"data {DATA}, size {SIZE}, bs {BS}, {num_cpus()} CPUs, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; fastbase's default num_workers on this machine: {default}")
    if args.part != "training":
        loader_part(args, default, fa_python)
    if args.part != "loader":
        for arch, epochs in (("resnet18", args.epochs), ("small-convnet", 3 * args.epochs)):
            training_check(arch, epochs, args.rounds, default)


def loader_part(args, default: int, fa_python: str | None) -> None:
    print(f"loader throughput: median of {args.passes} passes after a warm-up pass")
    if fa_python is None:
        print("fastai: not installed (pip install fastai, or pass --fastai-python); its rows are left out")
    counts = sorted({0, 1, 2, default})
    rows = {}
    print(f"\n{'pipeline':<16} {'workers':>8} {'img/s':>8} {'vs torchvision':>15} {'first pass':>11} "
          f"{'vs torchvision':>15} {'RSS main MB':>12} {'RSS worker MB':>14}")
    for workers in counts:
        for name in ("torchvision", "fastbase", "fastbase-workers", "fastbase-nocache", "fastbase-lite", "fastai"):
            if (name == "fastai" and fa_python is None) or (name == "fastbase-workers" and not workers):
                continue
            res = child([name, str(workers), str(args.passes)], fa_python if name == "fastai" else sys.executable)
            rows[name, workers] = res
            label = f"{workers}{' (default)' if workers == default else ''}"
            if "error" in res:
                print(f"{name:<16} {label:>8}   failed: {res['error']}")
                continue
            rate = statistics.median(res["rates"])
            tv = rows.get(("torchvision", workers), {})
            ratio = f"{rate / statistics.median(tv['rates']):.2f}x" if "rates" in tv else "-"
            first = f"{res['first'] / tv['first']:.2f}x" if "first" in tv else "-"
            print(f"{name:<16} {label:>8} {rate:>8.0f} {ratio:>15} {res['first']:>11.0f} {first:>15} "
                  f"{res['rss_main_mb']:>12.0f} {(res['rss_worker_mb'] if workers else 0):>14.0f}")
    def best(name, key="rates"):
        values = [statistics.median(r["rates"]) if key == "rates" else r[key]
                  for (n, _), r in rows.items() if n == name and "rates" in r]
        return max(values, default=float("nan"))

    for name, what in (("fastbase", "later passes (item cache warm)"), ("fastbase-nocache", "without the item cache")):
        print(f"\nbest {name} {best(name):.0f} img/s vs best torchvision {best('torchvision'):.0f} img/s, {what}: "
              f"{best(name) / best('torchvision'):.2f}x")
    print(f"first pass (worker start-up; fastbase fills its cache): best fastbase {best('fastbase', 'first'):.0f} "
          f"img/s vs best torchvision {best('torchvision', 'first'):.0f}: "
          f"{best('fastbase', 'first') / best('torchvision', 'first'):.2f}x")
    def fit_s(r):  # what a fit waits for: the first pass and the later ones together
        return r["images"] * (1 / r["first"] + len(r["rates"]) / statistics.median(r["rates"]))

    for workers in counts:
        fb, tv = rows.get(("fastbase", workers), {}), rows.get(("torchvision", workers), {})
        if "rates" in fb and "rates" in tv:
            print(f"{workers} workers, all {1 + len(fb['rates'])} passes together (a fit of that many epochs): "
                  f"fastbase {fit_s(fb):.2f} s, torchvision {fit_s(tv):.2f} s: {fit_s(tv) / fit_s(fb):.2f}x")


def training_setups(default: int) -> dict[str, tuple[int, bool]]:
    """name -> (workers, workers kept after the cache is full): 0 workers, and the default count (2
    where the default is 0) both ways."""
    workers = default or 2
    return {"0 workers": (0, False), f"{workers} workers, in this process once cached": (workers, False),
            f"{workers} workers throughout": (workers, True)}


def training_check(arch: str, epochs: int, rounds: int, default: int) -> None:
    setups = training_setups(default)
    print(f"\nTraining {arch} (random init) at {SIZE} px, bs {BS}, on the CPU, fed by fastbase: a first epoch "
          f"(decodes, fills the item cache), then {epochs} timed epoch(s); {rounds} alternating round(s), as this "
          f"machine's speed drifts. fastbase's default here: {default} workers, in this process once cached.")
    steps: dict[str, list] = {}
    firsts: dict[str, list] = {}
    faults: dict[str, list] = {}  # minor page faults per step in the timed epochs (fresh memory)
    per_round: list[dict[str, tuple[float, float]]] = []  # (first epoch s, median s/step) of each setup
    for _ in range(rounds):
        per_round.append({})
        for name, (workers, stay) in setups.items():
            res = child(["train", str(workers), str(epochs), arch, str(int(stay))])
            if "error" in res:
                print(f"  {name}: failed: {res['error']}")
                continue
            steps.setdefault(name, []).extend(res["step_s"])
            firsts.setdefault(name, []).append(res["first_epoch_s"])
            faults.setdefault(name, []).append(res["faults_per_step"])
            per_round[-1][name] = (res["first_epoch_s"], statistics.median(res["step_s"]))
    times = {name: statistics.median(s) for name, s in steps.items()}
    for name, t in times.items():
        print(f"  {name:<40} first epoch {statistics.median(firsts[name]):6.1f} s; later epochs {t:.3f} s/step "
              f"(median of {len(steps[name])} epochs; range {min(steps[name]):.3f}-{max(steps[name]):.3f}); "
              f"{statistics.median(faults[name]) / 1000:.0f}k page faults/step")
    default_name = next(iter(setups)) if default == 0 else list(setups)[1]
    if default_name in times and len(times) > 1:
        best = min(times, key=times.get)
        print(f"  the default ({default_name}) takes {times[default_name] / times[best]:.2f}x the time per step "
              f"of the best setup ({best}) in later epochs")
        # the fixed choices are 0 workers and workers throughout; each round's setups ran back to back,
        # so a ratio within a round is less exposed to the machine's drift than one between medians
        fixed = [name for name in setups if name != default_name]
        for what, k in (("first epoch", 0), ("later epochs, per step", 1)):
            ratios = [r[default_name][k] / min(r[f][k] for f in fixed) for r in per_round
                      if default_name in r and all(f in r for f in fixed)]
            if ratios:
                print(f"  {what}: the default against the best fixed choice of the same round: "
                      + ", ".join(f"{q:.2f}x" for q in ratios) + f" (median {statistics.median(ratios):.2f}x)")


if __name__ == "__main__":
    main()
