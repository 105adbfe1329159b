"""fastbase.core: list helpers, Path.ls, seeding, devices, workers."""
import random

import numpy as np
import pytest
import torch

from fastbase import core
from fastbase.core import (
    FastbaseError,
    Path,
    ifnone,
    is_listy,
    listify,
    set_seed,
)
from fastbase.data import workers


def test_listify_wraps_scalars_and_strings():
    assert listify(None) == []
    assert listify(3) == [3]
    assert listify("abc") == ["abc"]
    assert listify((1, 2)) == [1, 2]
    assert listify(range(3)) == [0, 1, 2]


def test_listify_repeats_single_value_to_match():
    assert listify(0.1, 3) == [0.1, 0.1, 0.1]
    assert listify([1, 2], ["a", "b"]) == [1, 2]


def test_listify_length_mismatch_names_both():
    with pytest.raises(FastbaseError, match="Expected 3 values"):
        listify([1, 2], 3)


def test_ifnone_and_is_listy():
    assert ifnone(None, 5) == 5 and ifnone(0, 5) == 0
    assert is_listy([1]) and is_listy((1,)) and not is_listy("ab") and not is_listy(torch.zeros(2))


def test_path_ls_sorted_and_join_keeps_subclass(tmp_path):
    for name in ("b.txt", "a.txt"):
        (tmp_path / name).write_text("x")
    p = Path(tmp_path)
    assert [q.name for q in p.ls()] == ["a.txt", "b.txt"]
    assert isinstance(p / "a.txt", Path) and isinstance(p.ls()[0], Path)


def test_path_ls_on_file_is_clear(tmp_path):
    f = Path(tmp_path) / "f"
    f.write_text("x")
    with pytest.raises(FastbaseError, match="not a folder"):
        f.ls()


def _draws():
    return random.random(), float(np.random.rand()), torch.rand(1).item()


def test_set_seed_makes_python_numpy_torch_repeat():
    set_seed(123)
    first = _draws()
    set_seed(123)
    assert _draws() == first
    set_seed(124)
    assert _draws() != first


def test_set_seed_deterministic_toggles_torch_flag():
    try:
        set_seed(0, deterministic=True)
        assert torch.are_deterministic_algorithms_enabled()
    finally:
        set_seed(0, deterministic=False)
    assert not torch.are_deterministic_algorithms_enabled()


def test_default_device_is_cpu_without_gpu():
    if not torch.cuda.is_available():
        assert core.default_device().type in ("cpu", "mps")


def test_default_num_workers_two_for_cpu_training_on_small_machine(monkeypatch):
    monkeypatch.setattr(workers, "num_cpus", lambda: 2)
    monkeypatch.setattr(workers, "shm_size", lambda: 2**30)
    monkeypatch.setattr(workers.sys, "platform", "linux")
    assert workers.default_num_workers("cpu") == 2
    monkeypatch.setattr(workers, "num_cpus", lambda: 1)
    assert workers.default_num_workers("cpu") == 0


def test_default_num_workers_uses_cores_for_gpu(monkeypatch):
    monkeypatch.setattr(workers, "num_cpus", lambda: 8)
    monkeypatch.setattr(workers, "shm_size", lambda: 2**30)
    monkeypatch.setattr(workers.sys, "platform", "linux")
    assert workers.default_num_workers("cuda") == 7


def test_default_num_workers_falls_back_with_tiny_shm(monkeypatch):
    monkeypatch.setattr(workers, "num_cpus", lambda: 8)
    monkeypatch.setattr(workers, "shm_size", lambda: 64 * 2**20)
    with pytest.warns(RuntimeWarning, match="shared memory"):
        assert workers.default_num_workers("cuda") == 0
