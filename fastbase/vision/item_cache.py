"""Layer 6: decoded, resized images kept in memory that the loader's worker processes share.

What a worker does for an item (decode the file, resize it to the canvas) is the same every epoch:
every random choice of the training augmentation is made later, on the batch. So the result can be
kept and reused: from the second epoch on, an item costs a copy instead of a JPEG decode and an
antialiased resize, which are most of the loader's work (`bench/data_loader.py`).

The cache is one anonymous shared memory map, made in the main process before the loader forks its
workers: a worker's write is seen by the others and by the main process, pages are only taken when
an item is written, and the memory goes back when the dataset is collected. A cache that reaches a
process by pickling (workers started with `spawn` or `forkserver`) is off there: items are then
decoded as without it, and the results are the same.
"""
from __future__ import annotations

import mmap
import os

import torch

__all__ = ["ItemCache", "cache_budget", "cache_nbytes"]


def cache_budget() -> int:
    """Bytes an automatic item cache may take: an eighth of the machine's physical memory."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 8
    except (AttributeError, ValueError, OSError):  # no sysconf (Windows): 1 GiB
        return 1 << 30


def cache_nbytes(n: int, item_shape) -> int:
    """Bytes of an ItemCache of `n` uint8 items of `item_shape`, with their pairs and flags."""
    c, h, w = item_shape
    return n * (c * h * w + 9)


class ItemCache:
    """`n` items of one shape `(C, H, W)` (uint8) with an int pair each (the item's `src_hw`).

    `get(i)` is `(x, pair)` once `put(i, x, pair)` ran in any process sharing the map, else None."""

    def __init__(self, n: int, item_shape):
        self.n, self.item_shape = int(n), tuple(int(s) for s in item_shape)
        self.nbytes = cache_nbytes(self.n, self.item_shape)
        self._map = mmap.mmap(-1, max(1, self.nbytes))  # anonymous and MAP_SHARED: inherited by forked workers
        flat = torch.frombuffer(self._map, dtype=torch.uint8)
        # int32 pairs first (aligned at 0), then the filled flags, then the images
        self._pairs = flat[:8 * self.n].view(torch.int32).view(self.n, 2)
        self._filled = flat[8 * self.n:9 * self.n]
        self._items = flat[9 * self.n:self.nbytes].view(self.n, *self.item_shape)

    @property
    def enabled(self) -> bool:
        return self._map is not None

    def get(self, i: int):
        if self._map is None or not self._filled[i]:
            return None
        return self._items[i], (int(self._pairs[i, 0]), int(self._pairs[i, 1]))

    def put(self, i: int, x: torch.Tensor, pair) -> None:
        if self._map is None or tuple(x.shape) != self.item_shape:
            return
        self._items[i].copy_(x)
        self._pairs[i] = torch.tensor(pair, dtype=torch.int32)
        self._filled[i] = 1  # last: a reader in another process sees the flag only after the data

    @property
    def n_filled(self) -> int:
        return 0 if self._map is None else int(self._filled.sum())

    def __getstate__(self):  # the map cannot travel: a pickled copy (spawned workers) is switched off
        return {"n": self.n, "item_shape": self.item_shape, "nbytes": self.nbytes}

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._map = self._pairs = self._filled = self._items = None

    def __repr__(self):
        state = f"{self.n_filled}/{self.n} filled" if self.enabled else "off in this process"
        return f"ItemCache({self.n} x {self.item_shape}, {self.nbytes / 2**20:.0f} MB, {state})"
