"""Gradient accumulation (n batches train like one batch n times larger) and gradient clipping."""
from functools import partial

import pytest
import torch
from tiny_models import make_data
from torch import nn

from fastbase.callback import Callback
from fastbase.callbacks.gradients import (
    AccumulateScheduler,
    GradientAccumulation,
    GradientClipping,
)
from fastbase.core import FastbaseError
from fastbase.learner import Learner


def no_bn_learner(n_items: int, bs: int, loss_func=None, **kwargs) -> Learner:
    """A BatchNorm-free MLP on `n_items` items in a fixed order (no shuffling, no dropped batch)."""
    data = make_data(n_train=n_items, n_valid=16, bs=bs)
    data.train_dl = data.train_dl.new(shuffle=False, drop_last=False)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2))
    return Learner(data, model, opt_func=partial(torch.optim.SGD, momentum=0.9), wd=1e-2, silent=True,
                   loss_func=loss_func, **kwargs)


class Steps(Callback):
    """The training batches (0-based) after which the optimizer stepped, and the gradient norms it saw."""

    def before_fit(self):
        self.at, self.norms, self.raw_norms = [], [], []

    def after_backward(self):
        self.raw_norms.append(_norm(self.learn.model))

    def before_step(self):  # Order.USER: only reached when accumulation lets the step happen
        self.at.append(self.learn.iter)
        self.norms.append(_norm(self.learn.model))


def _norm(model) -> float:
    return float(torch.stack([p.grad.norm() for p in model.parameters() if p.grad is not None]).norm())


@pytest.mark.parametrize(("n_items", "reduction"), [(64, "mean"), (28, "mean"), (28, "sum")],
                         ids=["full_groups", "short_last_group", "sum_loss"])
def test_accumulating_n_batches_equals_one_batch_n_times_larger(n_items, reduction):
    loss = nn.CrossEntropyLoss(reduction=reduction)
    small = no_bn_learner(n_items, bs=8, loss_func=loss, callbacks=[GradientAccumulation(n_step=4)])
    large = no_bn_learner(n_items, bs=32, loss_func=loss)
    small_steps, large_steps = Steps(), Steps()
    small.fit(2, 0.05, callbacks=[small_steps])
    large.fit(2, 0.05, callbacks=[large_steps])
    assert len(small_steps.at) == len(large_steps.at) == 2 * (2 if n_items == 64 else 1)
    for key, value in large.model.state_dict().items():
        assert torch.allclose(small.model.state_dict()[key], value, atol=1e-6), key
    assert small_steps.norms == pytest.approx(large_steps.norms, rel=1e-5)


def test_accumulation_steps_every_n_batches_and_at_the_end_of_each_epoch():
    learn = no_bn_learner(40, bs=8, callbacks=[GradientAccumulation(n_step=2)])  # 5 batches per epoch
    steps = Steps()
    learn.fit(2, 0.01, callbacks=[steps])
    assert steps.at == [1, 3, 4, 1, 3, 4]
    learn = no_bn_learner(40, bs=8, callbacks=[AccumulateScheduler(n_step=2, drop_last=True)])
    learn.fit(1, 0.01, callbacks=[steps])
    assert steps.at == [1, 3] and all(p.grad is None for p in learn.model.parameters())


def test_accumulation_records_the_plain_batch_losses():
    plain = no_bn_learner(32, bs=8)
    accumulated = no_bn_learner(32, bs=8, callbacks=[GradientAccumulation(n_step=4)])
    plain.fit(1, 0.0)
    accumulated.fit(1, 0.0)
    assert accumulated.recorder.losses == pytest.approx(plain.recorder.losses, rel=1e-6)
    with pytest.raises(FastbaseError, match="n_step >= 1"):
        GradientAccumulation(0)


def test_clip_bounds_the_gradient_norm():
    learn = no_bn_learner(64, bs=16, clip=0.05)
    steps = Steps()
    learn.fit(1, 0.1, callbacks=[steps])
    assert max(steps.raw_norms) > 0.05  # clipping had something to do
    assert max(steps.norms) <= 0.05 + 1e-6
    learn = no_bn_learner(64, bs=16, callback_fns=[partial(GradientClipping, clip=0.01)])
    learn.fit(1, 0.1, callbacks=[steps])
    assert max(steps.norms) <= 0.01 + 1e-6
    with pytest.raises(FastbaseError, match="positive max norm"):
        GradientClipping(0)


def test_clipping_applies_to_the_accumulated_gradient():
    learn = no_bn_learner(64, bs=8, clip=0.05, callbacks=[GradientAccumulation(n_step=4)])
    steps = Steps()
    learn.fit(1, 0.1, callbacks=[steps])
    assert steps.at == [3, 7] and max(steps.norms) <= 0.05 + 1e-6
