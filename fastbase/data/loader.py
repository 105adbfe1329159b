"""Layer 2: loading batches onto the device: `DeviceDataLoader` wraps a torch DataLoader and runs
the batch transforms (augmentation, then the `Normalizer`) in the worker processes or on the
device, whichever is faster there; the worker count comes from `workers`."""
from __future__ import annotations

import os
import weakref
from enum import IntEnum

import torch
from torch.utils.data import DataLoader

from ..core import listify, to_device
from .base import DataError

__all__ = ["CollateThenTransform", "DeviceDataLoader", "Normalizer", "TfmOrder", "apply_tfms"]


class TfmOrder(IntEnum):
    """Where a batch transform runs in a `DeviceDataLoader`: in increasing `tfm.order` (not the
    callbacks' `Order`: these act on batches as the loader makes them, before any callback sees them)."""
    COLLATED = 0  # a transform that sets no order: first, on the batch as collated (uint8 images, their sizes)
    TO_FLOAT = 10  # uint8 -> float in [0, 1]: BatchAugment (training: augments on the way) or ToFloat; one per loader
    INPUTS = 50  # after the float images, before normalisation: makes the model's inputs from them (a GAN's noise)
    NORMALIZE = 100  # after every augmentation, so the statistics apply to the final float images


class Normalizer:
    """Batch transform that normalises `x` channel-wise (dim 1) with `mean`/`std`; `denorm` undoes it.
    `do_x=False` leaves the inputs alone, `do_y=True` normalises targets that are images too
    (`denorm_y` undoes it), as fastai v1's `normalize(stats, do_x=, do_y=)`."""
    order = TfmOrder.NORMALIZE

    def __init__(self, mean, std, do_x: bool = True, do_y: bool = False):
        self.mean, self.std = torch.as_tensor(mean, dtype=torch.float32), torch.as_tensor(std, dtype=torch.float32)
        if (self.std <= 0).any():
            raise DataError(f"Normalisation std must be positive, got {self.std.tolist()}.")
        self.do_x, self.do_y = bool(do_x), bool(do_y)
        self._cache = {}

    def _stats(self, x: torch.Tensor):
        """(mean, std, -mean/std, 1/std) shaped to broadcast over `x`'s dim 1, cached per device/dtype."""
        key = (x.device, x.dtype, x.dim())
        if x.dim() > 1 and x.shape[1] != len(self.mean) and len(self.mean) != 1:
            raise DataError(f"Normalisation statistics for {len(self.mean)} channels, but the batch has {x.shape[1]} "
                            f"(shape {tuple(x.shape)}): e.g. imagenet_stats on gray images (convert_mode='L'). Use "
                            "normalize() (statistics of a batch) or statistics with one value per channel.")
        if key not in self._cache:
            # normal tensors even when first built during validation (inference mode), so training may use them
            with torch.inference_mode(False):
                shape = (1, -1) + (1,) * (x.dim() - 2)
                mean, std = self.mean.to(x.device, x.dtype).view(shape), self.std.to(x.device, x.dtype).view(shape)
                self._cache[key] = (mean, std, -mean / std, 1 / std)
        return self._cache[key]

    def _norm(self, x: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        _, _, shift, scale = self._stats(x)
        return torch.addcmul(shift, x, scale, out=out)  # (x - mean) / std in one pass over the batch

    def _denorm(self, x: torch.Tensor) -> torch.Tensor:
        mean, std, _, _ = self._stats(x)
        return torch.addcmul(mean, x, std)

    def norm(self, x: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """Inputs normalised (unchanged with `do_x=False`)."""
        return self._norm(x, out) if self.do_x else x

    def denorm(self, x: torch.Tensor) -> torch.Tensor:
        return self._denorm(x) if self.do_x else x

    def norm_y(self, y, out: torch.Tensor | None = None):
        """Targets normalised with `do_y` (images as targets), else unchanged."""
        return self._norm(y, out) if self.do_y else y

    def denorm_y(self, y):
        return self._denorm(y) if self.do_y else y

    def __call__(self, batch):
        x, *rest = batch
        if self.do_y and rest:
            rest[0] = self.norm_y(rest[0])
        return (self.norm(x), *rest)

    def apply_(self, batch):
        """`__call__`, writing into the batch's own tensors: for a batch that an earlier transform has
        just made (see `apply_tfms`). On the CPU a new batch-sized result costs more than the arithmetic:
        the pages of a fresh allocation are faulted in (bench/RESULTS.md, "Batch transforms")."""
        x, *rest = batch
        if not x.is_floating_point() or x.requires_grad:
            return self(batch)
        if self.do_y and rest:
            rest[0] = self.norm_y(rest[0], out=rest[0])
        return (self.norm(x, out=x if self.do_x else None), *rest)

    def __repr__(self):
        flags = "" if (self.do_x, self.do_y) == (True, False) else f", do_x={self.do_x}, do_y={self.do_y}"
        return f"Normalizer(mean={self.mean.tolist()}, std={self.std.tolist()}{flags})"


def apply_tfms(batch, tfms):
    """Run batch transforms in turn. After one that declares `makes_new_batch` (its `x` is a tensor it
    made, held by nothing else), a transform with an `apply_` method gets to work in place."""
    fresh = False
    for tfm in tfms:
        in_place = fresh and hasattr(tfm, "apply_")
        batch = tfm.apply_(batch) if in_place else tfm(batch)
        fresh = in_place or getattr(tfm, "makes_new_batch", False)  # any other transform may return anything
    return batch


class CollateThenTransform:
    """A `collate_fn` that also runs batch transforms, so that they run inside the worker processes."""

    def __init__(self, collate_fn, tfms):
        self.collate_fn, self.tfms = collate_fn, list(tfms)

    def __call__(self, items):
        return apply_tfms(self.collate_fn(items), self.tfms)


class DeviceDataLoader:
    """A DataLoader whose batches arrive on `device`, after its batch transforms (in `order`).

    Where the transforms run depends on the device. On a GPU (or with no worker processes) they run
    here, on the batch once it is on the device. On the CPU with workers, they run at the end of the
    workers' `collate_fn`: the augmentation then runs in parallel with the training step rather than
    in its process, one thread per worker. The DataLoader is rebuilt when the transforms change, so
    that the workers see the new list.
    """

    def __init__(self, dl: DataLoader, device, tfms=None):
        self._current = [dl]  # `dl`, in a list that the finalizer below shares
        # Freed with a Learner by the garbage collector, the DataLoader's iterator could be finalised
        # after its queues, and its worker processes would not stop (see `_release_workers`); the
        # finalizer holds the DataLoader outside that garbage and stops the workers first.
        weakref.finalize(self, _stop_workers, self._current, os.getpid()).atexit = False
        self.device = torch.device(device)
        self._local: DataLoader | None = None  # the in-process twin of `dl`, once its items are in memory
        self.in_process_when_cached = True  # False: keep the workers even then (see `in_memory`)
        self.collate_fn = dl.collate_fn.collate_fn if isinstance(dl.collate_fn, CollateThenTransform) else dl.collate_fn
        self.tfms = sorted(listify(tfms), key=lambda t: getattr(t, "order", TfmOrder.COLLATED))
        self._place_tfms()

    @property
    def dl(self) -> DataLoader:
        return self._current[0]

    @dl.setter
    def dl(self, value: DataLoader) -> None:
        self._current[0] = value

    def __len__(self):
        return len(self.dl)

    @property
    def dataset(self):
        return self.dl.dataset

    @property
    def batch_size(self):
        return self.dl.batch_size

    @property
    def num_workers(self):
        return self.dl.num_workers

    @property
    def tfms_in_workers(self) -> bool:
        """True when the batch transforms run in the worker processes (CPU device, workers > 0)."""
        return self.device.type == "cpu" and self.dl.num_workers > 0

    @property
    def in_memory(self) -> bool:
        """True when worker processes would only copy items already in memory: the dataset reports
        (`fraction_cached`) that at least 90% of its items are cached, e.g. from the first epoch.
        `__iter__` then loads in this process, and the batch transforms run here on all of torch's
        threads: a copy costs less than the hand-off from a worker, and no worker competes with the
        model for the cores (`bench/data_loader.py` measures both)."""
        if self.dl.num_workers == 0 or not self.in_process_when_cached:
            return False
        fraction = getattr(self.dl.dataset, "fraction_cached", None)
        return fraction is not None and (fraction() or 0.0) >= 0.9

    def _place_tfms(self) -> None:
        self._local = None
        if self.tfms_in_workers:
            self.dl = self._rebuilt(collate_fn=CollateThenTransform(self.collate_fn, self.tfms))

    def _rebuilt(self, **changes) -> DataLoader:
        dl = self.dl
        args = {"batch_size": dl.batch_size, "num_workers": dl.num_workers, "collate_fn": self.collate_fn,
                "drop_last": dl.drop_last, "pin_memory": dl.pin_memory, "worker_init_fn": dl.worker_init_fn,
                "persistent_workers": dl.persistent_workers, "generator": dl.generator,
                "shuffle": isinstance(dl.sampler, torch.utils.data.RandomSampler)}
        args.update(changes)
        if args["num_workers"] == 0:
            args["persistent_workers"] = False
        dataset = args.pop("dataset", dl.dataset)
        return type(dl)(dataset, **args)  # the same kind of loader (e.g. a tabular one that slices tensors)

    def add_tfm(self, tfm) -> None:
        self.tfms = sorted([*self.tfms, tfm], key=lambda t: getattr(t, "order", TfmOrder.COLLATED))
        self._place_tfms()

    def remove_tfm(self, tfm) -> None:
        self.tfms = [t for t in self.tfms if t is not tfm]
        self._place_tfms()

    def proc_batch(self, batch, in_workers: bool | None = None):
        """Move a collated batch to the device and apply the transforms that did not run in workers
        (`in_workers`: whether they did; default `tfms_in_workers`)."""
        batch = to_device(batch, self.device)
        if not (self.tfms_in_workers if in_workers is None else in_workers):
            batch = apply_tfms(batch, self.tfms)
        return batch

    @property
    def fetches_batches_here(self) -> bool:
        """True when batches are read in this process from a dataset that gathers a whole batch at
        once (`__getitems__`, e.g. tensors in memory) and nothing is pinned: `__iter__` then runs the
        batch sampler itself, without torch's per-batch iterator bookkeeping (a large share of a batch's
        time for tiny models: bench/RESULTS.md, "collab.py")."""
        dl = self.dl
        return (dl.num_workers == 0 and not dl.pin_memory and dl.batch_sampler is not None
                and callable(getattr(dl.dataset, "__getitems__", None)))

    def _fetched_here(self):
        """The batches torch's single-process iterator gives, in the same order: the same draw from the
        loader's generator first (the iterator's base seed), then the batch sampler's positions."""
        dl = self.dl
        torch.empty((), dtype=torch.int64).random_(generator=dl.generator)
        fetch, collate = dl.dataset.__getitems__, dl.collate_fn
        for positions in dl.batch_sampler:
            yield self.proc_batch(collate(fetch(positions)), in_workers=False)

    def __iter__(self):
        if self.fetches_batches_here:
            yield from self._fetched_here()
            return
        if not self.in_memory:
            finished = False
            try:
                for batch in self.dl:
                    yield self.proc_batch(batch)
                finished = True
            finally:
                # a pass left early (one_batch, lr_find) or one that filled the item cache: stop the
                # workers now (see `_release_workers`); the next pass forks new ones if it needs them
                if not finished or self.in_memory:
                    self._release_workers()
            return
        if self._local is None:
            self._release_workers()
            # the same sampler, so the same order as `dl` would give; a generator of its own takes the
            # worker base seed each iteration draws, which `dl`'s persistent workers do not draw again
            self._local = self._rebuilt(num_workers=0, sampler=self.dl.sampler, shuffle=False,
                                        generator=torch.Generator())
        for batch in self._local:
            yield self.proc_batch(batch, in_workers=False)

    def _release_workers(self) -> None:
        """Stop the persistent worker processes: batches are now read in this process, or a pass was
        left early with tasks still queued in the workers. Dropping the loader's iterator here frees
        it by reference counting, so torch's shutdown reaches the workers at once. Left to the garbage
        collector with the rest of a Learner, the iterator's queues can be finalised before it, the
        workers never hear of the shutdown and torch waits 5 s for each before killing it."""
        _stop_workers(self._current, os.getpid())

    def new(self, tfms=None, **kwargs) -> DeviceDataLoader:
        """A copy whose DataLoader is rebuilt with some arguments changed (e.g. `shuffle=False`, or
        `dataset=`), with the same batch transforms or `tfms`."""
        dl = DeviceDataLoader(self._rebuilt(**kwargs), self.device, self.tfms if tfms is None else tfms)
        dl.in_process_when_cached = self.in_process_when_cached
        return dl

    def __repr__(self):
        where = "in workers" if self.tfms_in_workers else "on device"
        return (f"DeviceDataLoader({len(self.dataset)} items, bs={self.batch_size}, device={self.device}, "
                f"workers={self.num_workers}, tfms {where}: {self.tfms})")


def _stop_workers(current: list, pid: int) -> None:
    """Drop the iterator (and so stop the persistent workers) of the DataLoader in `current`, in the
    process that made it only: a forked worker holds a copy, and must not shut its siblings down."""
    dl = current[0] if current else None
    if os.getpid() == pid and getattr(dl, "_iterator", None) is not None:
        dl._iterator = None
