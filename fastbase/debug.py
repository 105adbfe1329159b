"""Layer 5: debugging a training setup on tiny data: `overfit` trains a Learner on 1 or 10 training
items until the loss is near zero, and says whether it got there.

A model that cannot memorise ten images has a bug that a long run would only hide: labels that do
not match the items, a wrong normalisation, a frozen or disconnected layer, a loss that does not fit
the outputs. `Learner.overfit` calls `overfit` here; it takes the Learner duck-typed.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field

from torch import nn

from .callback import Callback, CancelFitException, CancelValidException, Order
from .core import BN_TYPES, FastbaseError

__all__ = ["OverfitResult", "overfit"]


@dataclass
class OverfitResult:
    """What `overfit` saw: `reached` is True when the training loss fell below `threshold`; `losses`
    holds the loss of every step (before that step's update)."""
    reached: bool
    n_items: int
    steps: int
    threshold: float
    losses: list[float] = field(default_factory=list)

    @property
    def final_loss(self) -> float:
        return self.losses[-1] if self.losses else math.nan

    @property
    def best_loss(self) -> float:
        finite = [v for v in self.losses if math.isfinite(v)]
        return min(finite) if finite else math.nan

    @property
    def message(self) -> str:
        if self.reached:
            return (f"The loss fell to {self.final_loss:.4f} (< {self.threshold}) in {self.steps} steps on "
                    f"{self.n_items} item(s): the model, loss and labels can fit data.")
        return (f"The loss only fell to {self.best_loss:.4f} (threshold {self.threshold}) in {self.steps} steps on "
                f"{self.n_items} item(s). Look at the labels (show_batch), the normalisation (data.stats, "
                "batch_stats), frozen layers (learn.summary()) and the loss function; or try another lr / more steps.")

    def plot(self):
        """The loss of every step (log scale) with the threshold; returns the matplotlib Figure."""
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 4))
        ax.plot(range(1, len(self.losses) + 1), self.losses, label="training loss")
        ax.axhline(self.threshold, color="grey", linestyle="--", label=f"threshold {self.threshold}")
        if self.losses and min(self.losses) > 0:
            ax.set_yscale("log")
        ax.set(xlabel="step", ylabel="loss", title=f"overfit on {self.n_items} item(s): "
                                                   f"{'reached' if self.reached else 'not reached'}")
        ax.legend()
        fig.tight_layout()
        return fig

    def __repr__(self):
        return (f"OverfitResult(reached={self.reached}, final_loss={self.final_loss:.4g}, steps={self.steps}, "
                f"n_items={self.n_items}, threshold={self.threshold})")


class _SameBatch:
    """A training loader that yields `steps` times the first batch of `dl`, read and transformed once
    (decoding the same images at every step would only cost time)."""

    def __init__(self, dl, steps: int):
        self.dataset = dl.dataset
        self.batch_size = dl.batch_size
        self.steps = steps
        self.batch = next(iter(dl))

    def __len__(self):
        return self.steps

    def __iter__(self):
        return itertools.repeat(self.batch, self.steps)


class _OverfitWatch(Callback):
    """Records the loss of every step, stops once it is below `threshold`, skips validation, and keeps
    dropout off (and BatchNorm on its running statistics when a batch holds one item, where batch
    statistics do not exist)."""
    order = Order.OVERFIT_WATCH

    def __init__(self, threshold: float, bn_eval: bool):
        self.threshold = threshold
        self.bn_eval = bn_eval
        self.losses = []

    def before_train(self):
        for module in self.learn.model.modules():
            if isinstance(module, nn.modules.dropout._DropoutNd) or (self.bn_eval and isinstance(module, BN_TYPES)):
                module.eval()

    def before_validate(self):
        raise CancelValidException()

    def after_loss(self):
        if self.learn.training:
            self.losses.append(float(self.learn.loss.float().mean()))
            if self.losses[-1] < self.threshold:
                raise CancelFitException()


def overfit(learn, n_items: int = 10, steps: int = 100, lr: float = 1e-3, threshold: float = 0.05,
            seed: int | None = 0, restore: bool = True) -> OverfitResult:
    """Train `learn` on `n_items` training items (picked with `seed`), all in one batch without
    augmentation, dropout or weight decay, at a constant `lr` for up to `steps` steps, stopping once
    the training loss is below `threshold`. The Learner's own data are not touched; its weights,
    optimizer, recorder and the random state are restored afterwards unless `restore=False` (then the
    overfitted weights stay, to look at). Freezing stays as it is."""
    if steps < 1:
        raise FastbaseError(f"overfit needs steps >= 1, got {steps}.")
    data = learn.data.subset(n_items, seed=seed, bs=n_items).no_augment()
    data.train_dl = _SameBatch(data.train_dl, steps)
    watch = _OverfitWatch(threshold, bn_eval=n_items == 1)
    with learn.probe(restore=restore):
        learn.data, learn.opt = data, None
        learn.fit(1, lr, wd=0.0, callbacks=[watch])
    reached = bool(watch.losses) and watch.losses[-1] < threshold
    return OverfitResult(reached, n_items, len(watch.losses), threshold, watch.losses)
