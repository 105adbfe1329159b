"""Layer 3: the callback system: training events, the handler that fires them, the Recorder,
annealing functions and the parameter scheduler.

The Learner's loop fires these events, in this order (`after_cancel_X` replaces nothing: it fires
when a `CancelXException` stopped phase X, and `after_X` still follows it)::

    before_fit
      before_epoch
        before_train
          before_batch  after_pred  after_loss  before_backward  after_backward
          before_step  after_step  after_batch                 (per training batch)
        after_train
        before_validate  [before_batch after_pred after_loss after_batch]...  after_validate
      after_epoch
    after_fit
    cleanup_fit        (always, even after an error or Ctrl-C: restore what before_fit changed)

A callback changes the run by writing the learner's state (`learn.xb`, `learn.yb` in
`before_batch`; `learn.pred` in `after_pred`; `learn.loss_grad` in `after_loss`) or by raising a
`Cancel*Exception`. It replaces parts of the inner step by defining `forward()` (returns the
predictions), `compute_loss()` (returns the loss), `backward()` or `optimizer_step()` (steps and
zeroes the gradients): that is how mixed precision and gradient accumulation plug in.
"""
from __future__ import annotations

import math
import re
import signal
import threading

import numpy as np
import torch
from torch import nn

from .core import FastbaseError, ifnone
from .figures import finish_figure, subplots

__all__ = [
    "BN_TYPES", "EVENTS", "STEP_PARTS", "BnFreeze", "Callback", "CallbackHandler", "CancelBatchException",
    "CancelEpochException", "CancelFitException", "CancelStepException", "CancelTrainException",
    "CancelValidException", "DeferredInterrupt", "GatherPreds", "Recorder", "Scheduler", "ValidationStats",
    "annealing_cos", "annealing_exp", "annealing_linear", "annealing_no", "has_bn_statistics",
]


class CancelFitException(Exception):
    """Raise in a callback to end training now; `after_cancel_fit`, `after_fit` and `cleanup_fit` still run."""


class CancelEpochException(Exception):
    """Raise to skip the rest of this epoch (training and validation); `after_epoch` still runs."""


class CancelTrainException(Exception):
    """Raise to end this epoch's training phase early and go on to validation."""


class CancelValidException(Exception):
    """Raise (e.g. in `before_validate`) to skip this epoch's validation."""


class CancelBatchException(Exception):
    """Raise to skip the rest of this batch; `after_batch` still runs."""


class CancelStepException(Exception):
    """Raise in `before_step` to skip the optimizer step and the zeroing of gradients (they accumulate)."""


_PHASES = ("fit", "epoch", "train", "validate", "batch", "step")
EVENTS = ("before_fit", "before_epoch", "before_train", "before_batch", "after_pred", "after_loss",
          "before_backward", "after_backward", "before_step", "after_step", "after_batch", "after_train",
          "before_validate", "after_validate", "after_epoch", "after_fit", "cleanup_fit",
          *(f"after_cancel_{p}" for p in _PHASES))
STEP_PARTS = ("forward", "compute_loss", "backward", "optimizer_step")
BN_TYPES = (nn.modules.batchnorm._BatchNorm,)


class Callback:
    """Base class: define methods named after `EVENTS` (no arguments; read and write `self.learn`).

    Callbacks run in increasing `order`. State a resumed run needs goes in `state_dict()`.
    """
    order = 0
    learn = None

    @property
    def name(self) -> str:
        """snake_case of the class name without 'Callback': `OneCycleScheduler` -> 'one_cycle_scheduler'."""
        name = re.sub(r"Callback$", "", type(self).__name__) or "callback"
        return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass

    def __repr__(self):
        return f"{type(self).__name__}(order={self.order})"


class CallbackHandler:
    """Fires events on callbacks sorted by `order`. The per-event lists are built once, so firing an
    event that no callback handles costs one dict lookup."""

    def __init__(self, callbacks, learn=None):
        self.callbacks = sorted(callbacks, key=lambda cb: cb.order)
        for cb in self.callbacks:
            if learn is not None:
                cb.learn = learn
            old = [n for n in dir(type(cb)) if n.startswith("on_") and n not in dir(Callback)]
            if old:
                raise FastbaseError(f"{type(cb).__name__} defines {old}: fastbase events are named "
                                    f"before_/after_..., e.g. {EVENTS[:4]}; rename the methods.")
        self._events = {ev: [getattr(cb, ev) for cb in self.callbacks if callable(getattr(cb, ev, None))]
                        for ev in EVENTS}

    def __call__(self, event: str) -> None:
        for method in self._events[event]:
            method()

    def step_part(self, part: str, default):
        """The callback method that replaces `part` of the inner step, or `default`."""
        found = [getattr(cb, part) for cb in self.callbacks if callable(getattr(cb, part, None))]
        if len(found) > 1:
            owners = [type(m.__self__).__name__ for m in found]
            raise FastbaseError(f"Callbacks {owners} all replace `{part}`; only one may.")
        return found[0] if found else default


def _to_floats(values) -> list[float]:
    """Read tensors and numbers as floats with a single device sync."""
    tensors = [v for v in values if isinstance(v, torch.Tensor)]
    if not tensors:
        return [math.nan if v is None else float(v) for v in values]
    device = tensors[0].device
    stacked = torch.stack([torch.as_tensor(math.nan if v is None else v, device=device).float().reshape(())
                           for v in values])
    return stacked.cpu().tolist()


class Recorder(Callback):
    """Records training: loss per batch (kept on the device, read in bulk at the end of each epoch
    or when asked), lr and momentum per batch, and per epoch the smoothed training loss, the
    validation loss and metrics. `plot*` methods return matplotlib Figures."""
    order = 50
    beta = 0.98  # smoothing of the training loss, as fastai

    def __init__(self):
        self.reset()

    def reset(self) -> None:
        self.lrs, self.moms, self.nb_batches, self.values = [], [], [], []
        self._losses, self._smooth, self._pending, self._avg = [], [], [], 0.0
        self.metrics_names: list[str] = []
        self.lr_suggestions = None  # set by lr_find

    def before_fit(self):
        self.reset()
        self.metrics_names = list(getattr(self.learn, "metric_names", []))

    def after_loss(self):  # recorded as soon as known, so a batch stopped later still counts
        learn = self.learn
        if not learn.training:
            return
        self._pending.append(learn.loss)
        self.lrs.append(learn.opt.lr)
        self.moms.append(learn.opt.mom)

    def after_train(self):
        self._flush()
        self.nb_batches.append(len(self._losses) - sum(self.nb_batches))

    def after_epoch(self):
        valid = getattr(self.learn, "valid_values", None)
        valid = [math.nan] * (1 + len(self.metrics_names)) if valid is None else list(valid)
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
        return {"lrs": list(self.lrs), "moms": list(self.moms), "nb_batches": list(self.nb_batches),
                "values": [list(v) for v in self.values], "losses": list(self._losses),
                "smooth": list(self._smooth), "avg": self._avg, "metrics_names": list(self.metrics_names)}

    def load_state_dict(self, state: dict) -> None:
        self.reset()
        self.lrs, self.moms, self.nb_batches = list(state["lrs"]), list(state["moms"]), list(state["nb_batches"])
        self.values, self._losses = [list(v) for v in state["values"]], list(state["losses"])
        self._smooth, self._avg, self.metrics_names = list(state["smooth"]), state["avg"], list(state["metrics_names"])

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

    def plot_losses(self, return_fig: bool | None = None, save_to=None):
        """Training loss per batch (raw and smoothed) and validation loss at the end of each epoch."""
        if not self._losses and not self._pending:
            raise FastbaseError("No training loss recorded yet: call fit first.")
        fig, ax = subplots()
        losses = self.losses
        ax.plot(losses, alpha=0.3, label="train")
        ax.plot(self.smooth_losses, label="train (smoothed)")
        ends = np.cumsum(self.nb_batches) - 1
        if len(self.val_losses):
            ax.plot(ends[:len(self.val_losses)], self.val_losses, "o-", label="valid")
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
        if not self.metrics_names or not self.values:
            raise FastbaseError("No metrics recorded: pass metrics=[...] to the Learner and call fit.")
        n = len(self.metrics_names)
        fig, axes = subplots(n, 1, figsize=(6, 3 * n), squeeze=False)
        for i, (name, ax) in enumerate(zip(self.metrics_names, axes[:, 0])):
            ax.plot(range(1, len(self.values) + 1), [m[i] for m in self.metrics], "o-")
            ax.set(xlabel="Epoch", ylabel=name)
        return finish_figure(fig, return_fig, save_to)


class ValidationStats(Callback):
    """Averages the validation loss and the metrics over the whole validation set, each batch
    weighted by its size, on the device; reads them once at the end into `learn.valid_values`
    = [loss, *metrics]. Metrics follow the protocol `reset()`, `accumulate(pred, *yb)`, `value`."""
    order = -20

    def __init__(self, metrics=()):
        self.metrics = list(metrics)

    def before_validate(self):
        self._losses, self._sizes = [], []
        for metric in self.metrics:
            metric.reset()

    def after_batch(self):
        learn = self.learn
        if learn.training or learn.loss is None:
            return
        self._losses.append(learn.loss)
        self._sizes.append(learn.yb[0].shape[0])
        for metric in self.metrics:
            metric.accumulate(learn.pred, *learn.yb)

    def after_validate(self):
        if not self._sizes:
            return
        losses = torch.stack([t.float().reshape(()) for t in self._losses])
        sizes = torch.tensor(self._sizes, dtype=losses.dtype, device=losses.device)
        loss = (losses * sizes).sum() / sizes.sum()
        self.learn.valid_values = _to_floats([loss, *(m.value for m in self.metrics)])


class GatherPreds(Callback):
    """Keeps the predictions, targets and (with `loss_fn`, a per-item loss) losses of every batch
    on the device, for `Learner.get_preds`."""

    def __init__(self, loss_fn=None):
        self.loss_fn, self.preds, self.targets, self.losses = loss_fn, [], [], []

    def after_batch(self):
        learn = self.learn
        self.preds.append(learn.pred.detach())
        if learn.yb:
            self.targets.append(learn.yb[0])
            if self.loss_fn is not None:
                loss = self.loss_fn(learn.pred, *learn.yb).detach()
                self.losses.append(loss.reshape(loss.shape[0], -1).mean(1))


class DeferredInterrupt(Callback):
    """Ctrl-C during fit lets the current batch finish, then stops training (the Learner turns the
    KeyboardInterrupt into a warning and a clean stop). A second Ctrl-C interrupts at once. Only
    in the main thread, where Python delivers signals; the previous handler is always restored."""
    order = 1000  # last, so every other callback has finished the batch
    _previous = None  # cleanup_fit also runs when an earlier callback's before_fit raised

    def before_fit(self):
        self.requested, self._previous = False, None
        if threading.current_thread() is threading.main_thread():
            try:
                self._previous = signal.signal(signal.SIGINT, self._on_sigint)
            except ValueError:  # embedded interpreters may refuse
                self._previous = None

    def _on_sigint(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def after_batch(self):
        if self.requested:
            raise KeyboardInterrupt

    after_epoch = after_batch

    def cleanup_fit(self):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None


class BnFreeze(Callback):
    """Puts the BatchNorm layers of frozen layer groups in eval mode after each `model.train()`,
    so their running statistics stay fixed (`freeze_bn_stats=True`); `train_bn` only governs gradients.
    `all_groups=True` fixes them in every layer group, frozen or not: fine-tuning a pretrained body
    on few images with small learning rates then keeps its pretrained statistics (what
    `freeze_bn_stats="finetune"` does once the Learner is unfrozen). There, a layer of a trainable
    group that has no statistics yet (a new head's, never trained: running mean 0, variance 1, no
    batch seen) learns them in this fit, rather than keeping values no data produced."""
    order = -10

    def __init__(self, all_groups: bool = False):
        self.all_groups = all_groups

    def before_fit(self):
        groups, n = self.learn.layer_groups, self.learn.n_frozen
        self.fixed = [m for group in groups[:n] for m in group.modules() if isinstance(m, BN_TYPES)]
        if self.all_groups:
            self.fixed += [m for group in groups[n:] for m in group.modules()
                           if isinstance(m, BN_TYPES) and has_bn_statistics(m)]

    def before_train(self):
        for module in self.fixed:
            module.eval()


def has_bn_statistics(bn: nn.Module) -> bool:
    """Has this BatchNorm layer running statistics to keep: loaded, or learnt from at least one batch?
    False for a layer as constructed (mean 0, variance 1, no batch tracked) or one that tracks none."""
    if bn.running_mean is None or bn.running_var is None:
        return False
    tracked = bn.num_batches_tracked is not None and int(bn.num_batches_tracked) > 0
    return tracked or bool(bn.running_mean.any()) or not bool((bn.running_var == 1).all())


# --- annealing and scheduling -----------------------------------------------------------------
def annealing_no(start, end, pct):
    """Constant `start`."""
    return start


def annealing_linear(start, end, pct):
    """Linear from `start` (pct=0) to `end` (pct=1)."""
    return start + pct * (end - start)


def annealing_exp(start, end, pct):
    """Exponential (geometric) from `start` to `end`."""
    return start * (end / start) ** pct


def annealing_cos(start, end, pct):
    """Half a cosine from `start` to `end`: flat at both ends."""
    return end + (start - end) / 2 * (math.cos(math.pi * pct) + 1)


class Scheduler:
    """Anneals from `vals[0]` to `vals[1]` (or stays at `vals`) over `n_iter` steps with `func`.
    Values may be floats or NumPy arrays (one per layer group). `step()` advances and returns."""

    def __init__(self, vals, n_iter: int, func=None):
        paired = isinstance(vals, tuple)
        self.start, self.end = (vals[0], vals[1]) if paired else (vals, 0)
        self.n_iter = max(1, int(n_iter))
        self.func = ifnone(func, annealing_linear if paired else annealing_no)
        self.n = 0

    def restart(self) -> None:
        self.n = 0

    def step(self):
        self.n += 1
        return self.func(self.start, self.end, self.n / self.n_iter)

    @property
    def is_done(self) -> bool:
        return self.n >= self.n_iter

    def state_dict(self) -> dict:
        return {"n": self.n}

    def load_state_dict(self, state: dict) -> None:
        self.n = state["n"]
