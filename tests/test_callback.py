"""The callback system: events in order, cancelling phases, replacing the inner step, the Recorder,
Ctrl-C handling, annealing and schedulers."""
import math
import os
import signal

import matplotlib.figure
import pytest
import torch
from tiny_models import make_data, make_learner

from fastbase.callback import (
    EVENTS,
    Callback,
    CallbackHandler,
    CancelBatchException,
    CancelFitException,
    CancelStepException,
    CancelValidException,
    Order,
    Scheduler,
    annealing_cos,
    annealing_exp,
    annealing_linear,
    annealing_no,
)
from fastbase.core import FastbaseError
from fastbase.loop import TrainingInterrupted
from fastbase.metrics import accuracy
from fastbase.recorder import Recorder


class EventLog(Callback):
    """Records every event it sees; `raise_at` maps an event to (epoch, iter, exception) to raise."""

    def __init__(self, raise_at=None):
        self.events, self.raise_at = [], raise_at or {}

    def __getattribute__(self, name):
        if name in EVENTS:
            def record():
                self.events.append(name)
                at = self.raise_at.get(name)
                if at is not None and (at[0] is None or at[0] == self.learn.epoch) and (
                        at[1] is None or at[1] == self.learn.iter):
                    raise at[2]
            return record
        return object.__getattribute__(self, name)


TRAIN_BATCH = ["before_batch", "after_pred", "after_loss", "before_backward", "after_backward", "before_step",
               "after_step", "after_batch"]
VALID_BATCH = ["before_batch", "after_pred", "after_loss", "after_batch"]


def test_events_fire_in_order_and_the_right_number_of_times():
    learn = make_learner(make_data(n_train=96, n_valid=40, bs=32))  # 3 training batches, 2 validation batches
    log = EventLog()
    learn.fit(2, callbacks=[log])
    epoch = ["before_epoch", "before_train", *TRAIN_BATCH * 3, "after_train",
             "before_validate", *VALID_BATCH * 2, "after_validate", "after_epoch"]
    assert log.events == ["before_fit", *epoch * 2, "after_fit", "cleanup_fit"]


def test_callbacks_run_in_order():
    calls = []

    class Named(Callback):
        def __init__(self, order):
            self.order = order

        def before_fit(self):
            calls.append(self.order)

    CallbackHandler([Named(5), Named(-3), Named(0)])("before_fit")
    assert calls == [-3, 0, 5]


def test_cancel_fit_stops_training_and_still_cleans_up():
    learn = make_learner()
    log = EventLog({"after_batch": (0, 1, CancelFitException())})
    learn.fit(3, callbacks=[log])
    assert len(learn.recorder.losses) == 2 and learn.recorder.values == []
    assert log.events[-3:] == ["after_cancel_fit", "after_fit", "cleanup_fit"]


def test_cancel_step_skips_the_optimizer_step():
    learn = make_learner(wd=0.0)
    before = [p.clone() for p in learn.model.parameters()]
    learn.fit(1, callbacks=[EventLog({"before_step": (None, None, CancelStepException())})])
    assert all(torch.equal(a, b) for a, b in zip(before, learn.model.parameters()))
    assert learn.model[0].weight.grad is not None  # not zeroed: gradients accumulate


def test_cancel_validation_skips_it():
    learn = make_learner(metrics=[accuracy])
    log = EventLog({"before_validate": (None, None, CancelValidException())})
    learn.fit(1, callbacks=[log])
    assert log.events.count("before_batch") == 4 and "after_cancel_validate" in log.events
    assert math.isnan(learn.recorder.values[0][1]) and math.isnan(learn.recorder.values[0][2])


def test_cancel_batch_skips_the_rest_of_the_batch():
    learn = make_learner(wd=0.0)
    before = [p.clone() for p in learn.model.parameters()]
    log = EventLog({"after_loss": (None, None, CancelBatchException())})
    learn.fit(1, callbacks=[log])
    assert all(torch.equal(a, b) for a, b in zip(before, learn.model.parameters()))
    assert "before_backward" not in log.events and log.events.count("after_batch") == 4 + 2


def test_a_callback_can_change_the_batch():
    class AllClassZero(Callback):
        def before_batch(self):
            if self.learn.training:
                self.learn.yb = (torch.zeros_like(self.learn.yb[0]),)

    learn = make_learner()
    learn.fit(3, lr=1e-2, callbacks=[AllClassZero()])
    preds, _ = learn.get_preds()
    assert (preds.argmax(1) == 0).all()


def test_a_callback_can_change_the_loss():
    class NoLoss(Callback):
        def after_loss(self):
            self.learn.loss_grad = self.learn.loss_grad * 0

    learn = make_learner(wd=0.0)
    before = [p.clone() for p in learn.model.parameters()]
    learn.fit(1, callbacks=[NoLoss()])
    assert all(torch.equal(a, b) for a, b in zip(before, learn.model.parameters()))


def test_a_callback_can_replace_the_optimizer_step():
    class Accumulate(Callback):
        """Steps every second batch: gradients of two batches add up."""

        def optimizer_step(self):
            if self.learn.iter % 2 == 1:
                self.learn.opt.step()
                self.learn.opt.zero_grad()

    learn = make_learner()
    learn.fit(1, callbacks=[Accumulate()])  # 4 batches -> 2 steps
    assert int(learn.opt.state[learn.model[0].weight]["step"]) == 2


def test_a_callback_can_replace_forward_and_loss():
    class Doubled(Callback):
        def forward(self):
            return self.learn.model(*self.learn.xb) * 2

        def compute_loss(self):
            return self.learn.loss_func(self.learn.pred, *self.learn.yb) + 100

    learn = make_learner()
    learn.fit(1, callbacks=[Doubled()])
    assert min(learn.recorder.losses) > 100
    assert learn.validate()[0] < 100  # replacements last for that fit only


def test_two_callbacks_replacing_the_same_part_is_an_error():
    class Step(Callback):
        def optimizer_step(self):
            pass

    with pytest.raises(FastbaseError, match="only one may"):
        make_learner().fit(1, callbacks=[Step(), Step()])


def test_fastai_v1_event_names_are_rejected():
    class Old(Callback):
        def on_batch_end(self):
            pass

    with pytest.raises(FastbaseError, match="on_batch_end"):
        make_learner().fit(1, callbacks=[Old()])


def test_an_error_in_training_still_runs_cleanup_and_restores_the_sigint_handler():
    handler = signal.getsignal(signal.SIGINT)
    log = EventLog({"after_batch": (0, 1, ValueError("boom"))})
    with pytest.raises(ValueError, match="boom"):
        make_learner().fit(1, callbacks=[log])
    assert log.events[-1] == "cleanup_fit" and "after_fit" not in log.events
    assert signal.getsignal(signal.SIGINT) is handler


def test_keyboard_interrupt_stops_cleanly_with_a_warning():
    learn = make_learner(metrics=[accuracy])
    with pytest.warns(TrainingInterrupted, match="epoch 2, batch 2"):
        learn.fit(3, callbacks=[EventLog({"after_batch": (1, 1, KeyboardInterrupt())})])
    assert len(learn.recorder.losses) == 4 + 2 and len(learn.recorder.values) == 1
    assert learn.validate()[1] >= 0  # the model is usable


def test_ctrl_c_lets_the_current_batch_finish():
    class PressCtrlC(Callback):
        def __init__(self):
            self.steps = 0

        def after_loss(self):
            if self.learn.training and self.learn.iter == 1:
                os.kill(os.getpid(), signal.SIGINT)  # arrives mid-batch

        def after_step(self):
            self.steps += 1

    press, learn = PressCtrlC(), make_learner()
    with pytest.warns(TrainingInterrupted):
        learn.fit(2, callbacks=[press])
    assert press.steps == 2 and len(learn.recorder.losses) == 2  # batch 2 completed its step, then stop


def test_recorder_keeps_losses_on_the_device_until_the_epoch_ends():
    seen = []

    class Peek(Callback):
        order = Order.RECORDER + 5

        def after_batch(self):
            seen.append(len(self.learn.recorder._pending))

    learn = make_learner()
    learn.fit(2, callbacks=[Peek()])
    assert seen[:4] == [1, 2, 3, 4] and learn.recorder._pending == []
    rec = learn.recorder
    assert len(rec.losses) == len(rec.lrs) == len(rec.moms) == 8 and rec.n_batches == [4, 4]
    assert rec.smooth_losses[0] == pytest.approx(rec.losses[0])  # debiased


def test_recorder_state_round_trips():
    learn = make_learner(metrics=[accuracy])
    learn.fit(1)
    copy = Recorder()
    copy.load_state_dict(learn.recorder.state_dict())
    assert copy.losses == learn.recorder.losses and copy.values == learn.recorder.values


def test_recorder_plots_return_figures():
    learn = make_learner(metrics=[accuracy])
    learn.fit_one_cycle(2)
    for fig in (learn.recorder.plot_losses(), learn.recorder.plot_lr(), learn.recorder.plot_metrics(),
                learn.recorder.plot(skip_start=0, skip_end=0)):
        assert isinstance(fig, matplotlib.figure.Figure)
    assert len(learn.recorder.plot_lr(show_moms=True).axes) == 2
    with pytest.raises(FastbaseError, match="lr_find"):
        learn.recorder.plot(skip_start=0, skip_end=0, suggestion=True)


def test_annealing_functions_hit_their_ends():
    assert annealing_no(3, 1, 0.7) == 3
    assert annealing_linear(1, 3, 0.5) == 2
    assert annealing_exp(1e-4, 1e-2, 0.5) == pytest.approx(1e-3)
    assert [annealing_cos(1, 0, p) for p in (0, 0.5, 1)] == pytest.approx([1, 0.5, 0])


def test_scheduler_steps_to_its_end_and_round_trips():
    sched = Scheduler((0.0, 1.0), 4)
    assert [sched.step() for _ in range(4)] == [0.25, 0.5, 0.75, 1.0] and sched.is_done
    other = Scheduler((0.0, 1.0), 4)
    other.load_state_dict({"n": 2})
    assert other.step() == 0.75


def builtin_callbacks_in_order():
    """Every callback class fastbase ships, in the order `Order` documents."""
    from fastbase.callback import DeferredInterrupt, GatherPreds, ValidationStats
    from fastbase.callbacks import (
        BnFreeze,
        ChannelsLast,
        Checkpoint,
        CSVLogger,
        DistributedTrainer,
        EarlyStopping,
        GradientAccumulation,
        GradientClipping,
        LossMetrics,
        LRFinder,
        MixedPrecision,
        MixUp,
        OneCycleScheduler,
        ProgressCallback,
        RecalibrateBN,
        ReduceLROnPlateau,
        ResumeCallback,
        SaveModelCallback,
        TensorBoardLogger,
        TerminateOnNaN,
        TrackerCallback,
    )
    from fastbase.debug import _OverfitWatch
    from fastbase.report import StageLog
    from fastbase.vision.feature_cache import FeatureCache
    from fastbase.vision.gan import GANDiscriminativeLR

    return [DistributedTrainer, MixUp, ValidationStats, BnFreeze,
            GradientAccumulation, MixedPrecision, TerminateOnNaN, GradientClipping,  # before_step, in this order
            GatherPreds, OneCycleScheduler, GANDiscriminativeLR, Recorder, LossMetrics, ResumeCallback, LRFinder, StageLog, _OverfitWatch,
            CSVLogger, TensorBoardLogger, ProgressCallback, TrackerCallback, SaveModelCallback, ReduceLROnPlateau,
            RecalibrateBN, ChannelsLast, EarlyStopping, Checkpoint, DeferredInterrupt, FeatureCache]


def test_each_builtin_callback_has_an_order_of_its_own():
    classes = builtin_callbacks_in_order()
    orders = [cls.order for cls in classes]
    assert all(isinstance(order, Order) for order in orders)
    assert len(set(orders)) == len(orders)  # no ties: the order never depends on the order of a list
    assert set(Order) - set(orders) == {Order.USER}  # every other name belongs to one built-in


def test_builtin_callbacks_sort_in_the_documented_order():
    classes = builtin_callbacks_in_order()
    assert sorted(classes, key=lambda cls: cls.order) == classes
    names = {cls.__name__: cls for cls in classes}
    for first, then in [("MixUp", "ChannelsLast"), ("GradientAccumulation", "GradientClipping"),
                        ("MixedPrecision", "TerminateOnNaN"), ("Recorder", "TrackerCallback"),
                        ("SaveModelCallback", "Checkpoint"), ("EarlyStopping", "Checkpoint"),
                        ("DeferredInterrupt", "FeatureCache"), ("ValidationStats", "Recorder"),
                        ("OneCycleScheduler", "ResumeCallback"), ("Recorder", "ResumeCallback")]:
        assert names[first].order < names[then].order, (first, then)


def test_a_callback_without_an_order_runs_between_the_gradient_callbacks_and_the_recorder():
    assert Callback.order == Order.USER == 0
    assert Order.GRADIENT_CLIPPING < Callback.order < Order.SCHEDULER < Order.RECORDER


def test_repr_names_the_order():
    class Mine(Callback):
        order = Order.RECORDER + 5

    assert repr(Recorder()) == "Recorder(order=RECORDER)" and repr(Mine()) == "Mine(order=55)"


def test_the_recorder_loads_a_state_saved_under_its_older_keys():
    state = {"lrs": [0.1], "moms": [0.9], "nb_batches": [1], "values": [[1.0, 2.0, 0.5]], "losses": [1.0],
             "smooth": [1.0], "avg": 0.02, "metrics_names": ["accuracy"]}
    rec = Recorder()
    rec.load_state_dict(state)
    assert rec.n_batches == [1] and rec.metric_names == ["accuracy"] and rec.metrics == [[0.5]]
    assert set(rec.state_dict()) >= {"n_batches", "metric_names"} and "nb_batches" not in rec.state_dict()
