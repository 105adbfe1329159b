"""Layer 5: fastai v1's training functions that take the Learner as their first argument
(`lr_find(learn)`, as course notebooks call it); each runs the Learner's own method."""
from __future__ import annotations

from .learner import Learner

__all__ = ["lr_find"]


def lr_find(learn: Learner, start_lr=1e-7, end_lr=10, num_it: int = 100, stop_div: bool = True, wd=None):
    """`learn.lr_find(...)`: the learning-rate sweep; returns its suggestions (see `Learner.lr_find`)."""
    return learn.lr_find(start_lr=start_lr, end_lr=end_lr, num_it=num_it, stop_div=stop_div, wd=wd)
