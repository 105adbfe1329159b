"""Layer 5 (helper of the Learner): metrics, and the glue between losses and predictions.

Metric functions take `(pred, target)` batches and return the batch mean on the device. The
Learner wraps each in `AvgMetric`, which averages over the validation set weighted by batch size
(exact for these per-item means, whatever the batch sizes) and reads the device once per epoch.
A class with `reset()`, `accumulate(pred, *yb)`, `value` and `name` can be passed instead.
"""
from __future__ import annotations

import re
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from .core import FastbaseError
from .losses import per_item_loss

__all__ = ["AvgMetric", "Metric", "accuracy", "accuracy_thresh", "as_metric", "default_loss", "error_rate", "fbeta",
           "loss_activation", "per_item_loss", "top_k_accuracy"]


def accuracy(input: torch.Tensor, targs: torch.Tensor) -> torch.Tensor:
    """Fraction of items whose arg-max prediction is the target. input: (bs, n_classes), targs: (bs,)."""
    n = targs.shape[0]
    return (input.argmax(dim=-1).view(n, -1) == targs.view(n, -1)).float().mean()


def error_rate(input: torch.Tensor, targs: torch.Tensor) -> torch.Tensor:
    """1 - accuracy."""
    return 1 - accuracy(input, targs)


def top_k_accuracy(input: torch.Tensor, targs: torch.Tensor, k: int = 5) -> torch.Tensor:
    """Fraction of items whose target is among the `k` highest predictions."""
    top = input.topk(k=min(k, input.shape[-1]), dim=-1).indices
    return (top == targs.view(-1, 1)).any(dim=-1).float().mean()


def accuracy_thresh(y_pred: torch.Tensor, y_true: torch.Tensor, thresh: float = 0.5, sigmoid: bool = True):
    """Multi-label accuracy: fraction of (item, label) pairs where `pred > thresh` matches the target."""
    if sigmoid:
        y_pred = y_pred.sigmoid()
    return ((y_pred > thresh) == y_true.bool()).float().mean()


def fbeta(y_pred: torch.Tensor, y_true: torch.Tensor, thresh: float = 0.2, beta: float = 2, eps: float = 1e-9,
          sigmoid: bool = True) -> torch.Tensor:
    """Multi-label F-beta per item (labels predicted where `pred > thresh`), averaged over items."""
    beta2 = beta ** 2
    if sigmoid:
        y_pred = y_pred.sigmoid()
    y_pred, y_true = (y_pred > thresh).float(), y_true.float()
    tp = (y_pred * y_true).sum(dim=1)
    prec, rec = tp / (y_pred.sum(dim=1) + eps), tp / (y_true.sum(dim=1) + eps)
    return ((1 + beta2) * prec * rec / (prec * beta2 + rec + eps)).mean()


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


def as_metric(metric) -> Metric:
    """A metric object from a function (wrapped in AvgMetric), a Metric class, or a Metric object."""
    if isinstance(metric, type):
        metric = metric()
    if all(hasattr(metric, a) for a in ("reset", "accumulate", "value")):
        return metric
    if callable(metric):
        return AvgMetric(metric)
    raise FastbaseError(f"{metric!r} is not a metric: pass a function (pred, target) -> tensor, or an "
                        "object with reset(), accumulate(pred, *yb) and value.")


# --- losses and their activations ------------------------------------------------------------
def default_loss(data) -> nn.Module:
    """The loss the data calls for: a `loss_func` the data carries, BCEWithLogits for multi-label,
    cross-entropy for single-label classes."""
    if data.loss_func is not None:
        return data.loss_func
    if data.multi_label:
        return nn.BCEWithLogitsLoss()
    if data.c is not None:
        return nn.CrossEntropyLoss()
    raise FastbaseError("Cannot choose a loss: the data has no classes and is not multi-label. "
                        "Pass loss_func=... to the Learner (e.g. nn.MSELoss() for regression).")


def loss_activation(loss_func):
    """The activation that turns model outputs into what the loss compares: softmax for
    cross-entropy, sigmoid for BCE with logits, else identity (or `loss_func.activation`)."""
    if getattr(loss_func, "activation", None) is not None:
        return loss_func.activation
    base = loss_func.func if isinstance(loss_func, partial) else loss_func
    if isinstance(base, nn.CrossEntropyLoss) or base is F.cross_entropy:
        return partial(F.softmax, dim=-1)
    if isinstance(base, nn.BCEWithLogitsLoss) or base is F.binary_cross_entropy_with_logits:
        return torch.sigmoid
    return _identity


def _identity(x):
    return x
