"""Layer 5: fastai v1's `fastai.train`: the training functions that take the Learner as their first
argument (`lr_find(learn)`, `fit_fc(learn)`, as course notebooks call them), each running the
Learner's own method; and the names fastai v1 keeps there (`ShowGraph`, the interpretations)."""
from __future__ import annotations

from .callbacks.show_graph import ShowGraph
from .interpret import ClassificationInterpretation, MultiLabelClassificationInterpretation
from .learner import DEFAULT_LR, Learner

__all__ = ["ClassificationInterpretation", "MultiLabelClassificationInterpretation", "ShowGraph", "fit_fc", "lr_find"]


def lr_find(learn: Learner, start_lr=1e-7, end_lr=10, num_it: int = 100, stop_div: bool = True, wd=None):
    """`learn.lr_find(...)`: the learning-rate sweep; returns its suggestions (see `Learner.lr_find`)."""
    return learn.lr_find(start_lr=start_lr, end_lr=end_lr, num_it=num_it, stop_div=stop_div, wd=wd)


def fit_fc(learn: Learner, tot_epochs: int = 1, lr=DEFAULT_LR, moms=(0.95, 0.85), start_pct: float = 0.72,
           wd=None, callbacks=None) -> None:
    """`learn.fit_fc(...)`: flat, then cosine annealing (see `Learner.fit_fc`)."""
    learn.fit_fc(tot_epochs, lr, moms=moms, start_pct=start_pct, wd=wd, callbacks=callbacks)
