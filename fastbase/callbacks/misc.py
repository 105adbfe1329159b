"""Layer 4: small callbacks of fastai v1's `fastai.callbacks.misc`: `StopAfterNBatches`, to try a
set-up on a few batches before a real run."""
from __future__ import annotations

from ..callback import Callback, CancelFitException, Order

__all__ = ["StopAfterNBatches"]


class StopAfterNBatches(Callback):
    """Stops the fit after `n_batches` training batches, without validating (a quick check that the
    model, the data and the loss run together)."""

    order = Order.EARLY_STOPPING  # after the Recorder, loggers and the bar have seen the last batch

    def __init__(self, learn=None, n_batches: int = 2):
        self.n_batches = int(n_batches)
        self.seen = 0

    def before_fit(self):
        self.seen = 0

    def after_batch(self):
        if self.learn.training:
            self.seen += 1
            if self.seen >= self.n_batches:
                raise CancelFitException()
