"""Benchmark: which of PyTorch's speed knobs pay on this CPU, each against a baseline timed in the same run.

On random data (nothing downloaded), torchvision's mobilenet_v2 and resnet18 (random init, 10
outputs) at --size px and --bs images per batch, with `torch.set_num_threads(--threads)`:

  train      one training step (forward, cross-entropy, backward, AdamW step, zero_grad):
             contiguous (baseline) vs channels_last (model and input converted), and contiguous
             with 1 torch thread
  valid      one eval-mode forward pass: `torch.no_grad()` contiguous (baseline) vs
             `torch.inference_mode()`, each contiguous and channels_last, and no_grad with 1 thread
  compile    `torch.compile(model)` (default backend, inductor; a fresh cache folder, so the compile
             is cold) against the same model eager: the first compiled training step (compile time
             included), then the steady step, and after how many steps the compile has paid for itself
             ("never" when the compiled step is not faster). A failure (no C compiler...) is reported.
  loader     a DataLoader with 2 workers over --items small in-memory JPEGs decoded and resized by
             PIL per item: time to the first batch of an epoch and time per epoch, with
             `persistent_workers=False` (baseline) vs True, over --epochs epochs (the first epoch,
             worker start-up for both, left out of the medians)
  pinned     host-to-device copy of one input batch, pageable (baseline) vs pinned + non_blocking:
             only on CUDA; "skipped: no CUDA" otherwise

Variants of one part alternate step by step (A, B, B, A, ...) so they share the machine's noise.
Figures are medians of --steps timed steps after one warm-up step; "vs baseline" is baseline
time / variant time (above 1: faster). Peak RSS is the process's resident-memory high-water mark
(VmHWM, reset before each timed step) during that variant's steps, so it includes every model
the process holds; the loader's workers are separate processes and not counted. The notes compare
outputs from the same weights on the same batch: in training mode the 1-thread row gives the
rounding noise floor (random-init mobilenet_v2 amplifies rounding through its BatchNorm layers).

Sizes: at the defaults (128 px, bs 32, 3 steps, compile on resnet18 only) a run took 3 minutes on
this project's 2 cores, half of it resnet18's cold compile (70-110 s here; mobilenet_v2's took 260 s,
so it is left out unless asked for with `--compile mobilenet_v2 resnet18`). `--quick` (32 px, bs 4,
1 step, 16 loader items, no compile unless --compile is given) is a smoke run of under a minute. The
machine may be shared: the header gives the load average before and after, and flags the figures as
noisy when it is high; compare the ratios of one part (its variants alternate), not absolute times.
The 1-thread rows show why: while another process keeps a core busy, OpenMP's 2-thread parallel
regions wait on a thread that is not running, and every operator can become many times slower.

    python bench/cpu_speed.py [--size 128] [--bs 32] [--steps 3] [--threads 2]
                              [--archs mobilenet_v2 resnet18] [--compile resnet18 | --compile none]
                              [--items 64] [--epochs 5] [--quick]
    python bench/cpu_speed.py --train-only --size 224 --archs mobilenet_v2 resnet18 efficientnet_b0 ...
        (the training part only, for any of ARCHS and OTHER_ARCHS: how `ArchMeta.channels_last_cpu`,
        cnn_learner's default memory format on the CPU, was chosen; 9 min for 8 archs)
"""
from __future__ import annotations

import argparse
import copy
import io
import logging
import math
import os
import shutil
import statistics
import tempfile
import time

import numpy as np
import torch
import torch.nn.functional as F
import torchvision
from _memory import peak_rss_mb, reset_peak_rss
from PIL import Image
from torch.utils.data import DataLoader, Dataset

ARCHS = ("mobilenet_v2", "resnet18")  # the default pair; --archs may name any of OTHER_ARCHS too
OTHER_ARCHS = ("resnet34", "resnet50", "mobilenet_v3_small", "mobilenet_v3_large", "efficientnet_b0", "densenet121",
               "convnext_tiny", "regnet_y_400mf", "squeezenet1_1", "vgg16_bn")
CL = torch.channels_last


# --- measuring -----------------------------------------------------------------------------
class Timings:
    """Seconds and peak RSS per variant, for variants timed in alternation."""

    def __init__(self):
        self.seconds, self.rss = {}, {}

    def time(self, name, func):
        reset_peak_rss()
        start = time.perf_counter()
        result = func()
        self.seconds.setdefault(name, []).append(time.perf_counter() - start)
        self.rss[name] = max(self.rss.get(name, 0.0), peak_rss_mb())
        return result

    def median(self, name) -> float:
        return statistics.median(self.seconds[name])


def alternate(names, steps: int, run_one) -> None:
    """Run each variant `steps` times, in the order A B, B A, A B... so neither always goes first."""
    for i in range(steps):
        for name in (names if i % 2 == 0 else names[::-1]):
            run_one(name)


class Table:
    def __init__(self):
        self.rows = []

    def add(self, part, model, variant, seconds, baseline, rss, note=""):
        ratio = "" if seconds is None or baseline is None else f"{baseline / seconds:.2f}x"
        figure = "" if seconds is None else f"{seconds * 1e3:,.0f} ms"
        self.rows.append((part, model, variant, figure, ratio, "" if rss is None else f"{rss:,.0f}", note))
        print("  " + " | ".join(self.rows[-1]), flush=True)

    def markdown(self) -> str:
        head = ("part", "model", "variant", "median", "vs baseline", "peak RSS MB", "note")
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        lines += ["| " + " | ".join(row) + " |" for row in self.rows]
        return "\n".join(lines)


# --- the parts -----------------------------------------------------------------------------
def make_model(arch: str, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return getattr(torchvision.models, arch)(weights=None, num_classes=10)


def batch(bs: int, size: int):
    g = torch.Generator().manual_seed(0)
    return torch.randn(bs, 3, size, size, generator=g), torch.randint(0, 10, (bs,), generator=g)


def train_step(model, opt, x, y) -> float:
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    return loss.item()


def with_threads(n: int, func):
    """Run `func` with `n` torch threads, then put the count back."""
    saved = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        return func()
    finally:
        torch.set_num_threads(saved)


def bench_train(table: Table, arch: str, args) -> None:
    x, y = batch(args.bs, args.size)
    base = make_model(arch)
    variants = {"contiguous": (base, x, args.threads),
                "channels_last": (copy.deepcopy(base).to(memory_format=CL), x.contiguous(memory_format=CL), args.threads)}
    if args.threads > 1:
        variants["contiguous, 1 thread"] = (copy.deepcopy(base), x, 1)
    opts = {name: torch.optim.AdamW(m.parameters(), lr=1e-3) for name, (m, _, _) in variants.items()}

    def step(name):
        model, xb, threads = variants[name]
        return with_threads(threads, lambda: train_step(model, opts[name], xb, y))

    first = {name: step(name) for name in variants}  # warm-up, from the same weights on the same batch
    t = Timings()
    alternate(list(variants), args.steps, lambda n: t.time(n, lambda: step(n)))
    baseline = t.median("contiguous")
    for name in variants:
        gap = abs(first[name] - first["contiguous"]) / abs(first["contiguous"])
        note = "baseline" if name == "contiguous" else f"first-step loss differs by {gap:.1e} (relative)"
        table.add("train", arch, name, t.median(name), baseline, t.rss[name], note)


def bench_valid(table: Table, arch: str, args) -> None:
    x, _ = batch(args.bs, args.size)
    contiguous = make_model(arch).eval()
    last = copy.deepcopy(contiguous).to(memory_format=CL)
    variants = {"no_grad, contiguous": (contiguous, x, torch.no_grad),
                "inference_mode, contiguous": (contiguous, x, torch.inference_mode),
                "no_grad, channels_last": (last, x.contiguous(memory_format=CL), torch.no_grad),
                "inference_mode, channels_last": (last, x.contiguous(memory_format=CL), torch.inference_mode)}
    if args.threads > 1:
        variants["no_grad, contiguous, 1 thread"] = (contiguous, x, torch.no_grad)

    def forward(name):
        model, xb, mode = variants[name]
        with mode():
            return with_threads(1 if name.endswith("1 thread") else args.threads, lambda: model(xb))

    outputs = {name: forward(name) for name in variants}  # warm-up, and the outputs to compare
    t = Timings()
    alternate(list(variants), args.steps, lambda n: t.time(n, lambda: forward(n)))
    baseline = t.median("no_grad, contiguous")
    for name in variants:
        diff = (outputs[name] - outputs["no_grad, contiguous"]).abs().max().item()
        note = "baseline" if name == "no_grad, contiguous" else f"max |logit diff| {diff:.1e}"
        table.add("valid", arch, name, t.median(name), baseline, t.rss[name], note)


def bench_compile(table: Table, arch: str, args) -> None:
    x, y = batch(args.bs, args.size)
    eager = make_model(arch)
    compiled_source = copy.deepcopy(eager)
    opts = {"eager": torch.optim.AdamW(eager.parameters(), lr=1e-3),
            "compiled": torch.optim.AdamW(compiled_source.parameters(), lr=1e-3)}
    t = Timings()
    train_step(eager, opts["eager"], x, y)  # warm-up
    try:
        compiled = torch.compile(compiled_source)
        t.time("first", lambda: train_step(compiled, opts["compiled"], x, y))  # compiles forward and backward
    except Exception as e:  # noqa: BLE001 - any failure is a finding to report, not a crash
        msg = str(e).strip().splitlines()[0][:120] if str(e).strip() else ""
        table.add("compile", arch, "torch.compile", None, None, None, f"failed: {type(e).__name__}: {msg}")
        return
    models = {"eager": eager, "compiled": compiled}
    alternate(["eager", "compiled"], args.steps,
              lambda n: t.time(n, lambda: train_step(models[n], opts[n], x, y)))
    base, steady, first = t.median("eager"), t.median("compiled"), t.median("first")
    extra, gain = first - base, base - steady
    payback = f"pays back after {math.ceil(extra / gain):,} steps" if gain > 0 else "never pays back (not faster)"
    table.add("compile", arch, "eager training step", base, base, t.rss["eager"], "baseline")
    table.add("compile", arch, "compiled: first step", first, None, t.rss["first"], "includes the (cold) compile")
    table.add("compile", arch, "compiled: steady step", steady, base, t.rss["compiled"], payback)


class JpegDataset(Dataset):
    """`n` random JPEGs held in memory as bytes; each item is decoded, resized and made a float tensor."""

    def __init__(self, n: int, size: int, source: int = 160):
        rng = np.random.default_rng(0)
        self.size, self.files = size, []
        for _ in range(n):
            buf = io.BytesIO()
            Image.fromarray(rng.integers(0, 256, (source, source, 3), dtype=np.uint8)).save(buf, "JPEG", quality=90)
            self.files.append(buf.getvalue())

    def __len__(self):
        return len(self.files)

    def __getitem__(self, i):
        img = Image.open(io.BytesIO(self.files[i])).convert("RGB").resize((self.size, self.size), Image.BILINEAR)
        return torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1).float().div_(255), i % 10


def bench_loader(table: Table, args) -> None:
    ds = JpegDataset(args.items, args.size)
    bs = max(1, min(args.bs, args.items // 4))
    loaders = {f"persistent_workers={p}": DataLoader(ds, batch_size=bs, shuffle=True, num_workers=2,
                                                     persistent_workers=p) for p in (False, True)}
    starts = {name: [] for name in loaders}
    epochs = Timings()

    def epoch(name):
        start = time.perf_counter()
        it = iter(loaders[name])
        next(it)
        starts[name].append(time.perf_counter() - start)
        for _ in it:
            pass

    alternate(list(loaders), args.epochs, lambda n: epochs.time(n, lambda: epoch(n)))
    base_name = "persistent_workers=False"
    base_start = statistics.median(starts[base_name][1:] or starts[base_name])
    base_epoch = statistics.median(epochs.seconds[base_name][1:] or epochs.seconds[base_name])
    for name in loaders:
        start = statistics.median(starts[name][1:] or starts[name])
        whole = statistics.median(epochs.seconds[name][1:] or epochs.seconds[name])
        base_note = "baseline; " if name == base_name else ""
        table.add("loader", f"{len(ds)} JPEGs, bs {bs}", f"{name}: first batch", start, base_start, epochs.rss[name],
                  f"{base_note}first epoch (worker start-up): {starts[name][0] * 1e3:,.0f} ms")
        table.add("loader", f"{len(ds)} JPEGs, bs {bs}", f"{name}: epoch", whole, base_epoch, epochs.rss[name],
                  f"{base_note}2 workers, {args.epochs} epochs, first left out")


def bench_pinned(table: Table, args) -> None:
    if not torch.cuda.is_available():
        table.add("pinned", "input batch", "pinned + non_blocking", None, None, None, "skipped: no CUDA")
        return
    x, _ = batch(args.bs, args.size)
    pinned = x.pin_memory()
    variants = {"pageable": lambda: x.to("cuda"), "pinned + non_blocking": lambda: pinned.to("cuda", non_blocking=True)}

    def copy_once(name):
        out = variants[name]()
        torch.cuda.synchronize()
        return out

    for name in variants:
        copy_once(name)
    t = Timings()
    alternate(list(variants), max(args.steps, 20), lambda n: t.time(n, lambda: copy_once(n)))
    base = t.median("pageable")
    size_mb = x.numel() * x.element_size() / 2**20
    for name in variants:
        table.add("pinned", f"{size_mb:.0f} MB batch", name, t.median(name), base, t.rss[name],
                  "baseline" if name == "pageable" else torch.cuda.get_device_name())


# --- the run -------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--bs", type=int, default=32)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per variant (after one warm-up)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--archs", nargs="+", choices=(*ARCHS, *OTHER_ARCHS), default=list(ARCHS))
    parser.add_argument("--train-only", action="store_true", help="only the training part (for more archs)")
    parser.add_argument("--compile", nargs="+", choices=(*ARCHS, "none"), default=None,
                        help="archs to time torch.compile on (default: resnet18; none with --quick)")
    parser.add_argument("--items", type=int, default=64, help="images in the loader's dataset")
    parser.add_argument("--epochs", type=int, default=5, help="loader epochs per setting")
    parser.add_argument("--quick", action="store_true", help="smoke run: 32 px, bs 4, 1 step, no compile")
    args = parser.parse_args()
    if args.quick:
        args.size, args.bs, args.steps, args.items, args.epochs = 32, 4, 1, 16, 3
    compile_archs = [a for a in (args.compile or ([] if args.quick else ["resnet18"])) if a != "none"]
    torch.set_num_threads(args.threads)
    # a cold compile, as a user's first run sees it; and no CUDA warning from the C++ builder
    cache = tempfile.mkdtemp(prefix="cpu_speed_inductor_")
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = cache
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)

    cpus = os.cpu_count()
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else cpus
    load_start = os.getloadavg()
    started = time.perf_counter()
    print(f"torch {torch.__version__}, torchvision {torchvision.__version__}; {cpus} CPUs ({usable} usable), "
          f"{torch.get_num_threads()} torch threads; {args.size} px, bs {args.bs}, {args.steps} timed steps per "
          f"variant; load average at start {load_start[0]:.2f} {load_start[1]:.2f} {load_start[2]:.2f}", flush=True)
    table = Table()
    for arch in args.archs:
        bench_train(table, arch, args)
        if not args.train_only:
            bench_valid(table, arch, args)
    for arch in [] if args.train_only else compile_archs:
        bench_compile(table, arch, args)
    shutil.rmtree(cache, ignore_errors=True)
    if not args.train_only:
        bench_loader(table, args)
        bench_pinned(table, args)
    load_end = os.getloadavg()
    noisy = load_start[0] > 0.5 or load_end[0] > args.threads + 1
    print(f"\nload average at end {load_end[0]:.2f} {load_end[1]:.2f} {load_end[2]:.2f}; total "
          f"{time.perf_counter() - started:.0f} s"
          + ("; NOISY: other work was running (1-min load above 0.5 at start or above threads + 1 at end), so "
             "compare ratios within a part, not absolute times across runs" if noisy else ""))
    print(f"'vs baseline' = baseline median / variant median (above 1: faster)\n\n{table.markdown()}")


if __name__ == "__main__":
    main()
