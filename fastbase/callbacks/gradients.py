"""Layer 4: callbacks on the gradients between backward and the optimizer step: clipping their
norm (`Learner(clip=...)`) and accumulating them over several batches.

Both act in `before_step`, not right after backward: with accumulation, the step sees the sum of
several batches, and that sum is what should be clipped; with fp16 loss scaling, the gradients are
only real numbers once `MixedPrecision` has unscaled them. In `before_step` the callbacks run by
`Order`: accumulation, unscaling (`MixedPrecision`), the NaN check (`TerminateOnNaN`), clipping,
then yours (`Order.USER`).
"""
from __future__ import annotations

import torch
from torch import nn

from ..callback import Callback, CancelStepException, Order
from ..core import FastbaseError

__all__ = ["AccumulateScheduler", "GradientAccumulation", "GradientClipping"]


class GradientClipping(Callback):
    """Scales the gradients down so that their global L2 norm is at most `clip` before each
    optimizer step (`nn.utils.clip_grad_norm_` over the model's parameters)."""
    order = Order.GRADIENT_CLIPPING
    changes_step = True

    def __init__(self, clip: float = 0.0):
        if clip is None or clip <= 0:
            raise FastbaseError(f"GradientClipping needs a positive max norm, got clip={clip}.")
        self.clip = float(clip)

    def before_step(self):
        nn.utils.clip_grad_norm_(self.learn.model.parameters(), self.clip)


class GradientAccumulation(Callback):
    """Steps the optimizer (and zeroes the gradients) only every `n_step` training batches and at the
    end of each epoch, so `n_step` batches of size bs train like one batch of `n_step * bs`.

    With a mean-reduced loss each batch's loss is weighted by its size over `n_step` times the first
    batch's size; a group of smaller or fewer batches (the end of an epoch) is corrected before the
    step, so the gradient is the mean over exactly the items seen (within float rounding). A
    `reduction='sum'` loss is summed as it is. `drop_last=True` throws away the gradients of an
    incomplete group at the end of an epoch instead of stepping. Without BatchNorm the result equals
    the large batch; BatchNorm still sees the small batches. The recorded loss is the plain batch loss.
    """
    order = Order.GRADIENT_ACCUMULATION
    changes_step = True

    def __init__(self, n_step: int = 2, drop_last: bool = False):
        if int(n_step) < 1:
            raise FastbaseError(f"GradientAccumulation needs n_step >= 1, got {n_step}.")
        self.n_step, self.drop_last = int(n_step), drop_last
        self.count = self.samples = 0
        self.unit = None

    def before_fit(self):
        self.unit = None

    def before_train(self):
        self.count = self.samples = 0

    def _summed(self) -> bool:
        return getattr(self.learn.loss_func, "reduction", "mean") == "sum"

    def after_loss(self):
        learn = self.learn
        if not learn.training:
            return
        bs = (learn.yb[0] if learn.yb else learn.xb[0]).shape[0]
        if self.unit is None:
            self.unit = self.n_step * bs
        if not self._summed():
            learn.loss_grad = learn.loss_grad * (bs / self.unit)
        self.count, self.samples = self.count + 1, self.samples + bs

    def before_step(self):
        learn = self.learn
        if self.count < self.n_step:
            if learn.iter < learn.n_iter - 1:
                raise CancelStepException()
            if self.drop_last:
                learn.opt.zero_grad()
                self.count = self.samples = 0
                raise CancelStepException()
        if not self._summed() and self.samples != self.unit:  # a short group: make it the mean over its items
            grads = [p.grad for p in learn.model.parameters() if p.grad is not None]
            if grads:
                torch._foreach_mul_(grads, self.unit / self.samples)
        self.count = self.samples = 0

    def state_dict(self) -> dict:
        return {"count": self.count, "samples": self.samples, "unit": self.unit}

    def load_state_dict(self, state: dict) -> None:
        self.count = state["count"]
        self.samples = state["samples"]
        self.unit = state["unit"]


AccumulateScheduler = GradientAccumulation  # fastai v1's name (v1 needed a sum-reduced loss; this does not)
