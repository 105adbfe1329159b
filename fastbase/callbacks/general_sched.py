"""Layer 4: fastai v1's general scheduler: training as a list of phases, each a number of training
batches over which hyper-parameters (`lr`, `mom`, `wd`) move from one value to another along an
annealing function; and `FlatCosAnnealScheduler`, the flat-then-cosine schedule of `fit_fc`.

    phases = [TrainingPhase(n).schedule_hp('lr', (1e-3, 1e-2), anneal=annealing_cos) for n in (40, 60)]
    learn.fit(2, callbacks=[GeneralScheduler(learn, phases)])

When every phase is done, training stops (validation still runs for that epoch).
"""
from __future__ import annotations

import numpy as np

from ..callback import (
    Callback,
    CancelFitException,
    CancelTrainException,
    Order,
    Scheduler,
    annealing_cos,
    annealing_exp,
    annealing_linear,
)
from ..core import FastbaseError

__all__ = ["FlatCosAnnealScheduler", "GeneralScheduler", "TrainingPhase"]

HYPER_PARAMETERS = ("lr", "mom", "wd")  # what an optimizer wrapper sets on every layer group
_CURVES = {"cosine": annealing_cos, "linear": annealing_linear, "exponential": annealing_exp}


def _per_group(value):
    return np.asarray(value, dtype=float) if np.ndim(value) else value


def _values(vals):
    """A number, an array (one per layer group) or a (start, end) pair of those."""
    return tuple(_per_group(v) for v in vals) if isinstance(vals, tuple) else _per_group(vals)


class TrainingPhase:
    """`length` training batches during which each scheduled hyper-parameter follows its schedule."""

    def __init__(self, length: int):
        if int(length) < 1:
            raise FastbaseError(f"A TrainingPhase lasts at least one batch; got length={length}.")
        self.length = int(length)
        self.scheds: dict[str, Scheduler] = {}

    def schedule_hp(self, name: str, vals, anneal=None) -> TrainingPhase:
        """Move `name` ('lr', 'mom' or 'wd') over the phase: from `vals[0]` to `vals[1]` along
        `anneal` (default linear) for a pair; a single value stays put, or with `anneal` goes to 0.
        Returns the phase, so calls chain."""
        if name not in HYPER_PARAMETERS:
            raise FastbaseError(f"schedule_hp({name!r}, ...): the hyper-parameters a phase can move are "
                                f"{list(HYPER_PARAMETERS)}.")
        self.scheds[name] = Scheduler(_values(vals), self.length, anneal)
        return self

    def __repr__(self):
        return f"TrainingPhase(length={self.length}, scheds={sorted(self.scheds)})"


class GeneralScheduler(Callback):
    """Runs `phases` one after the other over the training batches, setting the optimizer's
    hyper-parameters before each batch; stops training once the last phase is done. `learn` is
    accepted for fastai v1's signature (the Learner that runs the callback is the one used).
    `start_epoch` begins the phases that many epochs in (a resumed run); the position is in
    `state_dict()`."""
    order = Order.SCHEDULER

    def __init__(self, learn=None, phases=(), start_epoch: int | None = None):
        self.phases = list(phases)
        if not self.phases:
            raise FastbaseError("GeneralScheduler needs at least one TrainingPhase.")
        self.start_epoch = start_epoch
        self.iteration = None

    def before_fit(self):
        if self.iteration is None:
            self.iteration = (self.start_epoch or 0) * len(self.learn.data.train_dl)

    def _position(self) -> tuple[int, int] | None:
        """(phase index, batch within it) of the current iteration; None past the last phase."""
        left = self.iteration
        for i, phase in enumerate(self.phases):
            if left < phase.length:
                return i, left
            left -= phase.length
        return None

    def before_batch(self):
        if not self.learn.training:
            return
        position = self._position()
        if position is None:
            raise CancelTrainException()
        phase, n = position
        for name, sched in self.phases[phase].scheds.items():
            value = sched.func(sched.start, sched.end, n / sched.n_iter)
            setattr(self.learn.opt, name, value)

    def after_batch(self):
        if self.learn.training:
            self.iteration += 1

    def before_epoch(self):
        if self._position() is None:  # every phase done: no further epoch
            raise CancelFitException()

    def state_dict(self) -> dict:
        return {"iteration": self.iteration}

    def load_state_dict(self, state: dict) -> None:
        self.iteration = state["iteration"]


def FlatCosAnnealScheduler(learn, lr: float = 4e-3, tot_epochs: int = 1, moms=(0.95, 0.999),
                           start_pct: float = 0.72, curve: str = "cosine") -> GeneralScheduler:
    """The flat-then-anneal schedule of fastai v1's `fit_fc`: `lr` and `moms[0]` for the first
    `start_pct` of the `tot_epochs` epochs' batches, then `lr` annealed to 0 along `curve`
    ('cosine', 'linear' or 'exponential') with momentum `moms[1]`."""
    if curve not in _CURVES:
        raise FastbaseError(f"curve={curve!r} is not one of {sorted(_CURVES)}.")
    total = len(learn.data.train_dl) * tot_epochs
    flat = max(1, int(total * start_pct))
    phases = [TrainingPhase(flat).schedule_hp("lr", lr).schedule_hp("mom", moms[0])]
    if total > flat:
        phases.append(TrainingPhase(total - flat).schedule_hp("lr", lr, anneal=_CURVES[curve])
                      .schedule_hp("mom", moms[1]))
    return GeneralScheduler(learn, phases)
