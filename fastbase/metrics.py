"""Layer 5 (helper of the Learner): metrics, and the glue between losses and predictions.

Metric functions take `(pred, target)` batches and return the batch mean on the device. The
Learner wraps each in `AvgMetric`, which averages over the validation set weighted by batch size
(exact for these per-item means, whatever the batch sizes) and reads the device once per epoch.
A class with `reset()`, `accumulate(pred, *yb)`, `value` and `name` can be passed instead; the
whole-set metrics (`FBeta`, `AUROC`, `KappaScore`, `R2Score`... in `fastbase.metric_scores` and
`fastbase.metric_regression`) are such classes, and the functions that are not means of per-item
values (`rmse`, `r2_score`, `explained_variance`, `exp_rmspe`) are scored by them (`as_metric`).
This module gathers fastai v1's `fastai.metrics` names.
"""
from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from .core import FastbaseError
from .losses import per_item_loss
from .metric_base import AvgMetric, Metric, MetricError, WholeSetMetric
from .metric_regression import (
    RMSE,
    ExplainedVariance,
    ExpRMSPE,
    R2Score,
    RegMetrics,
    exp_rmspe,
    explained_variance,
    mae,
    mean_absolute_error,
    mean_squared_error,
    mean_squared_logarithmic_error,
    mse,
    msle,
    r2_score,
    rmse,
    root_mean_squared_error,
)
from .metric_scores import (
    AUROC,
    CMScores,
    ConfusionMatrix,
    FBeta,
    KappaScore,
    MatthewsCorreff,
    MultiLabelFbeta,
    Precision,
    Recall,
    auc_roc_score,
    roc_curve,
)

__all__ = ["AUROC", "RMSE", "AvgMetric", "CMScores", "ConfusionMatrix", "ExpRMSPE", "ExplainedVariance", "FBeta",
           "KappaScore", "MatthewsCorreff", "Metric", "MetricError", "MultiLabelFbeta", "Precision", "R2Score",
           "Recall", "RegMetrics", "WholeSetMetric", "accuracy", "accuracy_thresh", "as_metric", "auc_roc_score",
           "default_loss", "error_rate", "exp_rmspe", "explained_variance", "fbeta", "foreground_acc",
           "loss_activation", "mae", "mean_absolute_error", "mean_squared_error", "mean_squared_logarithmic_error",
           "mse", "msle", "per_item_loss", "r2_score", "rmse", "roc_curve", "root_mean_squared_error", "top_k_accuracy"]

# Functions whose value over a set is not the mean of their batch values: a Learner scores them
# over the whole validation set with these classes.
WHOLE_SET = {root_mean_squared_error: RMSE, r2_score: R2Score, explained_variance: ExplainedVariance,
             exp_rmspe: ExpRMSPE}


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


def foreground_acc(input: torch.Tensor, target: torch.Tensor, void_code: int) -> torch.Tensor:
    """Accuracy over the pixels (or items) whose target is not `void_code`: predictions (bs, c, ...)
    against class indexes (bs, ...) or (bs, 1, ...). 0 when every target is `void_code`."""
    if target.dim() == input.dim():
        target = target.squeeze(1)
    kept = target != void_code
    correct = (input.argmax(dim=1) == target) & kept
    return correct.sum().float() / kept.sum().clamp_min(1).float()


def as_metric(metric) -> Metric:
    """A metric object from a function (wrapped in AvgMetric, or scored over the whole set when
    `WHOLE_SET` says so), a Metric class, or a Metric object."""
    if isinstance(metric, type):
        metric = metric()
    if callable(metric) and not isinstance(metric, partial) and metric in WHOLE_SET:
        return WHOLE_SET[metric](name=metric.__name__)
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
