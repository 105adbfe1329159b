"""Layer 4: `ShowGraph` (fastai v1's `fastai.train.ShowGraph`): the loss curves redrawn after every
epoch, in place, while a notebook trains."""
from __future__ import annotations

import sys

from ..callback import Callback, Order

__all__ = ["ShowGraph"]


class ShowGraph(Callback):
    """After each epoch, draws `recorder.plot_losses()` (training loss per batch, validation loss per
    epoch) and, in a notebook, shows it in one output that each epoch replaces. `fig` keeps the
    last drawing (also outside a notebook, where nothing is shown)."""
    order = Order.RECORDER + 5  # after the Recorder has closed the epoch's row

    def __init__(self, learn=None):
        self.fig, self._handle = None, None

    def before_fit(self):
        self._handle = None

    def after_epoch(self):
        self.fig = self.learn.recorder.plot_losses()
        ipython = sys.modules.get("IPython")  # shown only where IPython runs (a notebook kernel)
        shell = ipython.get_ipython() if ipython is not None else None
        if shell is None or type(shell).__name__ != "ZMQInteractiveShell":
            return
        from IPython.display import display

        if self._handle is None:
            self._handle = display(self.fig, display_id=True)
        else:
            self._handle.update(self.fig)
