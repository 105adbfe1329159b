"""Layer 5 (helper of the Learner): regression metrics under fastai v1's names: the batch functions
`mean_squared_error`/`mse`, `mean_absolute_error`/`mae`, `root_mean_squared_error`/`rmse`,
`mean_squared_logarithmic_error`/`msle`, `r2_score`, `explained_variance`, `exp_rmspe`, and the
whole-set metrics `R2Score`, `ExplainedVariance`, `RMSE`, `ExpRMSPE`.

Predictions and targets are compared element by element (both flattened). Means of per-item values
(MSE, MAE, MSLE) are exact when averaged over batches; the others are not, so a Learner given
`rmse`, `r2_score`, `explained_variance` or `exp_rmspe` scores them over the whole validation set
with the matching class (`fastbase.metrics.as_metric`). torchmetrics computes what it has.
"""
from __future__ import annotations

import torch

from .metric_base import WholeSetMetric, flatten_check, torchmetrics_functional

__all__ = ["RMSE", "ExpRMSPE", "ExplainedVariance", "R2Score", "RegMetrics", "exp_rmspe", "explained_variance",
           "mae", "mean_absolute_error", "mean_squared_error", "mean_squared_logarithmic_error", "mse", "msle",
           "r2_score", "rmse", "root_mean_squared_error"]


def mean_squared_error(pred: torch.Tensor, targ: torch.Tensor) -> torch.Tensor:
    """Mean of (pred - targ)²."""
    return torchmetrics_functional().mean_squared_error(*flatten_check(pred, targ))


def mean_absolute_error(pred: torch.Tensor, targ: torch.Tensor) -> torch.Tensor:
    """Mean of |pred - targ|."""
    return torchmetrics_functional().mean_absolute_error(*flatten_check(pred, targ))


def root_mean_squared_error(pred: torch.Tensor, targ: torch.Tensor) -> torch.Tensor:
    """Square root of the mean squared error (over the whole set when it is a Learner's metric)."""
    return torchmetrics_functional().mean_squared_error(*flatten_check(pred, targ), squared=False)


def mean_squared_logarithmic_error(pred: torch.Tensor, targ: torch.Tensor) -> torch.Tensor:
    """Mean of (log(1 + pred) - log(1 + targ))²; values must be above -1."""
    return torchmetrics_functional().mean_squared_log_error(*flatten_check(pred, targ))


def explained_variance(pred: torch.Tensor, targ: torch.Tensor) -> torch.Tensor:
    """1 - Var(targ - pred) / Var(targ)."""
    return torchmetrics_functional().explained_variance(*flatten_check(pred, targ))


def r2_score(pred: torch.Tensor, targ: torch.Tensor) -> torch.Tensor:
    """Coefficient of determination: 1 - Σ(targ - pred)² / Σ(targ - mean(targ))²."""
    return torchmetrics_functional().r2_score(*flatten_check(pred, targ))


def exp_rmspe(pred: torch.Tensor, targ: torch.Tensor) -> torch.Tensor:
    """Root mean squared percentage error of exp(pred) against exp(targ), for a model trained on
    log values (lesson 6, Rossmann)."""
    pred, targ = (t.exp() for t in flatten_check(pred, targ))
    return (((targ - pred) / targ) ** 2).mean().sqrt()


mse, mae, rmse, msle = mean_squared_error, mean_absolute_error, root_mean_squared_error, mean_squared_logarithmic_error


class RegMetrics(WholeSetMetric):
    """A regression metric over the whole set: `func` on all predictions and targets, flattened."""
    func = staticmethod(mean_squared_error)

    def prepare(self, pred, targ):
        return flatten_check(pred, targ)

    def compute(self, preds, targs):
        return self.func(preds, targs)


class R2Score(RegMetrics):
    """R² over the whole validation set."""
    func = staticmethod(r2_score)


class ExplainedVariance(RegMetrics):
    """Explained variance over the whole validation set."""
    func = staticmethod(explained_variance)


class RMSE(RegMetrics):
    """Root mean squared error over the whole validation set."""
    func = staticmethod(root_mean_squared_error)


class ExpRMSPE(RegMetrics):
    """`exp_rmspe` over the whole validation set."""
    func = staticmethod(exp_rmspe)
