"""Layer 3: the callback system: training events, the handler that fires them, the callbacks every
fit runs (validation statistics, Ctrl-C handling), annealing functions and the parameter scheduler.
The Recorder is in `fastbase.recorder`.

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

import inspect
import math
import re
import signal
import threading

import torch

from .core import FastbaseError, ifnone

__all__ = [
    "EVENTS", "STEP_PARTS", "Callback", "CallbackHandler", "CancelBatchException",
    "CancelEpochException", "CancelFitException", "CancelStepException", "CancelTrainException",
    "CancelValidException", "DeferredInterrupt", "GatherPreds", "Scheduler", "ValidationStats",
    "annealing_cos", "annealing_exp", "annealing_linear", "annealing_no", "callback_from_fn",
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


class Callback:
    """Base class: define methods named after `EVENTS` (no arguments; read and write `self.learn`).

    Callbacks run in increasing `order`. State a resumed run needs goes in `state_dict()`.
    `changes_step = True` marks a callback that changes how a training step is computed (precision,
    memory format, the batch, the gradients): probe runs (`Learner.probe`: lr_find, overfit,
    sanity_check) keep those and leave out the rest (loggers, trackers, checkpoints).
    """
    order = 0
    changes_step = False
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


def callback_from_fn(fn, learn):
    """A callback from `callback_fns`: fastai v1 calls `fn(learn)`; fastbase callbacks need no Learner
    (the handler sets `cb.learn`), so it goes only to a function that names `learn` or requires an argument
    (`partial(EarlyStopping, patience=2)` and `lambda learn: ...` both work)."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return fn(learn)
    wants = any(p.name == "learn" or (p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD))
                for p in params)
    return fn(learn) if wants else fn()


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
