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


__all__ += ["CrossEntropyFlat"]


class CrossEntropyFlat(nn.Module):
    """Cross-entropy with the class scores along `axis` of the input, every other position a separate
    prediction: fastai v1's `CrossEntropyFlat(axis=1)` for segmentation, where the input is
    (bs, c, H, W) logits and the target (bs, H, W) class indices (or (bs, 1, H, W), as masks load).
    The mean is over all pixels, as if both were flattened to (bs*H*W, c) and (bs*H*W,).

    `reduction='none'` keeps one loss per position in the target's shape, (bs, H, W) (v1 flattened
    them), so `get_preds(with_loss=True)` averages them into one loss per image. `weight` (one per
    class) and `ignore_index` (a void code) are `F.cross_entropy`'s. The default `axis` is 1 (v1's was
    -1; the same for (bs, c) input): an exported Learner rebuilds its loss with the defaults, so they
    are the segmentation ones."""

    def __init__(self, axis: int = 1, weight: torch.Tensor | None = None, ignore_index: int = -100,
                 reduction: str = "mean"):
        super().__init__()
        if reduction not in ("mean", "sum", "none"):
            raise FastbaseError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}.")
        self.axis = axis
        self.ignore_index = ignore_index
        self.reduction = reduction
        self.register_buffer("weight", weight, persistent=False)

    def forward(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        scores = output.movedim(self.axis, 1) if output.dim() > 2 else output  # F.cross_entropy wants classes at dim 1
        if target.dim() == scores.dim() and target.shape[1] == 1:
            target = target.squeeze(1)
        if target.shape != scores.shape[:1] + scores.shape[2:]:
            raise FastbaseError(f"CrossEntropyFlat(axis={self.axis}): the output {tuple(output.shape)} has "
                                f"{output.shape[self.axis]} class scores at axis {self.axis}, so the target should "
                                f"have shape {tuple(scores.shape[:1] + scores.shape[2:])}, but it is "
                                f"{tuple(target.shape)}.")
        return F.cross_entropy(scores.float(), target.long(), weight=self.weight, ignore_index=self.ignore_index,
                               reduction=self.reduction)

    def activation(self, output: torch.Tensor) -> torch.Tensor:
        """Probabilities along the class axis (what `get_preds` and `predict` return)."""
        return F.softmax(output, dim=self.axis)

    def extra_repr(self) -> str:
        return f"axis={self.axis}, reduction={self.reduction!r}"

__all__ += ["MSELossFlat"]


class MSELossFlat(nn.Module):
    """Mean squared error between outputs and targets of the same number of values per item, each
    flattened to (bs, -1): fastai v1's loss for points, whose model gives `2 * n_points` numbers and
    whose targets are `(bs, n_points, 2)`. `reduction='none'` gives one loss per item (its mean)."""

    def __init__(self, reduction: str = "mean"):
        super().__init__()
        if reduction not in ("mean", "sum", "none"):
            raise FastbaseError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}.")
        self.reduction = reduction

    def forward(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        out, targ = output.reshape(len(output), -1).float(), target.reshape(len(target), -1).float()
        if out.shape != targ.shape:
            raise FastbaseError(f"MSELossFlat: the output {tuple(output.shape)} and the target {tuple(target.shape)} "
                                "hold different numbers of values per item (a points model gives 2 * n_points).")
        loss = F.mse_loss(out, targ, reduction="none")
        return loss.mean(1) if self.reduction == "none" else (loss.sum() if self.reduction == "sum" else loss.mean())
