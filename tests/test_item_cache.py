"""The item cache: decoded, resized images kept in memory shared with the loader's workers."""
import pickle

import numpy as np
import pytest
import torch
from image_fixtures import save_image

from fastbase.vision import data as vision_data
from fastbase.vision import dataset as vision_dataset
from fastbase.vision.data import ImageDataBunch
from fastbase.vision.item_cache import ItemCache, cache_nbytes
from fastbase.vision.transforms import get_transforms


@pytest.fixture(name="noisy_folder")
def noisy_folder_fixture(tmp_path):
    """Random-noise photos of several shapes, 2 classes, so that every pixel and crop window shows."""
    rng = np.random.default_rng(0)
    for split, n in (("train", 8), ("valid", 4)):
        for label in ("a", "b"):
            for i in range(n):
                h, w = (24, 32) if i % 2 else (30, 22)
                save_image(tmp_path / split / label / f"{i}.png", array=rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
    return tmp_path


def bunch(path, cache, workers=0, seed=0):
    return ImageDataBunch.from_folder(path, ds_tfms=get_transforms(), size=16, bs=4, num_workers=workers,
                                      device="cpu", seed=seed, cache_items=cache)


def passes(data, n=2):
    return [torch.cat([x for x, _ in data.train_dl]) for _ in range(n)] + [torch.cat([x for x, _ in data.valid_dl])]


def count_decodes(monkeypatch):
    calls, original = [], vision_dataset.load_image
    monkeypatch.setattr(vision_dataset, "load_image", lambda *a, **k: calls.append(1) or original(*a, **k))
    return calls


def test_an_item_is_served_once_put_and_a_pickled_cache_is_off():
    cache = ItemCache(3, (3, 4, 5))
    assert cache.get(1) is None and cache.nbytes == cache_nbytes(3, (3, 4, 5)) == 3 * (60 + 9)
    x = torch.arange(60, dtype=torch.uint8).view(3, 4, 5)
    cache.put(1, x, (7, 9))
    got, pair = cache.get(1)
    assert torch.equal(got, x) and pair == (7, 9) and cache.n_filled == 1 and cache.get(0) is None
    cache.put(2, torch.zeros(3, 5, 5, dtype=torch.uint8), (1, 1))  # not the cache's shape: left out
    assert cache.get(2) is None
    copy = pickle.loads(pickle.dumps(cache))  # what a spawned worker would get
    assert not copy.enabled and copy.get(1) is None and "off" in repr(copy)
    copy.put(0, x, (1, 1))  # a no-op, not an error


def test_cached_batches_equal_uncached_ones_and_later_epochs_decode_nothing(noisy_folder, monkeypatch):
    plain = passes(bunch(noisy_folder, cache=False))
    calls = count_decodes(monkeypatch)
    data = bunch(noisy_folder, cache=True)
    first = torch.cat([x for x, _ in data.train_dl])
    assert len(calls) == len(data.train_ds) == 16 and data.train_ds.cache.n_filled == 16
    second = torch.cat([x for x, _ in data.train_dl])
    valid = torch.cat([x for x, _ in data.valid_dl])
    assert len(calls) == 16 + len(data.valid_ds)  # the second epoch came from memory
    for a, b in zip(plain, (first, second, valid)):
        assert torch.equal(a, b)
    assert not torch.equal(first, second)  # still augmented afresh each epoch
    assert "cached 16/16" in repr(data.train_ds)


def test_worker_processes_fill_one_cache_that_the_next_epoch_reads_in_process(noisy_folder, monkeypatch):
    plain = bunch(noisy_folder, cache=False, workers=2)
    plain_batches = [list(plain.train_dl) for _ in range(2)] + [list(plain.valid_dl)]
    data = bunch(noisy_folder, cache=True, workers=2)
    assert not data.train_dl.in_memory and not plain.train_dl.in_memory
    first, valid = list(data.train_dl), list(data.valid_dl)
    assert data.train_ds.cache.n_filled == len(data.train_ds)  # written by the workers, seen here
    assert data.valid_ds.cache.n_filled == len(data.valid_ds)
    for a, b in zip(plain_batches[0] + plain_batches[2], first + valid):
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    # from now on the items are in memory: the loaders read them here, and nothing is decoded again
    assert data.train_dl.in_memory and data.valid_dl.in_memory
    decodes, served = count_decodes(monkeypatch), []
    original = vision_dataset.ImageDataset.raw_item
    monkeypatch.setattr(vision_dataset.ImageDataset, "raw_item",
                        lambda self, *a, **k: served.append(1) or original(self, *a, **k))
    second, valid_again = list(data.train_dl), list(data.valid_dl)
    assert len(served) == len(data.train_ds) + len(data.valid_ds) and not decodes
    # the same sampler and generator: the order the worker processes would have given
    assert torch.equal(torch.cat([y for _, y in second]), torch.cat([y for _, y in plain_batches[1]]))
    assert not torch.equal(torch.cat([x for x, _ in second]), torch.cat([x for x, _ in first]))  # augmented afresh
    for a, b in zip(valid, valid_again):
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_automatic_caching_follows_the_memory_budget(noisy_folder, monkeypatch):
    data = bunch(noisy_folder, cache=None)
    assert data.train_ds.cache is not None and data.valid_ds.cache is not None
    assert data.fix_dl.dataset.cache is not None  # the Fix loader's items (no canvas) have their own
    monkeypatch.setattr(vision_data, "cache_budget", lambda: data.train_ds.cache_nbytes)  # valid does not fit too
    data = bunch(noisy_folder, cache=None)
    assert data.train_ds.cache is None and data.valid_ds.cache is None and "cached" not in repr(data.train_ds)
    unsized = ImageDataBunch.from_folder(noisy_folder, bs=4, num_workers=0, device="cpu", cache_items=True)
    assert unsized.train_ds.cache is None  # items of many sizes: nothing to cache


def test_workers_stop_once_their_pass_fills_the_cache(noisy_folder):
    """The pass that fills the item cache ends the loader's worker processes (they have nothing
    left to do), as does a pass left early. Without an item cache the workers stay between full
    passes."""
    import multiprocessing

    uncached = bunch(noisy_folder, cache=False, workers=2)
    list(uncached.train_dl)
    assert len(multiprocessing.active_children()) == 2  # without the cache, the workers stay for the next pass
    xb, _ = uncached.one_batch()  # a pass left after one batch: its workers stop
    assert xb.shape[0] == 4 and not multiprocessing.active_children()
    assert len(list(uncached.train_dl)) == len(uncached.train_dl)  # the next pass forks new ones
    del uncached
    data = bunch(noisy_folder, cache=True, workers=2)
    batches = iter(data.train_dl)
    next(batches)
    assert len(multiprocessing.active_children()) == 2  # the first full pass reads in the workers...
    rest = list(batches)
    assert data.train_dl.in_memory and not multiprocessing.active_children()  # ...which end with it
    list(data.valid_dl)
    assert data.valid_dl.in_memory and not multiprocessing.active_children()
    assert len(list(data.train_dl)) == len(data.train_dl) == 1 + len(rest)  # later passes: in this process


def test_workers_of_a_loader_freed_by_the_garbage_collector_are_told_to_stop(noisy_folder, monkeypatch):
    """Persistent workers still running (no item cache) when their loader is freed in a reference
    cycle, as a Learner's loaders are, are told to stop and do so at once. Before, the collector
    finalised the loader's queues first, the stop never reached them, and torch waited its status
    interval (5 s, made 30 s here so that a wait cannot pass for a slow machine) for each."""
    import gc
    import multiprocessing
    import time

    from torch.utils.data import _utils

    monkeypatch.setattr(_utils, "MP_STATUS_CHECK_INTERVAL", 30.0)
    data = bunch(noisy_folder, cache=False, workers=2)
    list(data.train_dl)
    assert len(multiprocessing.active_children()) == 2  # the workers stay for the next pass
    cycle = {"data": data}
    cycle["self"] = cycle
    del data, cycle
    start = time.monotonic()
    gc.collect()
    assert not multiprocessing.active_children()
    assert time.monotonic() - start < 25  # one timed-out worker alone would have taken 30 s
