"""Layer 4: `OverSamplingCallback` (fastai v1's `fastai.callbacks.oversampling`): trains on an
imbalanced data set by drawing its training items with replacement, each with a weight inversely
proportional to its class's frequency, so that every class is seen about equally often.
"""
from __future__ import annotations

import torch
from torch.utils.data import WeightedRandomSampler

from ..callback import Callback
from ..core import FastbaseError

__all__ = ["OverSamplingCallback"]


class OverSamplingCallback(Callback):
    """For the length of each fit, the training loader draws items with a `WeightedRandomSampler`:
    `weights` (one per training item), default 1 / (count of the item's class). An epoch draws
    as many items as the largest class holds, times the number of classes (fastai v1's length),
    so a minority class is seen about as often as the majority. The loader is put back after the fit."""

    def __init__(self, learn=None, weights: torch.Tensor | None = None):
        self.weights = None if weights is None else torch.as_tensor(weights, dtype=torch.double)
        self._original = None

    def class_weights(self) -> tuple[torch.Tensor, int]:
        """(weight per training item, items per epoch) from the training targets."""
        targets = self.learn.data.item_targets()
        if targets.is_floating_point() or targets.dim() != 1:
            raise FastbaseError("OverSamplingCallback weighs items by class, so it needs single-label targets (one "
                                f"class index per item); the training targets have shape {tuple(targets.shape)}. "
                                "Pass weights= (one per training item) for other data.")
        counts = torch.bincount(targets.long())
        present = counts[counts > 0]
        return 1.0 / counts[targets.long()].double(), int(present.max()) * len(present)

    def before_fit(self):
        data = self.learn.data
        if self.weights is not None:
            if len(self.weights) != len(data.train_ds):
                raise FastbaseError(f"OverSamplingCallback got {len(self.weights)} weights for "
                                    f"{len(data.train_ds)} training items: give one weight per item.")
            weights, n_draws = self.weights, len(self.weights)
        else:
            weights, n_draws = self.class_weights()
        train = data.train_dl
        sampler = WeightedRandomSampler(weights, n_draws, replacement=True, generator=train.dl.generator)
        self._original = train
        data.train_dl = train.new(sampler=sampler, shuffle=False)

    def cleanup_fit(self):
        if self._original is not None:
            self.learn.data.train_dl = self._original
            self._original = None
