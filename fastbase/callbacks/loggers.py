"""Layer 4: loggers that keep the history of a run outside the process: `CSVLogger` (one row per
epoch in a CSV file) and `TensorBoardLogger` (losses, metrics, learning rates, histograms, images and
the model's graph for TensorBoard; defined in `fastbase.callbacks.tensorboard`).

Both read what the Recorder has already gathered, once per epoch, so they add no device read
per batch; both write at the end of every epoch, so a run that dies keeps its history up to the
last finished epoch. They stay out of `lr_find` runs, and under torchrun only rank 0 writes.
"""
from __future__ import annotations

import csv
import math
import pathlib
import time
import warnings

from ..callback import Callback, Order
from ..core import FastbaseError, is_main_process
from .tensorboard import TensorBoardLogger

__all__ = ["CSVLogger", "TensorBoardLogger"]


def _cell(value) -> str:
    if isinstance(value, float):
        return "nan" if math.isnan(value) else repr(value)
    return str(value)


class CSVLogger(Callback):
    """Writes `learn.path/{fname}.csv`: a header (epoch, train_loss, valid_loss, each metric,
    time) then one row per epoch, written and flushed at the end of that epoch. `epoch` counts
    from 1 as in the progress table, `time` is the epoch's seconds, losses and metrics are the
    Recorder's values at full precision ('nan' where absent). Each fit starts the file afresh, as
    in fastai v1; `append=True` keeps the rows already there (earlier fits, a resumed run) and
    writes the header only into a new file. (`fname` is fastai v1's `filename`: fastbase spells a
    file's name `fname` everywhere, as `untar_data` and `export` do.)"""
    order = Order.CSV_LOGGER

    def __init__(self, fname: str = "history", append: bool = False):
        self.fname, self.append = fname, append

    @property
    def path(self) -> pathlib.Path:
        return pathlib.Path(self.learn.path) / f"{self.fname}.csv"

    def before_fit(self):
        if not is_main_process():
            return
        self.names = self.learn.recorder.names
        path = self.path
        path.parent.mkdir(parents=True, exist_ok=True)
        keep = self.append and path.is_file() and path.stat().st_size > 0
        if keep:
            with open(path, newline="") as f:
                header = next(csv.reader(f), None)
            if header != self.names:
                warnings.warn(f"{path} has columns {header}, this run logs {self.names}: a new header row "
                              "follows the earlier rows.", stacklevel=2)
                self._write(self.names, "a")
        else:
            self._write(self.names, "w")

    def before_epoch(self):
        self._start = time.monotonic()

    def after_epoch(self):
        learn = self.learn
        if not learn.recorder.values or not is_main_process():
            return
        row = [learn.epoch + 1, *learn.recorder.values[-1], round(time.monotonic() - self._start, 3)]
        self._write([_cell(v) for v in row], "a")

    def _write(self, cells, mode: str) -> None:
        with open(self.path, mode, newline="") as f:  # opened per row: flushed and closed each epoch
            csv.writer(f).writerow(cells)

    def read_logged_file(self):
        """The CSV as a pandas DataFrame (pandas is imported here, and only here)."""
        try:
            import pandas as pd
        except ImportError as e:
            raise FastbaseError("read_logged_file needs pandas: pip install pandas "
                                f"(or read {self.path} with the csv module).") from e
        return pd.read_csv(self.path)
