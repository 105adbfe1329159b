"""Layer 4: `LossMetrics`, fastai v1's callback that shows the parts of a loss as metrics: a loss
that sets `metric_names` (a list) and, at each call, `metrics` (a dict name -> tensor, e.g. the
pixel, feature and Gram-matrix terms of lesson 7's feature loss) gets one column per part in the
epoch table and the Recorder, each averaged over the validation set like the other metrics."""
from __future__ import annotations

import torch

from ..callback import Callback, Order
from ..core import FastbaseError

__all__ = ["LossMetrics"]


class LossMetrics(Callback):
    """Add the validation average of each part of `learn.loss_func.metrics` after the other metrics
    (the names come from `learn.loss_func.metric_names`). Pass it as `callback_fns=LossMetrics`."""
    order = Order.LOSS_METRICS

    def before_fit(self):
        self.names = list(getattr(self.learn.loss_func, "metric_names", None) or [])
        if not self.names:
            raise FastbaseError(f"LossMetrics shows the parts of a loss that sets `metric_names` (a list) and "
                                f"`metrics` (a dict name -> tensor) when called; {self.learn.loss_func!r} sets no "
                                "metric_names. Leave LossMetrics out, or add them to the loss.")
        self.learn.recorder.metric_names += [n for n in self.names if n not in self.learn.recorder.metric_names]

    def before_validate(self):
        self._sums, self._count = None, 0

    def after_batch(self):
        learn = self.learn
        if learn.training or learn.loss is None:
            return
        parts = getattr(learn.loss_func, "metrics", None) or {}
        missing = [n for n in self.names if n not in parts]
        if missing:
            raise FastbaseError(f"LossMetrics: the loss's `metrics` has no {missing} (its metric_names); set "
                                "self.metrics = dict(zip(self.metric_names, parts)) in forward.")
        n = learn.yb[0].shape[0]
        values = torch.stack([parts[name].detach().float().reshape(()) for name in self.names]) * n
        self._sums = values if self._sums is None else self._sums + values
        self._count += n

    def after_validate(self):
        if self._sums is None or self.learn.valid_values is None:
            return
        self.learn.valid_values = [*self.learn.valid_values, *(self._sums / self._count).cpu().tolist()]
