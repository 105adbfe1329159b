"""Mixed precision on the CPU: bfloat16 autocast by default, float16 with the GradScaler when asked
(the path CUDA takes), `to_fp32()` back to full precision, and the dtype rules."""
import math
import warnings

import pytest
import torch
from tiny_models import make_data, make_learner

from fastbase.callback import Callback
from fastbase.callbacks.mixed_precision import MixedPrecision, as_fp32, autocast_dtype
from fastbase.callbacks.trackers import TerminateOnNaN
from fastbase.core import FastbaseError

# this test machine's CPU may lack native bfloat16: the warning saying so is tested once, below
pytestmark = pytest.mark.filterwarnings("ignore:This CPU has no native bfloat16:UserWarning")


class ForwardDtype(Callback):
    """The dtype of the first layer's output in training, and the predictions' dtype."""

    def before_fit(self):
        self.seen, self.preds = set(), set()
        self._hook = self.learn.model[0].register_forward_hook(lambda m, i, out: self.seen.add(out.dtype))

    def after_pred(self):
        self.preds.add(self.learn.pred.dtype)

    def cleanup_fit(self):
        self._hook.remove()


def data():
    return make_data(n_train=64, n_valid=32, bs=32)


def test_bf16_on_cpu_runs_in_bf16_and_gives_losses_close_to_fp32():
    full, mixed = make_learner(data()), make_learner(data()).to_fp16()
    watch_full, watch_mixed = ForwardDtype(), ForwardDtype()
    full.fit(2, 1e-2, callbacks=[watch_full])
    mixed.fit(2, 1e-2, callbacks=[watch_mixed])
    assert watch_full.seen == {torch.float32} and watch_mixed.seen == {torch.bfloat16}
    assert watch_mixed.preds == {torch.float32}  # the loss and metrics see float32
    assert mixed.recorder.losses == pytest.approx(full.recorder.losses, rel=2e-2)
    assert mixed.recorder.val_losses == pytest.approx(full.recorder.val_losses, rel=2e-2)
    assert all(p.dtype == torch.float32 for p in mixed.model.parameters())  # master weights stay float32
    mp = mixed.callbacks[0]
    assert mp.dtype == torch.bfloat16 and not mp.skips_nonfinite_steps  # no scaler on bf16: scaler(enabled=False)
    assert mp.state_dict() == {"scaler": {}}
    assert mixed.get_preds()[0].dtype == torch.float32


def test_to_fp32_removes_mixed_precision_and_makes_parameters_float32():
    learn = make_learner(data()).to_fp16().to_fp16()
    assert sum(isinstance(cb, MixedPrecision) for cb in learn.callbacks) == 1  # replaced, not stacked
    learn.model.half()  # as if someone had converted the model by hand
    assert learn.to_fp32() is learn
    assert not any(isinstance(cb, MixedPrecision) for cb in learn.callbacks)
    assert all(p.dtype == torch.float32 for p in learn.model.parameters())
    assert all(b.dtype in (torch.float32, torch.int64) for b in learn.model.buffers())
    watch = ForwardDtype()
    learn.fit(1, 1e-2, callbacks=[watch])
    assert watch.seen == {torch.float32}


class InfGrad(Callback):
    """Puts inf into one gradient after backward at training batch `at` (global count), and records
    whether the weights moved over that batch."""

    def __init__(self, at):
        self.at, self.count, self.moved = at, 0, None

    def before_batch(self):
        if self.learn.training:
            self.before = self.learn.model[0].weight.detach().clone()

    def after_backward(self):
        if self.count == self.at:
            self.learn.model[0].weight.grad[0, 0] = math.inf

    def after_batch(self):
        if self.learn.training:
            if self.count == self.at:
                self.moved = not torch.equal(self.before, self.learn.model[0].weight)
            self.count += 1


def test_fp16_loss_scaling_skips_an_overflowing_step_and_halves_the_scale():
    learn = make_learner(data()).to_fp16(dtype="fp16", init_scale=1024.0)
    inf, stopper = InfGrad(at=1), TerminateOnNaN()
    learn.fit(2, 1e-2, callbacks=[inf, stopper])  # TerminateOnNaN leaves overflows to the scaler
    mp = learn.callbacks[0]
    assert mp.dtype == torch.float16 and mp.skips_nonfinite_steps
    assert inf.moved is False and stopper.stopped_at is None
    assert mp.scaler.get_scale() == 512.0
    assert all(torch.isfinite(p).all() for p in learn.model.parameters())
    state = mp.state_dict()
    assert state["scaler"]["scale"] == 512.0
    fresh = MixedPrecision("fp16")
    fresh.load_state_dict(state)  # before the scaler exists: applied when it is built
    again = make_learner(data(), callbacks=[fresh])
    again.fit(1, 1e-3)
    assert fresh.scaler.get_scale() == 512.0


class GradNorm(Callback):
    """The global gradient norm that user callbacks (`Order.USER`) see before each step."""

    def before_fit(self):
        self.norms = []

    def before_step(self):
        grads = [p.grad for p in self.learn.model.parameters() if p.grad is not None]
        self.norms.append(float(torch.stack([g.norm() for g in grads]).norm()))


def test_gradients_are_unscaled_before_clipping_and_user_callbacks():
    learn = make_learner(data(), clip=0.1).to_fp16(dtype="fp16", init_scale=2.0 ** 12)
    norms = GradNorm()
    learn.fit(1, 1e-2, callbacks=[norms])
    assert norms.norms and max(norms.norms) <= 0.1 + 1e-5  # clipped real gradients, not scaled ones


def test_autocast_dtype_rules(monkeypatch):
    assert autocast_dtype("cuda") == torch.float16 and autocast_dtype("cpu") == torch.bfloat16
    assert autocast_dtype("cpu", "fp16") == torch.float16 and autocast_dtype("cpu", torch.bfloat16) == torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert autocast_dtype("cuda", "bf16") == torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    with pytest.warns(UserWarning, match="no bfloat16"):
        assert autocast_dtype("cuda", torch.bfloat16) == torch.float16
    with pytest.raises(FastbaseError, match="float16 or torch.bfloat16"):
        autocast_dtype("cpu", torch.float64)
    with pytest.raises(FastbaseError, match="Unknown mixed-precision dtype 'fp8'"):
        MixedPrecision("fp8")


def test_as_fp32_checks_every_parameter():
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2)).to(torch.bfloat16)
    param = model[0].weight
    assert as_fp32(model) is model and model[0].weight is param  # same Parameter: an optimizer keeps working
    assert all(t.dtype == torch.float32 for t in model.state_dict().values() if t.is_floating_point())


def test_scaler_kwargs_and_no_scaler_for_bf16_even_in_float16_requests():
    learn = make_learner(data()).to_fp16(dtype="bf16", loss_scale=False)
    learn.fit(1, 1e-3)
    assert not learn.callbacks[0].skips_nonfinite_steps
    with pytest.raises(TypeError):
        make_learner(data()).to_fp16(scale_window=10)  # unknown scaler argument fails early


def test_bf16_on_a_cpu_without_native_support_warns_that_it_is_slower(monkeypatch):
    import fastbase.callbacks.mixed_precision as mp

    monkeypatch.setattr(mp, "cpu_has_native_bf16", lambda: False)
    learn = make_learner(data()).to_fp16()
    with pytest.warns(UserWarning, match="no native bfloat16.*slower"):
        learn.validate()
    monkeypatch.setattr(mp, "cpu_has_native_bf16", lambda: True)
    learn = make_learner(data()).to_fp16()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        learn.validate()
