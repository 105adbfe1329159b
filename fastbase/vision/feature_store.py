"""Layer 6: where `FeatureCache` keeps cached features: a tensor in memory, bounded by a budget, or
a memory-mapped file (for sets whose features do not fit in memory)."""
from __future__ import annotations

import errno
import math
import os
import shutil
import sys
from pathlib import Path

import torch

__all__ = ["CacheTooBig", "available_memory", "feature_storage"]


class CacheTooBig(Exception):
    """The cache would not fit in its memory (or disk) budget; the message has the figures."""


def available_memory() -> int | None:
    """Bytes of memory available to new allocations (Linux MemAvailable), or None where unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def feature_storage(shape: tuple, like: torch.Tensor, total_bytes: int, max_memory: int | None = None,
                    file: Path | None = None) -> torch.Tensor:
    """An uninitialised tensor of `shape` with `like`'s dtype and device, for one set of a cache that
    will take `total_bytes` in all. In memory, the cache may take `max_memory` bytes (default: half
    the memory available now, on the CPU); with `file`, the tensor is mapped onto that file (written
    as filled) if its disk has room. Raises `CacheTooBig` with the figures otherwise."""
    need = f"{total_bytes / 2**20:.0f} MB"
    if file is not None:
        file.parent.mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(file.parent).free
        if total_bytes > free:
            raise CacheTooBig(f"the cache needs {need} and {file.parent} has {free / 2**20:.0f} MB free")
        file.unlink(missing_ok=True)
        _reserve(file, math.prod(shape) * like.element_size(), need)
        mapped = torch.from_file(str(file), shared=True, size=math.prod(shape), dtype=like.dtype)
        return mapped.view(shape).to(like.device)
    limit = max_memory
    if limit is None and like.device.type == "cpu":
        available = available_memory()
        limit = None if available is None else available // 2
    if limit is not None and total_bytes > limit:
        raise CacheTooBig(f"the cache would take {need} and the limit is {limit / 2**20:.0f} MB (max_memory; "
                          "default half the available memory): pass FeatureCache(memmap=True) to keep it in files "
                          "under the data folder, or fewer n_views")
    return torch.empty(shape, dtype=like.dtype, device=like.device)


def _reserve(file: Path, nbytes: int, need: str) -> None:
    """Create `file` with `nbytes` allocated on disk now, so that a disk that fills up is found here, as
    an error naming the file, and not later as a crash (SIGBUS) while the mapped cache is written."""
    fd = os.open(file, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        if sys.platform.startswith("linux"):
            os.posix_fallocate(fd, 0, nbytes)
        else:
            os.ftruncate(fd, nbytes)
    except OSError as e:
        if e.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EFBIG):
            os.ftruncate(fd, nbytes)  # a file system without fallocate: the size alone, as before
            return
        os.close(fd)
        fd = None
        file.unlink(missing_ok=True)
        raise CacheTooBig(f"the cache needs {need} in {file} and the disk refused them ({e.strerror})") from e
    finally:
        if fd is not None:
            os.close(fd)
