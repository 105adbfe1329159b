"""Layer 0: which process this is in a distributed run (fastai v1's `rank_distrib`, `num_distrib`),
and the helpers that let only the main process print, plot and write files.

They read torch.distributed once its process group exists, and torchrun's `$RANK`/`$WORLD_SIZE`
before that, so they answer the same in a script's first lines and inside a fit.
"""
from __future__ import annotations

import functools
import os

import torch

__all__ = ["distrib_barrier", "is_main_process", "num_distrib", "rank_distrib", "rank_zero_only"]


def _process_group():
    """torch.distributed when its default process group is initialised, else None."""
    dist = torch.distributed
    return dist if dist.is_available() and dist.is_initialized() else None


def rank_distrib() -> int:
    """This process's rank among the training processes (fastai v1's name): torch.distributed's once
    initialised, else `$RANK` (set by torchrun before the group exists), else 0."""
    dist = _process_group()
    if dist is not None:
        return dist.get_rank()
    rank = os.environ.get("RANK", "")
    return int(rank) if rank.isdigit() else 0


def num_distrib() -> int:
    """How many training processes there are (fastai v1's name): torch.distributed's world size once
    initialised, else `$WORLD_SIZE` (torchrun), else 1."""
    dist = _process_group()
    if dist is not None:
        return dist.get_world_size()
    size = os.environ.get("WORLD_SIZE", "")
    return int(size) if size.isdigit() and int(size) > 0 else 1


def is_main_process() -> bool:
    """True in the process that prints, plots, logs and writes files: rank 0, or the only process."""
    return rank_distrib() == 0


def rank_zero_only(func):
    """Decorator: run `func` only in the main process (rank 0); elsewhere the call does nothing and
    returns None. For output and files that all processes would otherwise write at once."""
    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        return func(*args, **kwargs) if is_main_process() else None
    return wrapper


def distrib_barrier() -> None:
    """Wait until every training process gets here (e.g. before reading a file rank 0 wrote); a no-op
    in a single process. Every process must call it, or the others wait forever."""
    dist = _process_group()
    if dist is not None and dist.get_world_size() > 1:
        dist.barrier()
