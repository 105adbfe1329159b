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
from enum import IntEnum
from functools import partial

import torch

from .core import FastbaseError, ifnone

__all__ = [
    "EVENTS", "STEP_PARTS", "Callback", "CallbackHandler", "CancelBatchException",
    "CancelEpochException", "CancelFitException", "CancelStepException", "CancelTrainException",
    "CancelValidException", "DeferredInterrupt", "GatherPreds", "Order", "Scheduler", "ValidationStats",
    "annealing_cos", "annealing_exp", "annealing_linear", "annealing_no", "annealing_poly", "callback_from_fn",
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


class Order(IntEnum):
    """When each callback runs on an event: in increasing `Callback.order`, one value per role. A
    callback that sets no order runs at `USER`; to run elsewhere, name the neighbour it must follow,
    e.g. `order = Order.RECORDER + 5` (the values are 10 apart). Each line says what it must come
    after or before, on the events where two callbacks act together."""
    DISTRIBUTED = -100  # first: shards the data and averages the loss before schedules and the Recorder read them
    MIXUP = -90  # before_batch: mixes the batch before any other callback, or the model, sees it
    VALIDATION_STATS = -80  # after_validate: sets learn.valid_values before anything reads them
    BN_FREEZE = -70  # before_train: frozen BatchNorm back in eval mode right after model.train(), before yours
    GRADIENT_ACCUMULATION = -60  # first in before_step: a step it cancels is seen by no other callback
    MIXED_PRECISION = -50  # before_step: unscales the gradients before the NaN check, clipping and yours read them
    TERMINATE_ON_NAN = -40  # before_step: checks the real (accumulated, unscaled) gradients before clipping scales them
    GRADIENT_CLIPPING = -30  # before_step: clips the final gradients, last of the built-ins before yours
    USER = 0  # a callback that sets no order: after the gradient callbacks, before the schedule and the Recorder
    GATHER_PREDS = 10  # after_batch (get_preds): keeps the predictions once your callbacks are done with the batch
    SCHEDULER = 20  # before_fit: sets up its schedule before RESUME loads a saved position into it
    GAN_LR = 25  # before_batch: scales the critic's learning rate once the schedule has set the batch's
    RECORDER = 50  # before_fit: resets before RESUME loads its history; everything after it reads what it records
    LOSS_METRICS = 55  # before_fit: adds a loss's parts to the Recorder's columns once it has reset, before RESUME
    RESUME = 60  # before_fit: loads every saved state once the callbacks above have reset; before the trackers keep it
    LR_FINDER = 70  # after_batch: reads the Recorder's smoothed loss; stops the sweep before the bar shows the batch
    STAGE_LOG = 80  # after_epoch: copies the row the Recorder has just made, for the report
    OVERFIT_WATCH = 90  # before_validate: cancels overfit's validation before the progress bar opens for it
    CSV_LOGGER = 100  # after_epoch: writes the Recorder's row to the file before the table is printed
    TENSORBOARD_LOGGER = 110  # after_epoch: the same row and the epoch's batches, to TensorBoard, after the CSV file
    PROGRESS = 120  # after_epoch: prints the Recorder's row before the trackers say what they did about it
    TRACKER = 130  # a TrackerCallback of yours: after the table, before the built-in trackers act on the epoch
    SAVE_MODEL = 140  # after_epoch: saves an improved model (and its optimizer) before REDUCE_LR changes the lr
    REDUCE_LR = 150  # after_epoch: lowers the lr for the next epoch once this epoch's model is saved
    RECALIBRATE_BN = 160  # after_train: recomputes BatchNorm statistics after the other after_train (DDP's buffer sync)
    CHANNELS_LAST = 170  # before_batch: converts the final batch (after MixUp and yours), just before the model
    EARLY_STOPPING = 900  # after_epoch: stops the fit only after tables, logs and trackers have seen the epoch
    CHECKPOINT = 950  # after_epoch: saves once every callback whose state it saves has updated it (EARLY_STOPPING too)
    DEFERRED_INTERRUPT = 1000  # after_batch: acts on Ctrl-C once every callback above has finished the batch
    FEATURE_CACHE = 1010  # before_fit: may refuse the fit, after every other callback has set itself up


class Callback:
    """Base class: define methods named after `EVENTS` (no arguments; read and write `self.learn`).

    Callbacks run in increasing `order` (see `Order`). State a resumed run needs goes in `state_dict()`.
    `changes_step = True` marks a callback that changes how a training step is computed (precision,
    memory format, the batch, the gradients): probe runs (`Learner.probe`: lr_find, overfit,
    sanity_check) keep those and leave out the rest (loggers, trackers, checkpoints).
    """
    order = Order.USER
    changes_step = False
    optional_step = False  # True: its step parts give way to another callback's (FeatureCache(auto=True))
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
        order = self.order.name if isinstance(self.order, Order) else self.order
        return f"{type(self).__name__}(order={order})"


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
        if len(found) > 1:  # a callback whose replacement is optional (`optional_step`) gives way
            found = [m for m in found if not getattr(m.__self__, "optional_step", False)] or found[:1]
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
    order = Order.VALIDATION_STATS

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
        values = [m.value for m in self.metrics]
        for metric, value in zip(self.metrics, values):
            if isinstance(value, torch.Tensor) and value.numel() != 1:
                raise FastbaseError(f"The metric {metric.name} gives {tuple(value.shape)} values, but a column of the "
                                    "table holds one number: pass an averaged form (e.g. average='macro') as a "
                                    "metric, and read per-class values from the metric object itself.")
        self.learn.valid_values = _to_floats([loss, *values])


class GatherPreds(Callback):
    """Keeps the predictions, targets and (with `loss_fn`, a per-item loss) losses of every batch
    on the device, for `Learner.get_preds`."""
    order = Order.GATHER_PREDS

    def __init__(self, loss_fn=None):
        self.loss_fn = loss_fn
        self.preds = []
        self.targets = []
        self.losses = []

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
    order = Order.DEFERRED_INTERRUPT
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


def annealing_poly(degree: float):
    """A polynomial annealing function of `degree`: `end + (start - end) * (1 - pct) ** degree`
    (degree 1 is linear; higher degrees fall faster at first)."""
    return partial(_anneal_poly, degree=degree)


def _anneal_poly(start, end, pct, degree):
    return end + (start - end) * (1 - pct) ** degree


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
