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

from ..callback import Callback, Order
from ..core import BN_TYPES
from ..data import DatasetType

__all__ = ["BN_STATS_MODES", "BnFreeze", "RecalibrateBN", "bn_freeze_for", "has_bn_statistics", "recompute_bn_stats"]

# freeze_bn_stats: its settings and what each does to BatchNorm running statistics (BnFreeze applies them)
BN_STATS_MODES = {False: "running statistics learnt by every group that trains",
                  True: "running statistics fixed in frozen groups",
                  "body": "running statistics fixed in the body (every group but the last), learnt by the head",
                  "finetune": "running statistics fixed in frozen groups, and in every group once none is frozen"}


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
    order = Order.RECALIBRATE_BN

    def __init__(self, ds_type: DatasetType = DatasetType.Fix, max_batches: int | None = None):
        self.ds_type, self.max_batches = DatasetType(ds_type), max_batches
        self.n_batches = 0

    def after_train(self):
        self.n_batches = recompute_bn_stats(self.learn.model, self.learn.data.dl(self.ds_type), self.max_batches)

    def __repr__(self):
        return f"RecalibrateBN(ds_type={self.ds_type.name}, max_batches={self.max_batches})"


def bn_freeze_for(mode, n_frozen: int, n_groups: int) -> BnFreeze | None:
    """The `BnFreeze` that applies `freeze_bn_stats=mode` (see `BN_STATS_MODES`) to a Learner with
    `n_frozen` of its `n_groups` layer groups frozen; None where no statistics are fixed."""
    if not mode:
        return None
    if mode == "body":  # the head (last group) learns; the body's stay as they were loaded
        return BnFreeze(n_fixed=n_groups - 1)
    return BnFreeze(all_groups=mode == "finetune" and n_frozen == 0)


class BnFreeze(Callback):
    """Puts the BatchNorm layers of frozen layer groups in eval mode after each `model.train()`,
    so their running statistics stay fixed (`freeze_bn_stats=True`); `train_bn` only governs gradients.
    `all_groups=True` fixes them in every layer group, frozen or not: fine-tuning a pretrained body
    on few images with small learning rates then keeps its pretrained statistics (what
    `freeze_bn_stats="finetune"` does once the Learner is unfrozen). There, a layer of a trainable
    group that has no statistics yet (a new head's, never trained: running mean 0, variance 1, no
    batch seen) learns them in this fit, rather than keeping values no data produced.
    `n_fixed` also fixes those of the first `n_fixed` groups when trainable (`freeze_bn_stats="body"`:
    every group but the head), again only the layers that have statistics.

    A layer that learns its first statistics in this fit starts its running average at its first
    batch (momentum `max(momentum, 1/t)` at its t-th batch) instead of at mean 0 and variance 1:
    a new head trained for a dozen batches otherwise validates with statistics still more than a
    quarter short of the truth (0.9^12 = 0.28 of the start left at momentum 0.1)."""
    order = Order.BN_FREEZE
    changes_step = True

    def __init__(self, all_groups: bool = False, n_fixed: int | None = None):
        self.all_groups, self.n_fixed = all_groups, n_fixed
        self.warming: list[tuple[nn.Module, float]] = []

    def before_fit(self):
        groups, n = self.learn.layer_groups, self.learn.n_frozen
        self.fixed = [m for group in groups[:n] for m in group.modules() if isinstance(m, BN_TYPES)]
        trainable = groups[n:] if self.all_groups else groups[n:self.n_fixed] if self.n_fixed is not None else []
        self.fixed += [m for group in trainable for m in group.modules()
                       if isinstance(m, BN_TYPES) and has_bn_statistics(m)]
        fixed = {id(m) for m in self.fixed}
        self.warming = [(m, m.momentum) for group in groups[n:] for m in group.modules()
                        if isinstance(m, BN_TYPES) and id(m) not in fixed and m.momentum is not None
                        and m.running_mean is not None and not has_bn_statistics(m)]

    def before_train(self):
        for module in self.fixed:
            module.eval()

    def before_batch(self):
        if self.learn.training:
            for module, momentum in self.warming:
                module.momentum = max(momentum, 1.0 / (int(module.num_batches_tracked) + 1))

    def cleanup_fit(self):
        for module, momentum in self.warming:
            module.momentum = momentum
        self.warming = []


def has_bn_statistics(bn: nn.Module) -> bool:
    """Has this BatchNorm layer running statistics to keep: loaded, or learnt from at least one batch?
    False for a layer as constructed (mean 0, variance 1, no batch tracked) or one that tracks none."""
    if bn.running_mean is None or bn.running_var is None:
        return False
    tracked = bn.num_batches_tracked is not None and int(bn.num_batches_tracked) > 0
    return tracked or bool(bn.running_mean.any()) or not bool((bn.running_var == 1).all())
