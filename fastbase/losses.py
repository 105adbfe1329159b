"""Layer 3: loss functions beyond torch's own, usable as `Learner(loss_func=...)` and by callbacks
(mixup mixes per-item losses). Each is an `nn.Module` with a `reduction` attribute, so
`per_item_loss` can ask it for one loss per item, and an `activation`, so predictions come out as
probabilities."""
from __future__ import annotations

import copy
import inspect
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from .core import FastbaseError

__all__ = ["LabelSmoothingCrossEntropy", "per_item_loss"]


def per_item_loss(loss_func, needed_by: str = "Losses per item need"):
    """`loss_func` returning one loss per item: a copy of an nn loss with `reduction='none'`, or the
    function with that argument bound. A loss that cannot do it is an error naming it; `needed_by`
    opens the message (who asks for per-item losses)."""
    if isinstance(loss_func, nn.Module) and hasattr(loss_func, "reduction"):
        loss = copy.copy(loss_func)
        loss.reduction = "none"
        return loss
    func = loss_func.func if isinstance(loss_func, partial) else loss_func
    try:
        takes_reduction = "reduction" in inspect.signature(func).parameters
    except (TypeError, ValueError):
        takes_reduction = False
    if takes_reduction:
        return partial(loss_func, reduction="none")
    raise FastbaseError(f"{needed_by} a loss that accepts reduction='none'; {loss_func!r} does not. "
                        f"Use an nn loss (e.g. nn.CrossEntropyLoss) or add that argument.")


class LabelSmoothingCrossEntropy(nn.Module):
    """Cross-entropy against smoothed targets: the true class gets `1 - eps + eps/c`, every other
    class `eps/c` (c classes). Per item: `(1 - eps) * nll(log_softmax(x), y) - eps/c * sum_j log_softmax(x)_j`.
    It keeps a confident model from pushing its logits apart for ever. Input (bs, c) logits,
    target (bs,) class indices; `reduction` is 'mean', 'sum' or 'none' (one value per item)."""

    def __init__(self, eps: float = 0.1, reduction: str = "mean"):
        super().__init__()
        if not 0 <= eps < 1:
            raise FastbaseError(f"LabelSmoothingCrossEntropy needs 0 <= eps < 1, got eps={eps}.")
        if reduction not in ("mean", "sum", "none"):
            raise FastbaseError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}.")
        self.eps, self.reduction = eps, reduction

    def forward(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        log_preds = F.log_softmax(output.float(), dim=-1)
        smooth = -log_preds.sum(dim=-1) * (self.eps / output.shape[-1])
        nll = F.nll_loss(log_preds, target, reduction="none")
        loss = (1 - self.eps) * nll + smooth
        if self.reduction == "mean":
            return loss.mean()
        return loss.sum() if self.reduction == "sum" else loss

    @staticmethod
    def activation(output: torch.Tensor) -> torch.Tensor:
        """Probabilities from the logits (what `get_preds` and `predict` return)."""
        return F.softmax(output, dim=-1)

    def extra_repr(self) -> str:
        return f"eps={self.eps}, reduction={self.reduction!r}"
