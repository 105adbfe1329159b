"""Layer 4: progress output during fit, with three backends chosen for where the output goes:
`notebook` (fastprogress HTML bars and a results table), `console` (a bar on one line in a
terminal and a row per epoch) and `plain` (one line per epoch, for CI logs, nohup and SLURM). The bars,
and the rule of when they show, are `fastbase.progress`'s (re-exported here: `progress_disabled`,
`progress_mode`)."""
from __future__ import annotations

import math
import time

from ..callback import Callback, Order
from ..core import is_main_process
from ..progress import master_bar, progress_bar, progress_disabled, progress_mode

__all__ = ["ProgressCallback", "progress_disabled", "progress_mode"]

_UPDATE_EVERY = 0.2  # seconds between two readings of the loss for the bar's comment


def _format_time(seconds: float) -> str:
    seconds = int(seconds)
    h = seconds // 3600
    m = seconds // 60 % 60
    s = seconds % 60
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


def _format(value) -> str:
    if isinstance(value, float):
        return "#na#" if math.isnan(value) else f"{value:.6f}"
    return str(value)


class ProgressCallback(Callback):
    """A master bar over epochs, a bar over batches (its comment, the smoothed loss, read at most
    every 0.2 s), and a row per epoch: epoch, train_loss, valid_loss, each metric, time (unless
    `show_table` is False, as for lr_find). `mode` None picks the backend with `progress_mode()`."""
    order = Order.PROGRESS

    def __init__(self, mode: str | None = None, show_table: bool = True):
        if mode not in (None, "notebook", "console", "plain"):
            raise ValueError(f"mode must be 'notebook', 'console', 'plain' or None (auto), got {mode!r}.")
        self.mode, self.show_table = mode, show_table
        self.mbar = self.pbar = None

    def before_fit(self):
        self._mode = (self.mode or progress_mode()) if is_main_process() else "quiet"  # only rank 0 prints
        learn = self.learn
        self.names = learn.recorder.names
        if self._mode in ("plain", "quiet"):
            return
        self.mbar = master_bar(range(learn.start_epoch, learn.n_epochs), self._mode)
        if self.show_table:
            self.mbar.write(self.names, table=True)

    def before_epoch(self):
        self._start = time.monotonic()
        if self.mbar is not None:
            self.mbar.update(self.learn.epoch - self.learn.start_epoch)

    def _launch_bar(self):
        if self.mbar is None:
            return
        self.pbar = progress_bar(self.learn.dl, parent=self.mbar, mode=self._mode)
        self.pbar.update(0)
        self._last_comment = time.monotonic()

    before_train = before_validate = _launch_bar

    def after_batch(self):
        if self.pbar is None:
            return
        self.pbar.update(self.learn.iter + 1)
        now = time.monotonic()
        if self.learn.training and now - self._last_comment >= _UPDATE_EVERY:
            loss = self.learn.recorder.smooth_loss
            self.pbar.comment = "" if loss is None else f"{loss:.4f}"
            self._last_comment = now

    def _close_bar(self):
        if self.pbar is not None:
            self.pbar.on_iter_end()
            self.pbar = None

    after_train = after_validate = _close_bar

    def after_epoch(self):
        learn = self.learn
        if not self.show_table:
            return
        values = learn.recorder.values[-1] if learn.recorder.values else []
        row = [learn.epoch + 1, *values, _format_time(time.monotonic() - self._start)]
        if self._mode == "plain":
            cells = [f"epoch {learn.epoch + 1}/{learn.n_epochs}"]
            cells += [f"{name} {_format(v)}" for name, v in zip(self.names[1:], row[1:])]
            print("  ".join(cells), flush=True)
        elif self.mbar is not None:
            self.mbar.write([_format(v) for v in row], table=True)

    def cleanup_fit(self):
        self._close_bar()
        if self.mbar is not None:
            self.mbar.on_iter_end()
            self.mbar = None
