"""Layer 4: callbacks that watch a value per epoch and act on it: `EarlyStopping`,
`SaveModelCallback`, `ReduceLROnPlateau`; and `TerminateOnNaN`, which watches every batch.

The watched value (`monitor`) is 'train_loss' (smoothed, as in the table), 'valid_loss' or the
name of a metric, read from the Recorder at the end of each epoch. `mode='auto'` minimises losses
and errors and maximises the rest (accuracy, F-beta...). Each callback keeps its state in
`state_dict()`, so a checkpoint can resume it. Probe runs (`lr_find`, `overfit`, `sanity_check`) leave them out.
"""
from __future__ import annotations

import math
import warnings

import numpy as np
import torch

from ..callback import Callback, CancelFitException, Order
from ..core import FastbaseError, is_main_process
from .progress import progress_disabled

__all__ = ["EarlyStopping", "ReduceLROnPlateau", "SaveModelCallback", "TerminateOnNaN", "TrackerCallback",
           "TrainingDiverged", "monitor_mode"]

_MINIMISED = ("loss", "err", "mse", "mae", "perplexity")  # 'auto' mode: names holding these go down


def monitor_mode(monitor: str, mode: str = "auto") -> str:
    """'min' or 'max': `mode` itself, or for 'auto' 'min' when the name is a loss or an error, else 'max'."""
    if mode not in ("auto", "min", "max"):
        raise FastbaseError(f"mode must be 'auto', 'min' or 'max', got {mode!r}.")
    return mode if mode != "auto" else ("min" if any(k in monitor.lower() for k in _MINIMISED) else "max")


class TrainingDiverged(UserWarning):
    """Training stopped because the loss or the gradients stopped being finite."""


def _say(learn, message: str) -> None:
    """A line of news for the user, unless progress output is off."""
    silent = progress_disabled() if learn.silent is None else learn.silent
    if not silent and is_main_process():
        print(message, flush=True)


class TrackerCallback(Callback):
    """Base of the trackers: reads `monitor` after each epoch and says whether it improved on the
    best so far by more than `min_delta`. `mode` is 'min', 'max' or 'auto'."""
    order = Order.TRACKER

    def __init__(self, monitor: str = "valid_loss", mode: str = "auto", min_delta: float = 0.0):
        self.monitor, self.min_delta = monitor, abs(float(min_delta))
        self.mode = monitor_mode(monitor, mode)
        self.best = None
        self.wait = 0
        self._restored = False
        self._warned_nan = False

    def before_fit(self):
        names = self.learn.recorder.value_names
        if self.monitor not in names:
            raise FastbaseError(f"{type(self).__name__} cannot monitor {self.monitor!r}: this Learner records "
                                f"{names}. Pass monitor= one of them (metrics are named after their function).")
        if not self._restored:  # a fresh fit starts from scratch; a resumed one keeps its loaded state
            self.best, self.wait = (math.inf if self.mode == "min" else -math.inf), 0
        self._restored, self._warned_nan = False, False

    def after_fit(self):
        self._restored = False  # a state loaded during before_fit (by a Checkpoint) served this fit only

    def current(self) -> float:
        """This epoch's value of `monitor` (NaN if it was not computed, e.g. without a validation set)."""
        return self.learn.recorder.last_value(self.monitor)

    def improved(self, value: float) -> bool:
        """True (and `best` updated) if `value` beats the best by more than `min_delta`."""
        if math.isnan(value):
            if not self._warned_nan:
                warnings.warn(f"{type(self).__name__}: {self.monitor} is NaN in epoch {self.learn.epoch + 1} "
                              "(no validation set, or a diverged loss); it counts as no improvement.", stacklevel=3)
                self._warned_nan = True
            return False
        better = value < self.best - self.min_delta if self.mode == "min" else value > self.best + self.min_delta
        if better:
            self.best = value
        return better

    def out_of_patience(self) -> bool:
        """Counts this epoch as improving (which resets the count) or not; True once more than
        `self.patience` epochs in a row have not improved."""
        if self.improved(self.current()):
            self.wait = 0
            return False
        self.wait += 1
        return self.wait > self.patience

    def state_dict(self) -> dict:
        return {"best": None if self.best is None else float(self.best), "wait": int(self.wait)}

    def load_state_dict(self, state: dict) -> None:
        self.best = state["best"]
        self.wait = int(state["wait"])
        self._restored = True


class EarlyStopping(TrackerCallback):
    """Stops training when `monitor` has not improved (by more than `min_delta`) for more than
    `patience` epochs: with `patience=0`, at the first epoch that does not improve."""
    order = Order.EARLY_STOPPING

    def __init__(self, monitor: str = "valid_loss", mode: str = "auto", min_delta: float = 0.0, patience: int = 0):
        super().__init__(monitor, mode, min_delta)
        self.patience, self.stopped_epoch = patience, None

    def before_fit(self):
        super().before_fit()
        self.stopped_epoch = None

    def after_epoch(self):
        if self.out_of_patience():
            self.stopped_epoch = self.learn.epoch
            _say(self.learn, f"Epoch {self.learn.epoch + 1}: early stopping ({self.monitor} has not improved on "
                             f"{self.best:.6g} for {self.wait} epoch(s)).")
            raise CancelFitException()


class SaveModelCallback(TrackerCallback):
    """Saves the model with `learn.save`: `every='improvement'` to `name` each time `monitor`
    improves, then loads that best model at the end of fit; `every='epoch'` to `{name}_{epoch}`
    after every epoch (epochs counted from 1), and loads nothing."""
    order = Order.SAVE_MODEL

    def __init__(self, monitor: str = "valid_loss", mode: str = "auto", every: str = "improvement",
                 name: str = "bestmodel", min_delta: float = 0.0):
        if every not in ("improvement", "epoch"):
            raise FastbaseError(f"every must be 'improvement' or 'epoch', got {every!r}.")
        super().__init__(monitor, mode, min_delta)
        self.every = every
        self.fname = name
        self.best_epoch = None

    def before_fit(self):
        super().before_fit()
        self._saved = False

    def after_epoch(self):
        learn = self.learn
        if self.every == "epoch":
            learn.save(f"{self.fname}_{learn.epoch + 1}")
        elif self.improved(self.current()):
            self.best_epoch, self._saved = learn.epoch, True
            learn.save(self.fname)

    def after_fit(self):
        super().after_fit()
        if self.every == "improvement" and getattr(self, "_saved", False):
            self.learn.load(self.fname)
            _say(self.learn, f"Loaded the best model ({self.monitor} {self.best:.6g}, epoch {self.best_epoch + 1}).")

    def state_dict(self) -> dict:
        return {**super().state_dict(), "best_epoch": self.best_epoch, "saved": bool(getattr(self, "_saved", False))}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.best_epoch, self._saved = state.get("best_epoch"), state.get("saved", False)


class ReduceLROnPlateau(TrackerCallback):
    """Multiplies every layer group's learning rate by `factor` (not below `min_lr`) when `monitor`
    has not improved for more than `patience` epochs, then waits again. Meant for `fit` at a
    constant lr: a schedule such as one-cycle sets the lr every batch and would undo it."""
    order = Order.REDUCE_LR

    def __init__(self, monitor: str = "valid_loss", mode: str = "auto", patience: int = 0, factor: float = 0.2,
                 min_delta: float = 0.0, min_lr: float = 0.0):
        if not 0 < factor < 1:
            raise FastbaseError(f"ReduceLROnPlateau needs 0 < factor < 1, got {factor}.")
        super().__init__(monitor, mode, min_delta)
        self.patience = patience
        self.factor = factor
        self.min_lr = min_lr

    def after_epoch(self):
        if self.out_of_patience():
            opt = self.learn.opt
            old = np.array(opt.lrs, dtype=float)
            opt.lr = np.maximum(old * self.factor, self.min_lr)
            self.wait = 0
            _say(self.learn, f"Epoch {self.learn.epoch + 1}: reducing lr from {old[-1]:.3g} to {opt.lr:.3g} "
                             f"({self.monitor} has not improved on {self.best:.6g}).")


class TerminateOnNaN(Callback):
    """Stops training at the first training batch whose loss (or, with `check_grads`, gradient) is
    NaN or infinite, before the optimizer step, so the model keeps the last good weights; warns
    with the epoch and batch. The forward pass of that batch may already have put NaN into the
    BatchNorm running statistics, so the buffers are copied before each batch and put back.

    Cost per batch: one device read, one pass over the gradients and a copy of the buffers (a few
    KB for a resnet): lost in the noise on the CPU (bench/overhead.py), a pipeline stall on a GPU.
    Under fp16 loss scaling, infinite gradients are the scaler's business (it skips those steps),
    so only the loss is checked."""
    order = Order.TERMINATE_ON_NAN

    def __init__(self, check_grads: bool = True):
        self.check_grads, self.stopped_at = check_grads, None

    def before_fit(self):
        self.stopped_at = None
        handler = self.learn.cb
        self._grads = self.check_grads and not any(getattr(cb, "skips_nonfinite_steps", False)
                                                   for cb in handler.callbacks)
        self._buffers = list(self.learn.model.buffers())
        self._saved = [b.detach().clone() for b in self._buffers]

    @torch.no_grad()
    def before_batch(self):
        if self.learn.training and self._buffers:
            for saved, buffer in zip(self._saved, self._buffers):
                saved.copy_(buffer)

    def before_step(self):
        learn = self.learn
        value = learn.loss.float().reshape(())
        if self._grads:
            grads = [p.grad for p in learn.model.parameters() if p.grad is not None]
            if grads:
                norms = torch._foreach_norm(grads) if hasattr(torch, "_foreach_norm") else [g.norm() for g in grads]
                value = value + torch.stack([n.float() for n in norms]).sum()
        if math.isfinite(float(value)):
            return
        what = "loss" if not math.isfinite(float(learn.loss)) else "gradients"
        self.stopped_at = (learn.epoch, learn.iter)
        learn.opt.zero_grad()
        with torch.no_grad():
            for saved, buffer in zip(self._saved, self._buffers):
                buffer.copy_(saved)
        warnings.warn(f"Non-finite {what} in epoch {learn.epoch + 1}, batch {learn.iter + 1}: training stopped "
                      "before this step, so the model keeps the weights of the last finite step. Lower the "
                      "learning rate, clip gradients (Learner(clip=...)) or check the data.", TrainingDiverged,
                      stacklevel=2)
        raise CancelFitException()
