"""Layer 4: mixup (Zhang et al. 2017, as in fastai v1) as a callback: each training batch is
blended with a shuffled copy of itself, and the loss with it. Validation is untouched.

For every item i a weight `lam_i ~ Beta(alpha, alpha)` is drawn and replaced by
`max(lam_i, 1 - lam_i)`, so the original item always dominates; with `j = perm(i)`:
`x_i <- lam_i * x_i + (1 - lam_i) * x_j` and the loss is `lam_i * loss(pred_i, y_i) + (1 - lam_i) *
loss(pred_i, y_j)`, averaged over the batch. The draws use torch's random generator, so
`set_seed` makes them repeatable.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..callback import Callback, Order
from ..core import FastbaseError
from ..losses import per_item_loss

__all__ = ["MixUp", "MixUpLoss"]


class MixUpLoss(nn.Module):
    """Wraps `crit` for mixed targets: a target of shape (bs, 3) holds (y_i, y_j, lam_i) per item
    (what `MixUp(stack_y=True)` makes) and gives `lam * crit(pred, y_i) + (1 - lam) * crit(pred, y_j)`;
    any other target goes to `crit` unchanged, so validation sees the plain loss."""

    def __init__(self, crit, reduction: str = "mean"):
        super().__init__()
        self.crit = crit
        self.per_item = per_item_loss(crit, "MixUp mixes one loss per item, so it needs")
        self.reduction = reduction

    def forward(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if target.ndim != 2 or target.shape[1] != 3 or not target.is_floating_point():
            return self.crit(output, target)
        return self.mix(output, target)

    def mix(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The mixed loss for a (bs, 3) target of (y_i, y_j, lam) rows."""
        y_i = target[:, 0].long()
        y_j = target[:, 1].long()
        lam = target[:, 2]
        loss = self.per_item(output, y_i) * lam + self.per_item(output, y_j) * (1 - lam)
        if self.reduction == "mean":
            return loss.mean()
        return loss.sum() if self.reduction == "sum" else loss


class MixUp(Callback):
    """Mixup on training batches with weights from Beta(`alpha`, `alpha`).

    `stack_x=False` blends the inputs; `stack_x=True` gives the model (x, x_shuffled, lam) and lets
    it mix (e.g. in a hidden layer). `stack_y=True` keeps class targets as a (bs, 3) tensor
    (y_i, y_j, lam) and mixes the losses (`MixUpLoss`); `stack_y=False` blends the targets
    themselves (class indices become one-hot), for losses that take soft targets (cross-entropy
    and BCE do). Float targets (multi-label, soft) are always blended."""
    order = Order.MIXUP
    changes_step = True

    def __init__(self, alpha: float = 0.4, stack_x: bool = False, stack_y: bool = True):
        if alpha <= 0:
            raise FastbaseError(f"MixUp needs alpha > 0, got {alpha}.")
        self.alpha = alpha
        self.stack_x = stack_x
        self.stack_y = stack_y

    def before_fit(self):
        self._loss, self._stacked = MixUpLoss(self.learn.loss_func), False

    def before_batch(self):
        learn = self.learn
        if not learn.training or not learn.yb:
            return
        x, y = learn.xb[0], learn.yb[0]
        bs = y.shape[0]
        lam = torch.distributions.Beta(self.alpha, self.alpha).sample((bs,))
        lam = torch.maximum(lam, 1 - lam).to(x.device)
        shuffle = torch.randperm(bs).to(x.device)
        x_j, y_j = x[shuffle], y[shuffle]
        if self.stack_x:
            learn.xb = (x, x_j, lam, *learn.xb[1:])
        else:
            mixed = x * _expand(lam, x).to(x.dtype) + x_j * (1 - _expand(lam, x)).to(x.dtype)
            learn.xb = (mixed, *learn.xb[1:])
        self._stacked = self.stack_y and not y.is_floating_point()
        if not self._stacked:
            y_i = y.float() if y.is_floating_point() else F.one_hot(y, self._n_classes(y)).float()
            y_j = y_i[shuffle]
            learn.yb = (y_i * _expand(lam, y_i) + y_j * (1 - _expand(lam, y_i)), *learn.yb[1:])
        else:
            learn.yb = (torch.stack([y.float(), y_j.float(), lam], dim=1), *learn.yb[1:])

    def _n_classes(self, y) -> int:
        c = self.learn.data.c
        return int(c) if c else int(y.max()) + 1

    def compute_loss(self):
        learn = self.learn
        if learn.training and getattr(self, "_stacked", False):
            return self._loss.mix(learn.pred, *learn.yb)
        return learn.loss_func(learn.pred, *learn.yb)


def _expand(lam: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(bs,) weights shaped (bs, 1, 1, ...) to broadcast against `like`."""
    return lam.view(-1, *[1] * (like.ndim - 1))
