"""Layer 4: loggers that keep the history of a run outside the process: `CSVLogger` (one row per
epoch in a CSV file) and `TensorBoardLogger` (losses, metrics, learning rates for TensorBoard).

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


class TensorBoardLogger(Callback):
    """Writes TensorBoard event files under `log_dir` (default `learn.path/runs/{name}`, `name`
    default a timestamp): per training batch `train/loss` and `train/lr` (and `train/mom`), per
    epoch `epoch/train_loss`, `epoch/valid_loss` and `epoch/<metric>`. Batch values are written at
    the end of each epoch from the Recorder (no device read per batch). The step count goes on
    across fits and is in `state_dict()`. Needs the `tensorboard` package
    (`pip install fastbase[tensorboard]`)."""
    order = Order.TENSORBOARD_LOGGER

    def __init__(self, log_dir=None, name: str | None = None):
        self.log_dir, self.run_name = log_dir, name
        self.step = 0
        self.epochs = 0
        self.writer = None

    def _open(self):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as e:
            raise FastbaseError("TensorBoardLogger needs the tensorboard package: pip install tensorboard "
                                "(or pip install 'fastbase[tensorboard]').") from e
        if self.log_dir is None:
            self.run_name = self.run_name or time.strftime("%Y%m%d-%H%M%S")
            self.log_dir = pathlib.Path(self.learn.path) / "runs" / self.run_name
        return SummaryWriter(log_dir=str(self.log_dir))

    def before_fit(self):
        if not is_main_process():
            return
        if self.writer is None:
            self.writer = self._open()
        self._seen = 0  # the Recorder starts afresh each fit

    def after_epoch(self):
        learn = self.learn
        if self.writer is None:
            return
        recorder, writer = learn.recorder, self.writer
        losses = recorder.losses  # one read of the device for the whole epoch
        for i in range(self._seen, len(losses)):
            writer.add_scalar("train/loss", losses[i], self.step)
            writer.add_scalar("train/lr", recorder.lrs[i], self.step)
            if recorder.moms[i] is not None:
                writer.add_scalar("train/mom", recorder.moms[i], self.step)
            self.step += 1
        self._seen = len(losses)
        if recorder.values:
            names = recorder.value_names
            self.epochs += 1
            for name, value in zip(names, recorder.values[-1]):
                if not math.isnan(value):
                    writer.add_scalar(f"epoch/{name}", value, self.epochs)
        writer.flush()

    def cleanup_fit(self):
        if self.writer is not None:
            self.writer.flush()

    def close(self) -> None:
        """Close the event file; a later fit opens a new one in the same folder."""
        if self.writer is not None:
            self.writer.close()
            self.writer = None

    def state_dict(self) -> dict:
        return {"step": self.step, "epochs": self.epochs}

    def load_state_dict(self, state: dict) -> None:
        self.step, self.epochs = int(state["step"]), int(state["epochs"])
