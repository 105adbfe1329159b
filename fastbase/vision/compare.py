"""Layer 6: choosing a backbone on your own data: `compare_archs` trains each (architecture, mode)
pair with the same budget and schedule and returns one table of accuracy, training time, inference
latency, size and memory; `plot_compare` draws the trade-offs; `fastbase compare` (in
`fastbase.cli`) does both from the shell.

Modes: `head` trains a new head on the frozen pretrained body; `full` trains the whole pretrained
network with discriminative learning rates (`slice(lr/100, lr)` over the layer groups: the new head
at the lr found, the first body group at a hundredth of it); `scratch` trains the whole network
from random weights (`pretrained=False`).
"""
from __future__ import annotations

import csv
import ctypes
import gc
import io
import math
import re
import statistics
import sys
import time

import torch

from ..callback import Callback
from ..core import FastbaseError, Path, set_seed
from ..data import DatasetType, imagenet_stats
from ..figures import save_figure
from ..metrics import accuracy, accuracy_thresh
from .learner import cnn_learner
from .models import arch_meta, arch_name
from .timm_models import resolve_arch

__all__ = ["COLUMNS", "MODES", "TrainTimer", "compare_archs", "learner_for", "markdown_table",
           "measure_latency", "pareto_front", "plot_compare", "resolve_arch", "save_compare", "table_records"]

MODES = ("head", "full", "scratch")
COLUMNS = ("arch", "mode", "pretrained", "lr", "accuracy", "error_rate", "valid_loss", "train_s_per_epoch",
           "lr_find_s", "latency_bs1_ms", "latency_bs4_ms", "params_total", "params_trainable", "peak_mem_mb",
           "model_mb", "error")
MODES_HELP = ("Modes: head = new head on the frozen pretrained body; full = whole pretrained network with "
              "discriminative learning rates; scratch = random weights.")


def learner_for(data, arch, mode: str, **learn_kwargs):
    """The Learner `compare_archs` trains for (`arch`, `mode`): `head` has its pretrained body frozen,
    `full` is pretrained and unfrozen, `scratch` has random weights, all trainable."""

    if mode not in MODES:
        raise FastbaseError(f"Unknown mode {mode!r}; the modes are {', '.join(MODES)}.")
    learn = cnn_learner(data, resolve_arch(arch), pretrained=mode != "scratch", **learn_kwargs)
    if mode == "head":
        learn.freeze()
    else:
        learn.unfreeze()
    return learn


def measure_latency(model, input_shape, batch_sizes=(1, 4), runs: int = 10, warmup: int = 3,
                    device=None) -> dict[int, float]:
    """Median milliseconds of `runs` forward passes per batch size, after `warmup` untimed ones, in
    eval mode under `torch.inference_mode` on random input of `input_shape` (C, H, W)."""
    device = torch.device(device or next(model.parameters()).device)
    was_training, result = model.training, {}
    model.eval()
    try:
        with torch.inference_mode():
            for bs in batch_sizes:
                x = torch.rand(bs, *input_shape, device=device)
                times = []
                for i in range(warmup + runs):
                    _sync(device)
                    start = time.perf_counter()
                    model(x)
                    _sync(device)
                    if i >= warmup:
                        times.append(time.perf_counter() - start)
                result[bs] = 1000 * statistics.median(times)
    finally:
        model.train(was_training)
    return result


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class _PeakMemory:
    """Memory a pair adds at its peak, in MiB. CUDA: `torch.cuda.max_memory_allocated` above the
    start (exact for tensors). Linux CPU: the process's peak resident memory (VmHWM, reset at the
    start through /proc/self/clear_refs) above its resident memory at the start, after handing
    freed heap memory back to the system (glibc `malloc_trim`; without it, memory an earlier pair
    freed is reused without showing). It counts every allocation of the process (weights, gradients,
    optimizer state, activations, batches) but not loader worker processes. Elsewhere: growth of the
    process's lifetime peak (getrusage), which shows only a new record (0 for a smaller pair)."""

    def __init__(self, device):
        self.device = torch.device(device)

    def start(self) -> None:
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            self.how, self.base = "cuda", torch.cuda.memory_allocated(self.device)
            return
        _malloc_trim()
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            self.how, self.base = "hwm", _status_kib("VmRSS") * 1024
        except OSError:
            self.how, self.base = "rusage", _maxrss_bytes()

    def stop(self) -> float:
        if self.how == "cuda":
            peak = torch.cuda.max_memory_allocated(self.device)
        else:
            peak = _status_kib("VmHWM") * 1024 if self.how == "hwm" else _maxrss_bytes()
        return max(0, peak - self.base) / 2**20


def _malloc_trim() -> None:
    """Return freed heap memory to the system (glibc only; elsewhere nothing happens)."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        return int(re.search(rf"^{field}:\s+(\d+)", f.read(), re.MULTILINE).group(1))


def _maxrss_bytes() -> int:
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # bytes on macOS, KiB on Linux


class TrainTimer(Callback):
    """Seconds of each epoch's training phase (without validation)."""

    def __init__(self):
        self.seconds = []

    def before_train(self):
        self._start = time.perf_counter()

    def after_train(self):
        self.seconds.append(time.perf_counter() - self._start)


def _pairs(archs, modes, scratch_only) -> list[tuple[object, str]]:
    """(arch, mode) in order; an arch in `scratch_only` runs once, as 'scratch', whatever `modes` says."""

    bad = [m for m in modes if m not in MODES]
    if bad or not modes:
        raise FastbaseError(f"modes must be some of {', '.join(MODES)}; got {list(modes)}.")
    no_weights = {arch_name(resolve_arch(a)) for a in scratch_only}
    pairs = []
    for arch in archs:
        if arch_name(resolve_arch(arch)) in no_weights:
            pairs.append((arch, "scratch"))
        else:
            pairs += [(arch, mode) for mode in modes]
    return pairs


def compare_archs(data, archs, modes=("head", "full", "scratch"), epochs: int = 1, lr: float | None = None,
                  size=None, scratch_only=(), seed: int = 0, lr_find_iters: int = 50, latency_runs: int = 10,
                  progress: bool = True, **learn_kwargs):
    """Train every (architecture, mode) pair of `archs` x `modes` on `data` with the same budget and
    schedule (`fit_one_cycle(epochs)`, seeded with `seed`), and measure each. Returns a pandas DataFrame
    when pandas is installed, else a list of dicts, one row per pair with `COLUMNS`.

    `lr` (the max lr; the head's in `full` mode) comes from `lr_find`'s valley for each pair when None.
    `size` (int or (h, w)) is the input size for the latency timings, default the data's image size;
    training uses `data` as it is, so build it at the size to train at (`fastbase compare --size`
    does). Archs in `scratch_only` (e.g. without pretrained weights on this machine) run once from
    scratch instead of in every mode. A pair that fails (an arch that cannot take the input size,
    missing pretrained weights) gets its error in the `error` column. `data` is not changed:
    pairs train on a copy, normalised once with ImageNet stats when `data` is not normalised.
    `peak_mem_mb` is the memory a pair adds at its peak: exact tensor memory on CUDA, the process's
    resident memory on the CPU (coarse, see `_PeakMemory`). Other keyword arguments go to
    `cnn_learner` (e.g. `ps`, `silent`).
    """

    if epochs < 1:
        raise FastbaseError(f"epochs must be at least 1, got {epochs}.")
    pairs = _pairs(list(archs), list(modes), scratch_only)
    data = data.copy()
    if data.norm is None:
        meta = arch_meta(resolve_arch(pairs[0][0])) if pairs else None
        data.normalize(meta.stats if meta is not None else imagenet_stats)
    x = data.one_batch(DatasetType.Valid)[0]
    input_shape = (x.shape[1], *_size_hw(size, x.shape[-2:]))
    rows = []
    for i, (arch, mode) in enumerate(pairs, 1):
        name = arch if isinstance(arch, str) else arch_name(arch)
        if progress:
            print(f"compare [{i}/{len(pairs)}] {name} / {mode} ...", flush=True)
        row = dict.fromkeys(COLUMNS)
        row.update(arch=name, mode=mode, pretrained=mode != "scratch")
        try:
            row.update(_run_pair(data, arch, mode, epochs, lr, seed, lr_find_iters, input_shape, latency_runs,
                                 learn_kwargs))
        except Exception as e:  # noqa: BLE001 - a failing pair is reported in its row, the others still run
            row["error"] = f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"[:300]
        if progress:
            print(f"compare [{i}/{len(pairs)}] {name} / {mode}: " + (f"FAILED {row['error']}" if row["error"] else
                  f"accuracy {row['accuracy']:.4f}, {row['train_s_per_epoch']:.1f} s/epoch, "
                  f"{row['latency_bs1_ms']:.1f} ms at bs 1"), flush=True)
        rows.append(row)
    return _as_table(rows)


def _size_hw(size, default) -> tuple[int, int]:
    if size is None:
        return int(default[0]), int(default[1])
    return (int(size), int(size)) if isinstance(size, int) else (int(size[0]), int(size[1]))


def _run_pair(data, arch, mode, epochs, lr, seed, lr_find_iters, input_shape, latency_runs, learn_kwargs) -> dict:
    set_seed(seed, deterministic=torch.are_deterministic_algorithms_enabled())
    memory = _PeakMemory(data.device)
    memory.start()
    metric = accuracy_thresh if data.multi_label else accuracy
    learn = learner_for(data, arch, mode, metrics=[metric], **learn_kwargs)
    row = {"params_total": sum(p.numel() for p in learn.model.parameters()),
           "params_trainable": sum(p.numel() for p in learn.model.parameters() if p.requires_grad)}
    if lr is None:
        start = time.perf_counter()
        lr = learn.lr_find(num_it=lr_find_iters).valley
        row["lr_find_s"] = time.perf_counter() - start
    timer = TrainTimer()
    learn.fit_one_cycle(epochs, slice(lr / 100, lr) if mode == "full" else lr, callbacks=[timer])
    row["peak_mem_mb"] = memory.stop()
    valid_loss, acc = learn.validate()[:2]
    latency = measure_latency(learn.model, input_shape, (1, 4), runs=latency_runs)
    buffer = io.BytesIO()
    torch.save(learn.model.state_dict(), buffer)
    row.update(lr=float(lr), accuracy=float(acc), error_rate=1 - float(acc), valid_loss=float(valid_loss),
               train_s_per_epoch=statistics.mean(timer.seconds), latency_bs1_ms=latency[1],
               latency_bs4_ms=latency[4], model_mb=buffer.getbuffer().nbytes / 2**20)
    return row


def _as_table(rows: list[dict]):
    try:
        import pandas as pd
    except ImportError:
        return rows
    return pd.DataFrame(rows, columns=list(COLUMNS))


def table_records(table) -> list[dict]:
    """Rows as dicts, from a DataFrame or a list of dicts; NaN (pandas' missing value) as None."""
    rows = table.to_dict("records") if hasattr(table, "to_dict") else list(table)
    return [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()} for r in rows]


def pareto_front(costs, scores) -> list[int]:
    """Indices of the Pareto-best points: no other point has a lower-or-equal cost and a higher-or-equal
    score with one of them strictly better."""
    points = list(zip(costs, scores))
    return [i for i, (c, s) in enumerate(points)
            if not any(c2 <= c and s2 >= s and (c2 < c or s2 > s) for c2, s2 in points)]


def plot_compare(table, latency_bs: int = 1):
    """Validation accuracy against training seconds per epoch, and against inference latency at batch
    size `latency_bs` (1 or 4): Pareto-best pairs (nothing else is both cheaper and more accurate) as
    red stars joined by a line, the others grey. Failed pairs are left out. Returns the Figure."""
    import matplotlib.pyplot as plt

    rows = [r for r in table_records(table) if not r.get("error") and r.get("accuracy") is not None]
    panels = [("train_s_per_epoch", "training seconds per epoch"),
              (f"latency_bs{latency_bs}_ms", f"inference latency at batch size {latency_bs} (ms)")]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8))
    for ax, (column, label) in zip(axes, panels):
        points = [(r[column], r["accuracy"], f"{r['arch']}/{r['mode']}") for r in rows if r.get(column) is not None]
        best = set(pareto_front([p[0] for p in points], [p[1] for p in points]))
        for i, (cost, acc, name) in enumerate(points):
            ax.scatter(cost, acc, marker="*" if i in best else "o", s=160 if i in best else 50,
                       color="tab:red" if i in best else "tab:gray", zorder=3)
            ax.annotate(name, (cost, acc), textcoords="offset points", xytext=(5, 5), fontsize=8)
        front = sorted(points[i][:2] for i in best)
        if front:
            ax.plot(*zip(*front), color="tab:red", alpha=0.5, label="Pareto-best")
            ax.legend(loc="best", fontsize=8)
        ax.set(xlabel=label, ylabel="validation accuracy", title=f"accuracy vs {label.split(' (')[0]}")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


_FORMATS = {"lr": "{:.2e}", "accuracy": "{:.4f}", "error_rate": "{:.4f}", "valid_loss": "{:.4f}",
            "train_s_per_epoch": "{:.1f}", "lr_find_s": "{:.1f}", "latency_bs1_ms": "{:.1f}",
            "latency_bs4_ms": "{:.1f}", "params_total": "{:,}", "params_trainable": "{:,}", "peak_mem_mb": "{:.0f}",
            "model_mb": "{:.1f}"}


def markdown_table(table) -> str:
    """The table as Markdown, numbers rounded for reading (the CSV keeps them whole)."""
    rows = table_records(table)
    cells = [[("" if r.get(c) is None else _FORMATS.get(c, "{}").format(r[c])).replace("|", "/") for c in COLUMNS]
             for r in rows]
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in cells]) + "\n"


def save_compare(table, folder) -> list[Path]:
    """Write `compare.csv`, `compare.md` and `compare.png` (from `plot_compare`) into `folder`."""

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rows = table_records(table)
    with open(folder / "compare.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(COLUMNS))
        writer.writeheader()
        writer.writerows({c: r.get(c) for c in COLUMNS} for r in rows)
    (folder / "compare.md").write_text(markdown_table(rows))
    fig = plot_compare(rows)
    save_figure(fig, folder / "compare.png", dpi=90)
    return [folder / name for name in ("compare.csv", "compare.md", "compare.png")]
