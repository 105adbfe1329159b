"""Layer 4: BatchNorm statistics recomputed on un-augmented training images before validation.

While training, a BatchNorm layer normalises with the statistics of the batch in hand and keeps an
exponential average of them for evaluation. Those batches are augmented (lighting, warps, padding
at the borders), so the average describes images unlike the validation ones, and at evaluation
the layer shifts and scales every validation feature by the wrong amounts. On a small data set with
a frozen pretrained body whose BatchNorm trains (fastai's `train_bn`), this costs points of accuracy
(`bench/transfer.py`).

`RecalibrateBN` recomputes, after each epoch's training, the running statistics of the BatchNorm
layers that trained, as exact averages over the training images seen the validation way (the `Fix`
loader: no augmentation), with the model in training mode as it was. The weights do not change; the
cost is one forward pass over (part of) the training set per epoch, with no gradients. This is
"precise BatchNorm" (Wu & Johnson, "Rethinking 'Batch' in BatchNorm", 2021) on clean images.
"""
from __future__ import annotations

import torch
from torch import nn

from ..callback import BN_TYPES, Callback
from ..data import DatasetType

__all__ = ["RecalibrateBN", "recompute_bn_stats"]


def recompute_bn_stats(model: nn.Module, batches, max_batches: int | None = None) -> int:
    """Set the running mean and variance of `model`'s BatchNorm layers that are in training mode to
    their averages over `batches` (an iterable of input batches or `(x, y)` pairs), as
    `torch.optim.swa_utils.update_bn` does for all of them; layers in eval mode (frozen statistics)
    are left alone. Returns the number of batches used."""
    layers = [m for m in model.modules() if isinstance(m, BN_TYPES) and m.training and m.track_running_stats]
    if not layers:
        return 0
    momenta = [m.momentum for m in layers]
    saved = [(m.running_mean.clone(), m.running_var.clone(), m.num_batches_tracked.clone()) for m in layers]
    for m in layers:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average: every batch counts the same
    n = 0
    try:
        with torch.no_grad():
            for batch in batches:
                if max_batches is not None and n >= max_batches:
                    break
                model(batch[0] if isinstance(batch, (list, tuple)) else batch)
                n += 1
    finally:
        for m, momentum, (mean, var, count) in zip(layers, momenta, saved):
            m.momentum = momentum
            if n == 0:  # nothing seen (an empty loader, or an error at the first batch): keep the old
                m.running_mean.copy_(mean)
                m.running_var.copy_(var)
                m.num_batches_tracked.copy_(count)
    return n


class RecalibrateBN(Callback):
    """After each epoch's training, recompute the statistics of the BatchNorm layers that trained over
    the training images without augmentation (`ds_type`, default the `Fix` loader), at most
    `max_batches` batches; validation and everything after it then use them."""
    order = 80  # after the training-phase callbacks, before trackers and loggers read the validation

    def __init__(self, ds_type: DatasetType = DatasetType.Fix, max_batches: int | None = None):
        self.ds_type, self.max_batches = DatasetType(ds_type), max_batches
        self.n_batches = 0

    def after_train(self):
        self.n_batches = recompute_bn_stats(self.learn.model, self.learn.data.dl(self.ds_type), self.max_batches)

    def __repr__(self):
        return f"RecalibrateBN(ds_type={self.ds_type.name}, max_batches={self.max_batches})"
