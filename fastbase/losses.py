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
        if output.dim() > 2 and self.axis % output.dim() == output.dim() - 1:
            # classes already last (a language model's (bs, seq_len, vocab)): F.cross_entropy on the flat
            # (N, c) view reads memory in order; on the moved (bs, c, seq_len) view it runs several times slower
            loss = F.cross_entropy(output.reshape(-1, output.shape[-1]).float(), target.reshape(-1).long(),
                                   weight=self.weight, ignore_index=self.ignore_index, reduction=self.reduction)
            return loss.view(target.shape) if self.reduction == "none" else loss
        return F.cross_entropy(scores.float(), target.long(), weight=self.weight, ignore_index=self.ignore_index,
                               reduction=self.reduction)

    def activation(self, output: torch.Tensor) -> torch.Tensor:
        """Probabilities along the class axis (what `get_preds` and `predict` return)."""
        return F.softmax(output, dim=self.axis)

    def extra_repr(self) -> str:
        return f"axis={self.axis}, reduction={self.reduction!r}"


__all__ += ["BCEFlat", "BCEWithLogitsFlat", "FlattenedLoss", "L1LossFlat", "MSELossFlat"]


class FlattenedLoss(nn.Module):
    """fastai v1's `FlattenedLoss(func, *args, axis=-1, floatify=False, is_2d=True, **kwargs)`: the loss
    `func(*args, **kwargs)` (an nn loss class) on input and target flattened, `axis` moved last first:
    (N, c) against (N,) when `is_2d` (class scores along `axis`), else both as one vector. `floatify`
    makes the target float (regression on integer targets). `reduction` ('mean', 'sum' or 'none', one
    loss per item of the batch: the mean over its positions) is applied here, so a copy of the loss
    (`per_item_loss`) never changes the original's."""

    def __init__(self, func, *args, axis: int = -1, floatify: bool = False, is_2d: bool = True,
                 reduction: str = "mean", **kwargs):
        super().__init__()
        if reduction not in ("mean", "sum", "none"):
            raise FastbaseError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}.")
        self.func = func(*args, reduction="none", **kwargs)
        self.axis, self.floatify, self.is_2d, self.reduction = axis, floatify, is_2d, reduction

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        inp = input.movedim(self.axis, -1) if input.dim() > 1 else input  # the other axes keep their order
        same = not self.is_2d and target.dim() == input.dim() > 1
        targ = target.movedim(self.axis, -1) if same else target
        if self.floatify:
            targ = targ.float()
        n_in = inp.shape[-1] if self.is_2d else 1
        if targ.numel() * n_in != inp.numel():
            raise FastbaseError(f"{self!r}: the input {tuple(input.shape)} and the target {tuple(target.shape)} do not "
                                f"hold the same number of {'items' if self.is_2d else 'values'}.")
        loss = self.func(inp.reshape(-1, n_in) if self.is_2d else inp.reshape(-1), targ.reshape(-1))
        if self.reduction == "none":
            return loss.reshape(input.shape[0], -1).mean(1)
        return loss.mean() if self.reduction == "mean" else loss.sum()

    def extra_repr(self) -> str:
        return f"axis={self.axis}, reduction={self.reduction!r}"


class MSELossFlat(FlattenedLoss):
    """Mean squared error of input and target flattened (any matching shapes; the target as float)."""

    def __init__(self, *args, axis: int = -1, floatify: bool = True, **kwargs):
        super().__init__(nn.MSELoss, *args, axis=axis, floatify=floatify, is_2d=False, **kwargs)


class L1LossFlat(FlattenedLoss):
    """Mean absolute error of input and target flattened (the pixel loss of lesson 7's super-resolution)."""

    def __init__(self, *args, axis: int = -1, floatify: bool = True, **kwargs):
        super().__init__(nn.L1Loss, *args, axis=axis, floatify=floatify, is_2d=False, **kwargs)


class BCEFlat(FlattenedLoss):
    """Binary cross-entropy of probabilities and 0/1 targets, flattened."""

    def __init__(self, *args, axis: int = -1, floatify: bool = True, **kwargs):
        super().__init__(nn.BCELoss, *args, axis=axis, floatify=floatify, is_2d=False, **kwargs)


class BCEWithLogitsFlat(FlattenedLoss):
    """Binary cross-entropy of logits and 0/1 targets, flattened; predictions come out through a sigmoid."""

    def __init__(self, *args, axis: int = -1, floatify: bool = True, **kwargs):
        super().__init__(nn.BCEWithLogitsLoss, *args, axis=axis, floatify=floatify, is_2d=False, **kwargs)

    @staticmethod
    def activation(output: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(output)
