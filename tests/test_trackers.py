"""Trackers: early stopping, saving the best model, reducing the lr on a plateau, stopping on NaN.
The monitored value is scripted per epoch through a metric that ignores the data."""
import math
from functools import partial

import pytest
import torch
from tiny_models import make_data, make_learner

from fastbase.callback import Callback, Order
from fastbase.callbacks.trackers import (
    EarlyStopping,
    ReduceLROnPlateau,
    SaveModelCallback,
    TerminateOnNaN,
    TrainingDiverged,
)
from fastbase.core import FastbaseError
from fastbase.metrics import Metric


class Scripted(Metric):
    """A metric whose value in epoch k (from 1) is `values[k-1]`; named 'scripted' (maximised)."""

    def __init__(self, values):
        self.values, self.n = list(values), 0

    def reset(self):
        self.n += 1

    def accumulate(self, pred, *yb):
        pass

    @property
    def value(self):
        return self.values[self.n - 1]


class ScriptedLoss(Scripted):
    """The same, named 'scripted_loss' (minimised in 'auto' mode)."""


class Snapshots(Callback):
    """The model's weights and the lr of each layer group at the end of every epoch / start of every epoch."""
    order = Order.RECORDER + 5  # after the Recorder, before SaveModelCallback may reload anything

    def __init__(self):
        self.weights, self.lrs = [], []

    def before_epoch(self):
        self.lrs.append(list(self.learn.opt.lrs))

    def after_epoch(self):
        self.weights.append({k: v.clone() for k, v in self.learn.model.state_dict().items()})


def learner(values, metric=ScriptedLoss, **kwargs):
    return make_learner(make_data(n_train=64, n_valid=32, bs=32), metrics=[metric(values)], **kwargs)


def test_early_stopping_stops_after_patience_epochs_without_improvement(tmp_path):
    learn = learner([1.0, 0.8, 0.9, 0.85, 0.7, 0.6], path=tmp_path)
    stopper = EarlyStopping(monitor="scripted_loss", patience=1)
    learn.fit(6, 1e-3, callbacks=[stopper])
    assert len(learn.recorder.values) == 4  # best at epoch 2, epochs 3 and 4 do not improve: 2 > patience 1
    assert stopper.stopped_epoch == 3 and stopper.best == pytest.approx(0.8)


def test_early_stopping_patience_zero_and_min_delta(tmp_path):
    learn = learner([1.0, 0.95, 0.5], path=tmp_path)
    learn.fit(3, 1e-3, callbacks=[EarlyStopping(monitor="scripted_loss", min_delta=0.1)])
    assert len(learn.recorder.values) == 2  # 0.95 is not better than 1.0 by more than 0.1


def test_early_stopping_auto_mode_maximises_accuracy_like_metrics(tmp_path):
    learn = learner([0.5, 0.6, 0.55, 0.9], metric=Scripted, path=tmp_path)
    stopper = EarlyStopping(monitor="scripted")
    assert stopper.mode == "max" and EarlyStopping().mode == "min" and EarlyStopping("error_rate").mode == "min"
    learn.fit(4, 1e-3, callbacks=[stopper])
    assert len(learn.recorder.values) == 3


def test_early_stopping_through_callback_fns(tmp_path):
    learn = learner([1.0, 2.0, 3.0], path=tmp_path,
                    callback_fns=[partial(EarlyStopping, monitor="scripted_loss"), lambda learn: Snapshots()])
    learn.fit(3, 1e-3)
    assert len(learn.recorder.values) == 2


def test_unknown_monitor_names_the_available_ones(tmp_path):
    learn = learner([1.0], path=tmp_path)
    with pytest.raises(FastbaseError, match=r"accuracy.*\['train_loss', 'valid_loss', 'scripted_loss'\]"):
        learn.fit(1, 1e-3, callbacks=[EarlyStopping(monitor="accuracy")])
    with pytest.raises(FastbaseError, match="mode"):
        EarlyStopping(mode="lowest")


def test_save_model_keeps_the_best_and_reloads_it(tmp_path):
    learn = learner([1.0, 0.5, 0.7, 0.9], path=tmp_path)
    snaps, saver = Snapshots(), SaveModelCallback(monitor="scripted_loss", name="best")
    learn.fit(4, 1e-2, callbacks=[snaps, saver])
    assert (tmp_path / "models" / "best.pth").is_file() and saver.best_epoch == 1
    for key, value in learn.model.state_dict().items():
        assert torch.equal(value, snaps.weights[1][key]), key  # epoch 2's weights, not the last epoch's
    assert not torch.equal(snaps.weights[1]["0.weight"], snaps.weights[3]["0.weight"])


def test_save_model_every_epoch_writes_one_file_per_epoch(tmp_path):
    learn = learner([1.0, 0.5, 0.7], path=tmp_path)
    learn.fit(3, 1e-2, callbacks=[SaveModelCallback(every="epoch", name="model")])
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == ["model_1.pth", "model_2.pth", "model_3.pth"]


def test_reduce_lr_on_plateau_changes_the_lr_exactly_when_it_should(tmp_path):
    learn = learner([1.0, 1.1, 1.2, 0.5, 0.6, 0.7, 0.8], path=tmp_path, groups=True)
    snaps = Snapshots()
    reducer = ReduceLROnPlateau(monitor="scripted_loss", patience=1, factor=0.5, min_lr=1.5e-4)
    learn.fit(7, slice(1e-3, 4e-3), callbacks=[snaps, reducer])
    first = [1e-3, 2e-3, 4e-3]
    halved = [5e-4, 1e-3, 2e-3]
    floored = [2.5e-4, 5e-4, 1e-3]
    # epochs 2 and 3 do not improve (wait 2 > 1): lower after epoch 3; epoch 4 improves; 5 and 6 do not
    expected = [first, first, first, halved, halved, halved, floored]
    assert snaps.lrs == [pytest.approx(e) for e in expected]
    learn2 = learner([1.0, 2.0, 3.0, 4.0], path=tmp_path)
    snaps2 = Snapshots()
    learn2.fit(4, 1e-3, callbacks=[snaps2, ReduceLROnPlateau(monitor="scripted_loss", factor=0.1, min_lr=5e-4)])
    assert [s[-1] for s in snaps2.lrs] == pytest.approx([1e-3, 1e-3, 5e-4, 5e-4])  # never below min_lr


class InjectNaN(Callback):
    """Puts NaN into the inputs (or, with `grads`, into one gradient) at one (epoch, batch)."""

    def __init__(self, epoch, batch, grads=False):
        self.at, self.grads, self.weights_before = (epoch, batch), grads, None

    def before_batch(self):
        if self.learn.training and (self.learn.epoch, self.learn.iter) == self.at:
            self.weights_before = {k: v.clone() for k, v in self.learn.model.state_dict().items()}
            if not self.grads:
                self.learn.xb = (self.learn.xb[0] * math.nan,)

    def after_backward(self):
        if self.grads and (self.learn.epoch, self.learn.iter) == self.at:
            next(self.learn.model.parameters()).grad[0, 0] = math.inf


@pytest.mark.parametrize("grads", [False, True], ids=["nan_loss", "inf_grad"])
def test_terminate_on_nan_stops_and_keeps_the_last_good_weights(tmp_path, grads):
    learn = make_learner(make_data(n_train=128, n_valid=32, bs=32), path=tmp_path)
    inject, stopper = InjectNaN(1, 2, grads=grads), TerminateOnNaN()
    with pytest.warns(TrainingDiverged, match=f"Non-finite {'gradients' if grads else 'loss'} in epoch 2, batch 3"):
        learn.fit(3, 1e-2, callbacks=[inject, stopper])
    assert stopper.stopped_at == (1, 2)
    state = learn.model.state_dict()
    assert all(torch.isfinite(v.float()).all() for v in state.values())
    for key in ("0.weight", "3.weight", "3.bias"):
        assert torch.equal(state[key], inject.weights_before[key])  # the bad step was never taken
    assert len(learn.recorder.losses) == 4 + 3  # batches up to and including the bad one


def test_trackers_state_round_trips_and_a_loaded_state_survives_before_fit(tmp_path):
    stopper = EarlyStopping(monitor="scripted_loss", patience=1)
    stopper.load_state_dict({"best": 0.3, "wait": 1})
    learn = learner([0.5, 0.2], path=tmp_path)
    learn.fit(2, 1e-3, callbacks=[stopper])  # resumed: 0.5 does not beat the loaded best, wait 2 > 1
    assert len(learn.recorder.values) == 1
    assert stopper.state_dict() == {"best": 0.3, "wait": 2}
    learn.fit(1, 1e-3, callbacks=[stopper])  # the next fit starts afresh: best is its own first value
    assert stopper.best == pytest.approx(0.2)
    saver = SaveModelCallback()
    saver.load_state_dict({"best": 1.5, "wait": 0, "best_epoch": 3, "saved": True})
    assert saver.state_dict() == {"best": 1.5, "wait": 0, "best_epoch": 3, "saved": True}


def test_trackers_leave_lr_find_alone(tmp_path):
    learn = learner([1.0] * 50, path=tmp_path, callbacks=[EarlyStopping(monitor="scripted_loss"), SaveModelCallback()])
    learn.lr_find(end_lr=1e-2, num_it=12)  # 6 'epochs' of 2 batches with no validation
    assert len(learn.recorder.lrs) == 12
    assert not (tmp_path / "models").exists()


class LoadInBeforeFit(Callback):
    """Loads a state into `target` during before_fit, after the trackers' own before_fit (as a checkpoint does)."""
    order = Order.EARLY_STOPPING + 5

    def __init__(self, target, state):
        self.target, self.state = target, state

    def before_fit(self):
        self.target.load_state_dict(self.state)


def test_a_state_loaded_during_before_fit_is_used_by_that_fit_only(tmp_path):
    stopper = EarlyStopping(monitor="scripted_loss")
    learn = learner([0.5, 0.4, 0.3], path=tmp_path)
    learn.fit(2, 1e-3, callbacks=[stopper, LoadInBeforeFit(stopper, {"best": 0.1, "wait": 0})])
    assert len(learn.recorder.values) == 1  # 0.5 does not beat the loaded 0.1
    learn.fit(1, 1e-3, callbacks=[stopper])
    assert len(learn.recorder.values) == 1 and stopper.best == pytest.approx(0.4)  # fresh: no stop, own best
