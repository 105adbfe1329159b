"""Layer 3: the Recorder, the callback every fit runs: losses, learning rates and momentum per batch,
validation loss and metrics per epoch, and the plots drawn from them."""
from __future__ import annotations

import math

import numpy as np
import torch

from .callback import Callback, Order
from .core import FastbaseError
from .figures import finish_figure, subplots

__all__ = ["Recorder"]

_RENAMED = {"nb_batches": "n_batches", "metrics_names": "metric_names"}  # state keys of older checkpoints


class Recorder(Callback):
    """Records training: loss per batch (kept on the device, read in bulk at the end of each epoch
    or when asked), lr and momentum per batch, and per epoch the smoothed training loss, the
    validation loss and metrics. `plot*` methods return matplotlib Figures."""
    order = Order.RECORDER
    beta = 0.98  # smoothing of the training loss, as fastai

    def __init__(self):
        self.reset()

    def reset(self) -> None:
        self.lrs = []
        self.moms = []
        self.n_batches = []
        self.values = []
        self._losses = []
        self._smooth = []
        self._pending = []
        self._avg = 0.0
        self.metric_names: list[str] = []
        self.lr_suggestions = None  # set by lr_find

    def before_fit(self):
        self.reset()
        self.metric_names = list(getattr(self.learn, "metric_names", []))

    def add_metric_names(self, names) -> None:
        """Add columns after the metrics (fastai v1's name), for a callback that reports its own values: it
        calls this in `before_fit` (order after `Order.RECORDER`) and appends one value per name to
        `learn.valid_values` in `after_validate` (`PeakMemMetric` does)."""
        self.metric_names += list(names)

    def after_loss(self):  # recorded as soon as known, so a batch stopped later still counts
        learn = self.learn
        if not learn.training:
            return
        self._pending.append(learn.loss)
        self.lrs.append(learn.opt.lr)
        self.moms.append(learn.opt.mom)

    def after_train(self):
        self._flush()
        self.n_batches.append(len(self._losses) - sum(self.n_batches))

    def after_epoch(self):
        valid = getattr(self.learn, "valid_values", None)
        valid = [math.nan] * (1 + len(self.metric_names)) if valid is None else list(valid)
        train = self._smooth[-1] if self._smooth else math.nan
        self.values.append([train, *valid])

    def _flush(self) -> None:
        if not self._pending:
            return
        losses = torch.stack([t.float().reshape(()) for t in self._pending]).cpu().tolist()  # one sync
        self._pending = []
        for loss in losses:
            self._avg = self.beta * self._avg + (1 - self.beta) * loss
            self._losses.append(loss)
            self._smooth.append(self._avg / (1 - self.beta ** len(self._losses)))

    @property
    def names(self) -> list[str]:
        """The columns of the per-epoch table: 'epoch', 'train_loss', 'valid_loss', each metric, 'time'."""
        return ["epoch", *self.value_names, "time"]

    @property
    def value_names(self) -> list[str]:
        """What each row of `values` holds: 'train_loss', 'valid_loss', then each metric."""
        return ["train_loss", "valid_loss", *self.metric_names]

    def last_value(self, name: str) -> float:
        """The last epoch's value of `name` (one of `value_names`); NaN where it was not computed (no
        validation set) or no epoch has ended."""
        row = self.values[-1] if self.values else []
        index = self.value_names.index(name)
        return float(row[index]) if index < len(row) and row[index] is not None else math.nan

    # --- what was recorded, as floats -----------------------------------------------------
    @property
    def losses(self) -> list[float]:
        """Training loss of every batch."""
        self._flush()
        return list(self._losses)

    @property
    def smooth_losses(self) -> list[float]:
        """Exponential moving average (beta 0.98, debiased) of the training losses."""
        self._flush()
        return list(self._smooth)

    @property
    def smooth_loss(self) -> float | None:
        """The latest smoothed training loss (reads the device)."""
        self._flush()
        return self._smooth[-1] if self._smooth else None

    @property
    def val_losses(self) -> list[float]:
        return [v[1] for v in self.values]

    @property
    def metrics(self) -> list[list[float]]:
        return [v[2:] for v in self.values]

    def state_dict(self) -> dict:
        self._flush()
        return {"lrs": list(self.lrs), "moms": list(self.moms), "n_batches": list(self.n_batches),
                "values": [list(v) for v in self.values], "losses": list(self._losses),
                "smooth": list(self._smooth), "avg": self._avg, "metric_names": list(self.metric_names)}

    def load_state_dict(self, state: dict) -> None:
        """What `state_dict` gave; also one saved under the keys older versions wrote
        (fastai v1's spellings 'nb_batches' and 'metrics_names')."""
        state = {_RENAMED.get(k, k): v for k, v in state.items()}
        self.reset()
        self.lrs = list(state["lrs"])
        self.moms = list(state["moms"])
        self.n_batches = list(state["n_batches"])
        self.values, self._losses = [list(v) for v in state["values"]], list(state["losses"])
        self._smooth = list(state["smooth"])
        self._avg = state["avg"]
        self.metric_names = list(state["metric_names"])

    # --- plots (matplotlib imported here, not at import time) ------------------------------
    def plot(self, skip_start: int = 10, skip_end: int = 5, suggestion: bool = False, return_fig: bool | None = None,
             save_to=None):
        """Smoothed loss against the learning rate (log scale), as after `lr_find`; with `suggestion`,
        marks lr_find's valley, steep and minimum suggestions. Returns the Figure (every plot here
        takes `save_to=path` and `return_fig`, see `fastbase.figures.finish_figure`)."""
        lrs, losses = np.array(self.lrs, dtype=float), np.array(self.smooth_losses)
        end = len(lrs) - skip_end
        if end - skip_start < 2:
            raise FastbaseError(f"Only {len(lrs)} points recorded: too few to plot with skip_start={skip_start} "
                                f"and skip_end={skip_end}. Run lr_find with more iterations or lower the skips.")
        fig, ax = subplots()
        ax.plot(lrs[skip_start:end], losses[skip_start:end])
        ax.set(xscale="log", xlabel="Learning rate", ylabel="Loss (smoothed)")
        if suggestion:
            if self.lr_suggestions is None:
                raise FastbaseError("No suggestions to mark: they come from lr_find; run learn.lr_find() first.")
            for (name, lr), marker in zip(self.lr_suggestions._asdict().items(), "o^s"):
                nearest = int(np.nanargmin(np.abs(np.log10(lrs) - np.log10(lr))))
                ax.plot(lr, losses[nearest], marker, label=f"{name}: {lr:.2e}")
            ax.legend()
        return finish_figure(fig, return_fig, save_to)

    def plot_losses(self, skip_start: int = 0, skip_end: int = 0, return_fig: bool | None = None, save_to=None):
        """Training loss per batch (raw and smoothed) and validation loss at the end of each epoch,
        leaving out the first `skip_start` and the last `skip_end` batches (as fastai v1)."""
        if not self._losses and not self._pending:
            raise FastbaseError("No training loss recorded yet: call fit first.")
        fig, ax = subplots()
        losses = np.asarray(self.losses)
        keep = np.arange(len(losses))[skip_start:len(losses) - skip_end]
        ax.plot(keep, losses[keep], alpha=0.3, label="train")
        ax.plot(keep, np.asarray(self.smooth_losses)[keep], label="train (smoothed)")
        ends = (np.cumsum(self.n_batches) - 1)[:len(self.val_losses)]
        shown = [(e, v) for e, v in zip(ends, self.val_losses) if len(keep) and keep[0] <= e <= keep[-1]]
        if shown:
            ax.plot(*zip(*shown), "o-", label="valid")
        ax.set(xlabel="Batches processed", ylabel="Loss")
        ax.legend()
        return finish_figure(fig, return_fig, save_to)

    def plot_lr(self, show_moms: bool = True, return_fig: bool | None = None, save_to=None):
        """Learning rate (of the last layer group) per batch, and momentum beside it with `show_moms`."""
        if not self.lrs:
            raise FastbaseError("No learning rate recorded yet: call fit first.")
        show_moms = show_moms and any(m is not None for m in self.moms)
        fig, axes = subplots(1, 2 if show_moms else 1, figsize=(10 if show_moms else 6, 4))
        axes = axes if show_moms else [axes]
        axes[0].plot(self.lrs)
        axes[0].set(xlabel="Iterations", ylabel="Learning rate")
        if show_moms:
            axes[1].plot(self.moms)
            axes[1].set(xlabel="Iterations", ylabel="Momentum")
        return finish_figure(fig, return_fig, save_to)

    def plot_metrics(self, return_fig: bool | None = None, save_to=None):
        """Each metric per epoch, one panel each."""
        if not self.metric_names or not self.values:
            raise FastbaseError("No metrics recorded: pass metrics=[...] to the Learner and call fit.")
        n = len(self.metric_names)
        fig, axes = subplots(n, 1, figsize=(6, 3 * n), squeeze=False)
        for i, (name, ax) in enumerate(zip(self.metric_names, axes[:, 0])):
            ax.plot(range(1, len(self.values) + 1), [m[i] for m in self.metrics], "o-")
            ax.set(xlabel="Epoch", ylabel=name)
        return finish_figure(fig, return_fig, save_to)

