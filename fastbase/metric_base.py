"""Layer 5 (helper of the Learner): the metric protocol and its two accumulators.

A metric is an object with `reset()`, `accumulate(pred, *yb)` per validation batch and `value` at
the end. `AvgMetric` turns a batch function `(pred, target) -> tensor` into one (a mean weighted by
batch size, exact for per-item means); `WholeSetMetric` keeps the batches on the device and computes
its value once over the whole validation set, for metrics that are not a mean of batch values
(AUROC, F-beta, kappa, R²...). Both read the device only when `value` is asked for.
"""
from __future__ import annotations

import re
from functools import partial

import torch

from .core import FastbaseError

__all__ = ["AvgMetric", "Metric", "MetricError", "WholeSetMetric", "flatten_check", "snake_name",
           "torchmetrics_functional"]


class MetricError(FastbaseError, ValueError):
    """A metric given inputs it cannot score, or a metric whose library is not installed."""


def torchmetrics_functional():
    """`torchmetrics.functional`, imported on first use (it takes seconds to import), or a
    `MetricError` saying how to install it."""
    try:
        from torchmetrics import functional
    except ImportError as e:
        raise MetricError("This metric is computed by torchmetrics, which is not installed: "
                          "pip install 'fastbase[metrics]' (or pip install torchmetrics).") from e
    return functional


def flatten_check(pred: torch.Tensor, targ: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """`pred` and `targ` as flat float vectors, refused when their numbers of elements differ."""
    pred, targ = pred.reshape(-1).float(), targ.reshape(-1).float()
    if pred.numel() != targ.numel():
        raise MetricError(f"Predictions and targets differ in size: {pred.numel()} predictions for "
                          f"{targ.numel()} targets. A regression metric compares them element by element.")
    return pred, targ


def snake_name(cls_name: str) -> str:
    """fastai's column name for a metric class: 'FBeta' -> 'f_beta', 'AUROC' -> 'auroc', 'R2Score' -> 'r2_score'."""
    name = re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", cls_name)
    return re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name).lower()


class Metric:
    """A metric accumulated over batches: `reset()`, then `accumulate(pred, *yb)` per batch (no
    device sync), then `value` (tensor or float)."""

    def reset(self) -> None:
        pass

    def accumulate(self, pred, *yb) -> None:
        raise NotImplementedError

    @property
    def value(self):
        raise NotImplementedError

    @property
    def name(self) -> str:
        return re.sub(r"(?<!^)(?=[A-Z])", "_", type(self).__name__).lower()


class AvgMetric(Metric):
    """Average of `func(pred, *yb)` over batches, weighted by batch size, kept on the device."""

    def __init__(self, func):
        self.func = func
        self.reset()

    def reset(self):
        self._values, self._sizes = [], []

    def accumulate(self, pred, *yb):
        self._values.append(torch.as_tensor(self.func(pred, *yb)).detach().float().reshape(()))
        self._sizes.append(yb[0].shape[0] if yb else pred.shape[0])

    @property
    def value(self):
        if not self._sizes:
            return None
        values = torch.stack(self._values)
        sizes = torch.tensor(self._sizes, dtype=values.dtype, device=values.device)
        return (values * sizes).sum() / sizes.sum()

    @property
    def name(self) -> str:
        func = self.func.func if isinstance(self.func, partial) else self.func
        return getattr(func, "__name__", type(func).__name__)


class WholeSetMetric(Metric):
    """Keeps what `prepare(pred, target)` returns for each batch (on the device), and computes
    `compute(preds, targets)` once over their concatenation: the exact value over the whole set.
    Subclasses define `compute`, and `prepare` to keep less than the raw outputs (class indexes)."""

    def __init__(self, name: str | None = None):
        self._name = name  # the table's column; default: fastai's snake_case of the class name
        self.reset()

    def reset(self) -> None:
        self._preds, self._targs = [], []

    def prepare(self, pred: torch.Tensor, targ: torch.Tensor):
        return pred, targ

    def accumulate(self, pred, *yb) -> None:
        if not yb:
            raise MetricError(f"{type(self).__name__} needs targets: the batch has none.")
        pred, targ = self.prepare(pred.detach(), yb[0].detach())
        self._preds.append(pred)
        self._targs.append(targ)

    def compute(self, preds: torch.Tensor, targs: torch.Tensor):
        raise NotImplementedError

    @property
    def value(self):
        if not self._preds:
            return None
        return self.compute(torch.cat(self._preds), torch.cat(self._targs))

    @property
    def name(self) -> str:
        return self._name or snake_name(type(self).__name__)
