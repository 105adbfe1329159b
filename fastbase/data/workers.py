"""Layer 2: how many DataLoader worker processes to use: `default_num_workers` picks them for this
machine and the device the model trains on; `resolve_num_workers` checks a number asked for and
falls back to 0 where workers are known to die (a `/dev/shm` too small for their batches)."""
from __future__ import annotations

import multiprocessing
import shutil
import sys
import warnings

import torch

from ..core import default_device, num_cpus
from .base import DataError

__all__ = ["default_num_workers", "resolve_num_workers", "shm_size"]

_MIN_SHM = 256 * 2**20  # below this, worker processes die with 'Bus error' on large batches


def shm_size() -> int | None:
    """Bytes of shared memory (`/dev/shm`) free, or None where there is no such folder."""
    try:
        return shutil.disk_usage("/dev/shm").free
    except (FileNotFoundError, OSError):
        return None


def default_num_workers(device: torch.device | str | None = None) -> int:
    """DataLoader workers that suit this machine and the device the model trains on.

    Decoding and augmentation run in the workers, so even when the model trains on the CPU two
    workers keep the first epoch fed; once a loader's items are in fastbase's item cache it loads
    in the main process (`DeviceDataLoader.in_memory`). On 2 cores this default is as fast as the
    best fixed choice for a compute-bound and a loading-bound model, while 1 worker is slower than 0
    (`python bench/data_loader.py`; bench/RESULTS.md). With a GPU the cores are free for decoding.
    Spawn-based platforms (Windows, macOS) and a tiny `/dev/shm` (Docker's 64 MB default) get 0,
    where workers are known to hang or die.
    """
    device = torch.device(device) if device is not None else default_device()
    cpus = num_cpus()
    if multiprocessing.get_start_method(allow_none=True) == "spawn" or sys.platform in ("win32", "darwin"):
        return 0
    if cpus < 2:
        return 0
    workers = min(4, max(2, cpus // 2)) if device.type == "cpu" else min(8, cpus - 1)
    shm = shm_size()
    if workers > 0 and shm is not None and shm < _MIN_SHM:
        warnings.warn(f"/dev/shm has only {shm / 2**20:.0f} MB free, too little for DataLoader workers, so fastbase "
                      "loads data in the main process (num_workers=0), which is slower. Give the container more "
                      "shared memory (e.g. `docker run --shm-size=1g`).", RuntimeWarning, stacklevel=2)
        return 0
    return workers


def resolve_num_workers(num_workers: int | None, device=None) -> int:
    """`num_workers` as asked, or the default for `device` when None; 0, with a warning, where worker
    processes are known to die (a `/dev/shm` too small for their batches, as in Docker's default)."""
    if num_workers is None:
        return default_num_workers(device)
    if num_workers < 0:
        raise DataError(f"num_workers must be 0 or more, got {num_workers}.")
    shm = shm_size()
    if num_workers > 0 and shm is not None and shm < _MIN_SHM:
        warnings.warn(f"/dev/shm has only {shm / 2**20:.0f} MB free: DataLoader workers die there with 'Bus error', "
                      f"so fastbase loads with num_workers=0 instead of {num_workers}. Give the container more "
                      "shared memory (e.g. `docker run --shm-size=1g`) to use workers.", RuntimeWarning, stacklevel=3)
        return 0
    return num_workers
