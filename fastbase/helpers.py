"""Layer 0: the small helpers every other layer shares.

List/None helpers, the base error type, a `Path` with `ls()`, moving batches to a device, the
default device, seeding, and naming functions so that an export can import them again. Nothing
here knows about datasets, images, models or training. `fastbase.core` re-exports these together
with the configuration (`fastbase.config`) and the distributed helpers (`fastbase.distrib`).
"""
from __future__ import annotations

import importlib
import os
import pathlib
import random
from collections.abc import Iterable

import numpy as np
import torch

__all__ = [
    "FastbaseError",
    "Path",
    "PrettyString",
    "default_device",
    "ifnone",
    "import_ref",
    "is_listy",
    "listify",
    "noop",
    "num_cpus",
    "object_ref",
    "seed_worker",
    "set_seed",
    "to_device",
]


class FastbaseError(Exception):
    """Base class of the errors fastbase raises for bad input: the message says what to do."""


class Path(type(pathlib.Path())):
    """A `pathlib.Path` with `ls()`, as course notebooks expect (`path.ls()`).

    A subclass rather than a patch of `pathlib`: joining with `/` keeps the subclass.
    """

    def ls(self) -> list[Path]:
        """The folder's entries, sorted by name."""
        if not self.is_dir():
            raise FastbaseError(f"{self} is not a folder, so it has nothing to list.")
        return sorted(self.iterdir())


class PrettyString(str):
    """A string whose repr is itself (fastai v1's name): a notebook shows a returned report once, as
    text, and `print(...)` of it prints it once."""

    def __repr__(self):
        return str(self)


def is_listy(x) -> bool:
    """True for lists, tuples and other sequences that are not strings or tensors."""
    return isinstance(x, (list, tuple, range)) or (
        isinstance(x, Iterable) and not isinstance(x, (str, bytes, dict, torch.Tensor, np.ndarray))
        and not hasattr(x, "read"))


def listify(p=None, q=None) -> list:
    """Make `p` a list; with `q`, repeat a single `p` to the length of `q` (fastai v1 semantics).

    `None` -> `[]`, a string or scalar -> `[p]`, an iterable -> `list(p)`; `q` may be an int or a
    collection. A list whose length differs from `q`'s raises, naming both lengths.
    """
    if p is None:
        p = []
    elif isinstance(p, (str, bytes)) or not isinstance(p, Iterable) or isinstance(p, torch.Tensor) and p.dim() == 0:
        p = [p]
    else:
        p = list(p)
    if q is None:
        return p
    n = q if isinstance(q, int) else len(listify(q))
    if len(p) == 1:
        p = p * n
    if len(p) != n:
        raise FastbaseError(f"Expected {n} values to match, got {len(p)}: {p!r}.")
    return p


def noop(x=None, *args, **kwargs):
    """Give back `x`: a do-nothing default for a function argument (fastai v1's `noop`)."""
    return x


def ifnone(a, b):
    """`a` unless it is None, then `b`."""
    return b if a is None else a


def to_device(batch, device):
    """Move a tensor, or the tensors inside nested lists/tuples/dicts, to `device` (non-blocking)."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(b, device) for b in batch)
    return batch


def num_cpus() -> int:
    """The CPUs this process may run on (respects affinity masks and container limits)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def default_device() -> torch.device:
    """CUDA when a GPU is visible (under torchrun, the GPU `cuda:LOCAL_RANK` of this process), else
    Apple's MPS when available, else the CPU."""
    if torch.cuda.is_available():
        local_rank = os.environ.get("LOCAL_RANK", "")
        if local_rank.isdigit() and int(local_rank) < torch.cuda.device_count():
            return torch.device("cuda", int(local_rank))
        return torch.device("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def set_seed(seed: int, deterministic: bool = False) -> int:
    """Seed Python, NumPy and torch (CPU and CUDA); with `deterministic`, also ask torch for
    deterministic algorithms (slower, and some operations then raise instead of running).

    Returns the seed. DataLoaders built by fastbase derive their shuffling and worker seeds from it.
    """
    seed = int(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    # Switching costs seconds (torch imports its compiler stack), so only when the setting changes.
    if deterministic != torch.are_deterministic_algorithms_enabled():
        torch.use_deterministic_algorithms(deterministic, warn_only=False)
    torch.backends.cudnn.deterministic = deterministic
    if deterministic:
        torch.backends.cudnn.benchmark = False
    return seed


def seed_worker(worker_id: int) -> None:
    """`worker_init_fn` for DataLoaders: seed NumPy and `random` in each worker from torch's seed."""
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def object_ref(obj) -> str:
    """'module:qualname' of a function or class that can be imported again by `import_ref`; a clear
    error for lambdas, nested functions and objects defined in `__main__` (they cannot be re-imported)."""
    module, qualname = getattr(obj, "__module__", None), getattr(obj, "__qualname__", None)
    if not module or not qualname or "<" in qualname or module == "__main__":
        raise FastbaseError(f"{obj!r} cannot be referred to by name (a lambda, a nested function or something "
                            "defined in __main__): define it at the top level of an importable module.")
    if import_ref(f"{module}:{qualname}") is not obj:
        raise FastbaseError(f"{module}:{qualname} does not import back to {obj!r}.")
    return f"{module}:{qualname}"


def import_ref(ref: str):
    """The object named by 'module:qualname' (as written by `object_ref`)."""
    module, _, qualname = ref.partition(":")
    if not qualname:
        raise FastbaseError(f"{ref!r} is not a reference of the form 'module:qualname'.")
    try:
        obj = importlib.import_module(module)
        for part in qualname.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as e:
        raise FastbaseError(f"Cannot import {ref!r}: {e}") from e
    return obj
