"""Layer 0: memory of the GPU and of this process, under fastai v1's `fastai.utils.mem` names.

The GPU figures come from the CUDA driver (`torch.cuda.mem_get_info`), in MB; on a machine without
CUDA every GPU function answers zeros (`GPUMemory(0, 0, 0)`, `gpu_with_max_free_mem() == (None, 0)`)
rather than failing, so a notebook written for a GPU still runs on a CPU. `cpu_rss_mb` is the
resident memory of this process.
"""
from __future__ import annotations

import functools
import os
import time
from typing import NamedTuple

import torch

__all__ = ["GPUMemTrace", "GPUMemory", "b2mb", "cpu_rss_mb", "gpu_mem_get", "gpu_mem_get_all", "gpu_mem_get_free",
           "gpu_mem_get_free_no_cache", "gpu_mem_get_used", "gpu_mem_get_used_fast", "gpu_mem_get_used_no_cache",
           "gpu_mem_trace", "gpu_with_max_free_mem", "have_cuda", "preload_pytorch"]


class GPUMemory(NamedTuple):
    """A GPU's memory in MB."""
    total: int
    free: int
    used: int


def b2mb(num: int) -> int:
    """Bytes to whole MB (2**20 bytes), rounded down."""
    return int(num) >> 20


def have_cuda() -> bool:
    return torch.cuda.is_available()


def _device(id: int | None) -> int:
    return torch.cuda.current_device() if id is None else int(id)


def gpu_mem_get(id: int | None = None) -> GPUMemory:
    """(total, free, used) MB of GPU `id` (default: the current one) as the driver sees it, cache
    held by PyTorch counted as used. Zeros without CUDA."""
    if not have_cuda():
        return GPUMemory(0, 0, 0)
    free, total = torch.cuda.mem_get_info(_device(id))
    return GPUMemory(b2mb(total), b2mb(free), b2mb(total - free))


def gpu_mem_get_all() -> list[GPUMemory]:
    """`gpu_mem_get` of every GPU; an empty list without CUDA."""
    return [gpu_mem_get(i) for i in range(torch.cuda.device_count())] if have_cuda() else []


def gpu_mem_get_free() -> int:
    """Free MB of the current GPU (PyTorch's cache counts as used); 0 without CUDA."""
    return gpu_mem_get().free


def _gpu_mem_no_cache() -> GPUMemory:
    """`gpu_mem_get()` once PyTorch has released its cache (`torch.cuda.empty_cache`)."""
    if have_cuda():
        torch.cuda.empty_cache()
    return gpu_mem_get()


def gpu_mem_get_free_no_cache() -> int:
    """Free MB of the current GPU once PyTorch has released its cache."""
    return _gpu_mem_no_cache().free


def gpu_mem_get_used() -> int:
    """Used MB of the current GPU, PyTorch's cache included; 0 without CUDA."""
    return gpu_mem_get().used


def gpu_mem_get_used_no_cache() -> int:
    """Used MB of the current GPU once PyTorch has released its cache."""
    return _gpu_mem_no_cache().used


def gpu_mem_get_used_fast(gpu_handle=None) -> int:
    """MB PyTorch's tensors occupy on the GPU `gpu_handle` (a device index; default the current one),
    without asking the driver; 0 without CUDA."""
    return b2mb(torch.cuda.memory_allocated(_device(gpu_handle))) if have_cuda() else 0


def gpu_with_max_free_mem() -> tuple[int | None, int]:
    """(index, free MB) of the GPU with the most free memory; (None, 0) without CUDA."""
    free = [m.free for m in gpu_mem_get_all()]
    if not free:
        return None, 0
    best = max(range(len(free)), key=free.__getitem__)
    return best, free[best]


def preload_pytorch() -> None:
    """Create the CUDA context now (it takes a few hundred MB), so later measurements leave it out."""
    if have_cuda():
        torch.ones((1, 1), device="cuda")


def cpu_rss_mb() -> float:
    """Resident memory of this process in MB (psutil when installed, else /proc; 0.0 where neither is)."""
    try:
        import psutil
    except ImportError:
        try:
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
        except (OSError, ValueError, IndexError):
            return 0.0
    return psutil.Process().memory_info().rss / 2**20


class GPUMemTrace:
    """Measures GPU memory between `start()` (or entering the `with` block) and now: `data()` gives
    (used MB delta, peak MB above the start) from PyTorch's allocator. `report(note)` prints them.
    On a CPU both are 0."""

    def __init__(self, silent: bool = False, ctx: str | None = None, on_exit_report: bool = True):
        self.silent, self.ctx, self.on_exit_report = silent, ctx, on_exit_report
        self.start()

    def start(self) -> None:
        self._start = gpu_mem_get_used_fast()
        if have_cuda():
            torch.cuda.reset_peak_memory_stats()
        self._time = time.monotonic()

    def data(self) -> tuple[int, int]:
        if not have_cuda():
            return 0, 0
        return gpu_mem_get_used_fast() - self._start, b2mb(torch.cuda.max_memory_allocated()) - self._start

    def report(self, subctx: str | None = None) -> str:
        used, peak = self.data()
        where = " ".join(c for c in (self.ctx, subctx) if c)
        text = f"△Used Peaked MB: {used:6,} {peak:6,}" + (f" ({where})" if where else "")
        if not self.silent:
            print(text)
        return text

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        if self.on_exit_report:
            self.report("exit")

    def __repr__(self):
        used, peak = self.data()
        return f"GPUMemTrace(used={used} MB, peak={peak} MB)"


def gpu_mem_trace(func):
    """Decorator: reports the GPU memory `func` used and peaked at, under its name."""
    @functools.wraps(func)
    def traced(*args, **kwargs):
        with GPUMemTrace(ctx=func.__qualname__):
            return func(*args, **kwargs)
    return traced
