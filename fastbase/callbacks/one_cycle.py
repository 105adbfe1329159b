"""Layer 4: the one-cycle schedule (Leslie Smith; fastai's `fit_one_cycle`) as a callback."""
from __future__ import annotations

import numpy as np

from ..callback import Callback, Order, annealing_cos
from ..core import ifnone

__all__ = ["OneCycleScheduler"]


class OneCycleScheduler(Callback):
    """Learning rate: cosine warm-up from `max_lr/div_factor` to `max_lr` over the first `pct_start`
    of the training iterations, then cosine annealing down to `max_lr/final_div` at the last
    iteration. Momentum does the opposite: `moms[0]` -> `moms[1]` -> `moms[0]` (None: untouched).

    `max_lr` is a float or one value per layer group. The position is the count of training
    batches seen (`state_dict`), so a resumed run continues on the curve; `start_epoch` starts
    the count at that epoch. `tot_epochs` spreads the cycle over more epochs than this fit runs.
    """
    order = Order.SCHEDULER

    def __init__(self, max_lr, moms=(0.95, 0.85), div_factor: float = 25.0, pct_start: float = 0.3,
                 final_div: float | None = None, tot_epochs: int | None = None, start_epoch: int | None = None):
        self.max_lr = np.asarray(max_lr, dtype=float) if np.ndim(max_lr) else float(max_lr)
        self.moms = moms
        self.div_factor = div_factor
        self.pct_start = pct_start
        self.final_div = ifnone(final_div, div_factor * 1e4)
        self.tot_epochs, self.start_epoch = tot_epochs, start_epoch
        self.iteration = None

    def before_fit(self):
        n_batches = len(self.learn.data.train_dl)
        self.total = n_batches * ifnone(self.tot_epochs, self.learn.n_epochs)
        self.warmup = int(self.total * self.pct_start)
        if self.iteration is None:
            self.iteration = ifnone(self.start_epoch, 0) * n_batches

    def values_at(self, iteration: int):
        """(lr, momentum) for the batch at `iteration` (0-based)."""
        low = self.max_lr / self.div_factor
        high = self.max_lr
        final = self.max_lr / self.final_div
        if iteration < self.warmup:
            pct = iteration / self.warmup
            lrs = (low, high)
            moms = self.moms
        else:
            pct = min(1.0, (iteration - self.warmup) / max(1, self.total - self.warmup - 1))
            lrs, moms = (high, final), None if self.moms is None else self.moms[::-1]
        lr = annealing_cos(*lrs, pct)
        mom = None if moms is None else annealing_cos(*moms, pct)
        return lr, mom

    def before_batch(self):
        if self.learn.training:
            lr, mom = self.values_at(self.iteration)
            self.learn.opt.lr = lr
            if mom is not None:
                self.learn.opt.mom = mom

    def after_batch(self):
        if self.learn.training:
            self.iteration += 1

    def state_dict(self) -> dict:
        return {"iteration": self.iteration}

    def load_state_dict(self, state: dict) -> None:
        self.iteration = state["iteration"]
