"""Layer 3: loss functions beyond torch's own, usable as `Learner(loss_func=...)` and by callbacks
(mixup mixes per-item losses). Each is an `nn.Module` with a `reduction` attribute, so
`per_item_loss` can ask it for one loss per item, and an `activation`, so predictions come out as
probabilities."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .core import FastbaseError

__all__ = ["LabelSmoothingCrossEntropy"]


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
