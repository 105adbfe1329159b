"""Layer 5: the training loop: one fit as a sequence of events (read `_do_fit` down to `_one_batch`),
fired on the callbacks of the run. Nothing optional happens here: schedules, recording, progress,
mixed precision, Ctrl-C handling are callbacks (`fastbase.callback` lists the events). `Learner`
builds on this class and chooses each run's callbacks.

Nothing is read from the device per batch: losses and metrics stay on the device until a
callback reads them in bulk.
"""
from __future__ import annotations

import warnings
from contextlib import contextmanager

import torch
from torch import nn
from torch.nn.parameter import is_lazy

from .callback import (
    CallbackHandler,
    CancelBatchException,
    CancelEpochException,
    CancelFitException,
    CancelStepException,
    CancelTrainException,
    CancelValidException,
    callback_from_fn,
)
from .core import ifnone
from .state import copy_state, loader_generators, rng_states, set_rng_states

__all__ = ["Loop", "TrainingInterrupted", "eval_grad_mode", "split_batch"]

_LOOP_STATE = ("epoch", "n_epochs", "start_epoch", "start_iter", "training", "dl", "iter", "n_iter", "xb", "yb",
               "pred", "loss", "loss_grad", "valid_values")  # what a callback may read (and write) during a run


class TrainingInterrupted(UserWarning):
    """Training stopped early because of Ctrl-C (KeyboardInterrupt)."""


class Loop:
    """The loop over `self.model`, `self.data` (`train_dl`, `valid_dl`), `self.loss_func` and
    `self.opt`, firing events on `self.cb`; and probe runs, which also read `self.recorder`,
    `self.callbacks` and `self.callback_fns`. Subclasses set those and call `_init_loop()`; a run is
    `with self._using(callbacks): self._do_fit()` (or `self._do_validate(dl)`)."""

    def _init_loop(self) -> None:
        for name in _LOOP_STATE:
            setattr(self, name, None)
        self._depth = self._probing = 0
        self._use_handler(CallbackHandler([], self))

    # --- probe runs: short trainings whose effects are undone ---------------------------------
    def _own_callbacks(self) -> list:
        """The Learner's `callbacks` and `callback_fns` for this run: inside `probe()`, only those that
        change how a step is computed (`Callback.changes_step`), so nothing logs, tracks or saves."""
        fns = [fn for fn in self.callback_fns
               if not self._probing or getattr(getattr(fn, "func", fn), "changes_step", False)]
        cbs = [*self.callbacks, *(callback_from_fn(fn, self) for fn in fns)]
        return [cb for cb in cbs if cb.changes_step] if self._probing else cbs

    @property
    def probing(self) -> bool:
        """True inside `probe()` (lr_find, overfit, sanity_check)."""
        return self._probing > 0

    @contextmanager
    def probe(self, restore: bool = True, keep_recorder: bool = False):
        """A probe run: a short training whose effects are undone (`lr_find`, `overfit` and
        `sanity_check` run in one). Fits inside keep only the callbacks that change how a step is
        computed (mixed precision, channels-last, distributed, mixup, gradient clipping and
        accumulation, BatchNorm freezing), so loggers, trackers and checkpoints neither see nor write
        anything. On leaving, whatever happened, the data, the model's train/eval mode and the random
        state (Python, NumPy, torch, the training loader's generators) are put back and, with
        `restore`, the weights, the optimizer (state and hyper-parameters) and, unless
        `keep_recorder`, the recorder."""
        generators = loader_generators(self.data.train_dl)
        saved = {"data": self.data, "training": self.model.training, "rng": rng_states(generators),
                 "recorder": self.recorder.state_dict(), "opt": self.opt}
        if restore:
            saved.update(model=copy_state(self.model), opt_state=None if self.opt is None else copy_state(self.opt))
        self._probing += 1
        try:
            yield self
        finally:
            self._probing -= 1
            self.data = saved["data"]
            set_rng_states(saved["rng"], generators)
            if restore:
                self.model.load_state_dict(saved["model"])
                self.opt = saved["opt"]
                if self.opt is not None:
                    self.opt.load_state_dict(saved["opt_state"])
                    self.opt.zero_grad()
                if not keep_recorder:
                    self.recorder.load_state_dict(saved["recorder"])
            self.model.train(saved["training"])

    # --- the loop: events around each phase -----------------------------------------------
    def _with_events(self, func, phase: str, cancel) -> None:
        try:
            self.cb(f"before_{phase}")
            func()
        except cancel:
            self.cb(f"after_cancel_{phase}")
        self.cb(f"after_{phase}")

    def _do_fit(self) -> None:
        try:
            self.cb("before_fit")
            for epoch in range(self.start_epoch, self.n_epochs):
                self.epoch = epoch
                self._with_events(self._do_epoch, "epoch", CancelEpochException)
        except CancelFitException:
            self.cb("after_cancel_fit")
        except KeyboardInterrupt:
            warnings.warn(f"Training interrupted (Ctrl-C) in epoch {self.epoch + 1}, batch {ifnone(self.iter, 0) + 1}: "
                          "stopped cleanly. The model keeps its last completed step and the recorder everything "
                          "up to it.", TrainingInterrupted, stacklevel=4)
            self.cb("after_cancel_fit")
        self.cb("after_fit")

    def _do_epoch(self) -> None:
        self.model.train()
        self.training, self.dl = True, self.data.train_dl
        self._with_events(self._all_batches, "train", CancelTrainException)
        self._do_validate(self.data.valid_dl)

    def _do_validate(self, dl) -> None:
        self.valid_values = None
        if dl is None or len(dl) == 0:
            return
        self.model.eval()
        self.training, self.dl = False, dl
        with eval_grad_mode(self.model):
            self._with_events(self._all_batches, "validate", CancelValidException)

    def _all_batches(self) -> None:
        self.n_iter, start = len(self.dl), 0
        if self.training:  # a resumed epoch starts at batch `start_iter` (set in before_train by ResumeCallback)
            start, self.start_iter = self.start_iter or 0, 0  # that epoch only
        for i, batch in enumerate(self.dl, start):
            self.iter = i
            self.xb, self.yb = split_batch(batch)
            self.loss = None
            self._with_events(self._one_batch, "batch", CancelBatchException)

    def _one_batch(self) -> None:
        self.pred = self._forward()
        self.cb("after_pred")
        if not self.yb:
            return
        self.loss_grad = self._compute_loss()
        self.loss = self.loss_grad.detach()
        self.cb("after_loss")
        if not self.training:
            return
        self.cb("before_backward")
        self._backward()
        self.cb("after_backward")
        self._with_events(self._optimizer_step, "step", CancelStepException)

    # the parts of the inner step a callback may replace (see fastbase.callback)
    def model_args(self) -> tuple:
        """What the model is called with for the current batch: its inputs, then its targets when the
        data's `targets_to_model` says the model computes its own loss (detection)."""
        return (*self.xb, *self.yb) if self.data.targets_to_model else self.xb

    def _default_forward(self):
        return self.model(*self.model_args())

    def _default_compute_loss(self):
        return self.loss_func(self.pred, *self.yb)

    def _default_backward(self):
        self.loss_grad.backward()

    def _default_optimizer_step(self):
        self.opt.step()
        self.opt.zero_grad()

    def _use_handler(self, handler: CallbackHandler) -> None:
        self.cb = handler
        for part in ("forward", "compute_loss", "backward", "optimizer_step"):
            setattr(self, f"_{part}", handler.step_part(part, getattr(self, f"_default_{part}")))

    @contextmanager
    def _using(self, callbacks):
        """Run with these callbacks; a nested run (e.g. `validate` inside a callback) restores the outer state."""
        saved = self.cb, {name: getattr(self, name) for name in _LOOP_STATE}
        self._depth += 1
        self._use_handler(CallbackHandler(callbacks, self))
        try:
            yield
        finally:
            self._depth -= 1
            self._use_handler(saved[0])
            if self._depth:
                for name, value in saved[1].items():
                    setattr(self, name, value)
            else:  # let go of the last batch and its graph
                self.xb = self.yb = self.pred = self.loss_grad = None


def eval_grad_mode(model: nn.Module):
    """The autograd mode for validation and inference: `torch.inference_mode()` (no version counters or
    view tracking; see `bench/cpu_speed.py`), or `torch.no_grad()` while `model` has uninitialised lazy
    parameters, which would otherwise be created as inference tensors that never train, or has a
    recurrent layer: such models often keep their hidden state between calls (lesson 7's `self.h`),
    and a state made during validation must feed the next training step. Otherwise tensors made
    during validation are inference tensors: `.clone()` one outside the loop before using it in training."""
    lazy = any(is_lazy(t) for t in (*model.parameters(), *model.buffers()))
    recurrent = any(isinstance(m, nn.RNNBase) for m in model.modules())
    return torch.no_grad() if lazy or recurrent else torch.inference_mode()


def split_batch(batch):
    """(xb, yb) as tuples from an (x, y) batch; an unlabeled batch gives yb = ()."""
    if isinstance(batch, (list, tuple)) and len(batch) == 2:
        x, y = batch
        xs = tuple(x) if isinstance(x, (list, tuple)) else (x,)
        ys = tuple(y) if isinstance(y, (list, tuple)) else (y,)
        return xs, ys
    return (tuple(batch) if isinstance(batch, (list, tuple)) else (batch,)), ()
