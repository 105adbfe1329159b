"""Hooks (`fastbase.callbacks.hooks`): what they store, that they always come off, the dummy-batch
helpers, and the callbacks built on them (`HookCallback`, `ActivationStats`)."""
import matplotlib
import pytest
import torch
from tiny_models import make_learner
from torch import nn

from fastbase.callback import Callback
from fastbase.callbacks.hooks import (
    ActivationStats,
    Hook,
    HookCallback,
    Hooks,
    dummy_batch,
    dummy_eval,
    hook_output,
    hook_outputs,
    model_sizes,
    num_features_model,
)
from fastbase.core import FastbaseError
from fastbase.interpret import InterpretationError
from fastbase.layers import Flatten, NormType, conv_layer, requires_grad, res_block
from fastbase.optimizer import layer_groups_summary
from fastbase.vision.interpret import grad_cam

matplotlib.use("Agg")


def n_hooks(model: nn.Module) -> int:
    """Forward hooks still registered anywhere in `model`."""
    return sum(len(m._forward_hooks) for m in model.modules())


def small_cnn() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(conv_layer(3, 4, stride=2), res_block(4), conv_layer(4, 6, stride=2),
                         nn.AdaptiveAvgPool2d(1), Flatten(), nn.Linear(6, 2))


def test_star_import_and_namespaces_give_the_hook_names():
    namespace = {}
    exec("from fastbase.callbacks.hooks import *", namespace)  # noqa: S102 -- the statement under test, on a fixed string
    names = {"Hook", "Hooks", "hook_output", "hook_outputs", "model_sizes", "dummy_eval", "dummy_batch",
             "num_features_model", "HookCallback", "ActivationStats"}
    assert names <= set(namespace)
    import fastbase.callbacks
    import fastbase.vision

    assert names <= set(fastbase.callbacks.__all__)
    assert {"hook_output", "hook_outputs", "Hook", "Hooks", "ActivationStats", "model_sizes", "num_features_model",
            "dummy_eval", "conv_layer", "res_block", "Flatten"} <= set(fastbase.vision.__all__)
    assert fastbase.vision.hook_output is hook_output


def test_hook_output_keeps_the_latest_output_and_comes_off_on_leaving():
    model = small_cnn()
    x = torch.randn(2, 3, 16, 16)
    with hook_output(model[2]) as hook:
        assert hook.stored is None
        model(x)
        expected = model[2](model[1](model[0](x)))
        assert hook.stored.shape == (2, 6, 4, 4) and not hook.stored.requires_grad
        assert torch.allclose(hook.stored, expected)
        assert n_hooks(model) == 1
    assert n_hooks(model) == 0 and hook.removed
    model(torch.randn(1, 3, 16, 16))
    assert hook.stored.shape[0] == 2  # removed: no longer updated


def test_hooks_come_off_when_the_forward_pass_raises():
    model = small_cnn()
    with pytest.raises(RuntimeError), hook_outputs(model) as hooks:
        model(torch.randn(2, 5, 16, 16))  # 5 channels, the model wants 3
    assert n_hooks(model) == 0 and all(h.removed for h in hooks)
    with pytest.raises(RuntimeError), hook_output(model[0]):
        model(torch.randn(2, 5, 16, 16))
    assert n_hooks(model) == 0


def test_hook_outputs_on_a_model_hooks_its_children_in_order():
    model = small_cnn()
    with hook_outputs(model) as hooks:
        model(torch.randn(2, 3, 16, 16))
    assert len(hooks) == len(model) and hooks[0].stored.shape == (2, 4, 8, 8)
    assert [tuple(s.shape) for s in hooks.stored][-3:] == [(2, 6, 1, 1), (2, 6), (2, 2)]


def test_detach_false_keeps_outputs_in_the_graph():
    model = small_cnn()
    with hook_output(model[0], detach=False) as hook:
        out = model(torch.randn(2, 3, 16, 16))
    grad = torch.autograd.grad(out.sum(), hook.stored)[0]
    assert grad.shape == hook.stored.shape


def test_grad_hook_stores_the_gradient_of_the_output_even_before_an_inplace_relu():
    model = small_cnn()
    conv = model[0][0]  # followed by ReLU(inplace=True), which module backward hooks refuse
    x = torch.randn(2, 3, 16, 16)
    with hook_output(conv, grad=True) as hook:
        model(x)[:, 1].sum().backward()
    # the same gradient by hand: the conv's output kept out of place
    y = conv(x)
    y.retain_grad()
    rest = nn.Sequential(nn.ReLU(), model[0][2], *model[1:])
    rest(y)[:, 1].sum().backward()
    assert isinstance(hook.stored, list) and torch.allclose(hook.stored[0], y.grad, atol=1e-6)
    assert n_hooks(model) == 0


def test_grad_hook_on_a_frozen_body_still_gets_its_gradient():
    model = small_cnn()
    requires_grad(model, False)
    model.eval()
    x = torch.randn(2, 3, 16, 16)
    with hook_output(model[1], grad=True) as hook:
        model(x)[0, 1].backward()
    body = model[1](model[0](x)).requires_grad_()
    model[2:](body)[0, 1].backward()
    assert torch.allclose(hook.stored[0], body.grad, atol=1e-6)
    with hook_output(model[1], grad=True) as hook, torch.no_grad():  # nothing to track: output unchanged
        assert not model(x).requires_grad
    assert hook.stored is None


def test_hook_and_hooks_with_a_function():
    model = small_cnn()
    with Hooks([model[0], model[2]], lambda module, inputs, output: tuple(output.shape)) as hooks:
        model(torch.randn(3, 3, 16, 16))
    assert hooks.stored == [(3, 4, 8, 8), (3, 6, 4, 4)]
    with Hook(model[5], lambda module, inputs, output: inputs[0].shape[1]) as hook:
        model(torch.randn(1, 3, 16, 16))
    assert hook.stored == 6
    with pytest.raises(FastbaseError, match="nn.Module"):
        Hooks([model[0], "layer1"], lambda *a: None)


def test_dummy_batch_and_dummy_eval_put_the_mode_back():
    model = small_cnn().train()
    batch = dummy_batch(model, (8, 12))
    assert batch.shape == (1, 3, 8, 12) and batch.abs().max() <= 1
    out = dummy_eval(model, (16, 16))
    assert out.shape == (1, 2) and not out.requires_grad and model.training


def test_model_sizes_and_num_features():
    model = small_cnn()
    sizes = model_sizes(model, (32, 32))
    assert [tuple(s) for s in sizes] == [(1, 4, 16, 16), (1, 4, 16, 16), (1, 6, 8, 8), (1, 6, 1, 1), (1, 6), (1, 2)]
    assert num_features_model(model[:3]) == 6
    needs_big_input = nn.Sequential(nn.Conv2d(3, 5, kernel_size=100))  # fails at 64 px, works at 128
    assert num_features_model(needs_big_input) == 5


def test_layer_groups_summary_shows_a_weight_normalised_conv_as_one_layer():
    model = nn.Sequential(conv_layer(1, 4, norm_type=NormType.Weight), Flatten())
    text = layer_groups_summary(model, [model], (torch.randn(2, 1, 5, 5),))
    rows = [line for line in text.splitlines() if line.startswith(("0", "1"))]
    assert len(rows) == 3 and "[4, 5, 5]" in rows[0] and " 44  True" in rows[0]  # 36 + 4 scales + 4 biases
    assert "[100]" in rows[2] and n_hooks(model) == 0


def test_grad_cam_takes_its_hooks_off_even_when_it_fails():
    model = small_cnn()
    with pytest.raises(InterpretationError, match="4-d feature map"):
        grad_cam(model, torch.randn(2, 3, 16, 16), torch.tensor([0, 1]), layer=model[4])
    assert n_hooks(model) == 0


# --- callbacks --------------------------------------------------------------------------------------
class CountCalls(HookCallback):
    def before_fit(self):
        super().before_fit()
        self.calls = 0

    def hook(self, module, inputs, output):
        self.calls += 1


def test_hook_callback_hooks_layers_with_weights_for_the_fit_only():
    learn = make_learner()  # Linear, BatchNorm1d, ReLU, Linear; 4 training and 2 validation batches
    counter = CountCalls()
    learn.fit(1, callbacks=[counter])
    assert counter.hooked == [learn.model[0], learn.model[1], learn.model[3]]
    assert counter.calls == 3 * (4 + 2)  # every forward pass, training and validation
    assert n_hooks(learn.model) == 0


class Explode(Callback):
    def after_pred(self):
        if self.learn.iter == 1:
            raise ValueError("boom")


def test_hook_callback_takes_its_hooks_off_when_the_fit_fails():
    learn = make_learner()
    counter = CountCalls([learn.model[0]])
    with pytest.raises(ValueError, match="boom"):
        learn.fit(1, callbacks=[counter, Explode()])
    assert counter.calls == 2 and n_hooks(learn.model) == 0


class KeepInputs(Callback):
    def before_fit(self):
        self.inputs = []

    def after_pred(self):
        if self.learn.training:
            self.inputs.append(self.learn.xb[0].clone())


def test_activation_stats_are_mean_and_std_per_layer_and_training_batch():
    learn = make_learner()
    stats, inputs = ActivationStats(), KeepInputs()
    learn.fit(2, 0.0, callbacks=[stats, inputs])  # lr 0: weights fixed, so the values can be recomputed
    assert stats.stats.shape == (2, 3, 8) and stats.stats.device.type == "cpu"  # 2 epochs x 4 training batches
    first = learn.model[0]
    expected = torch.stack([torch.stack([first(x).mean(), first(x).std()]) for x in inputs.inputs]).T.detach()
    assert torch.allclose(stats.stats[:, 0], expected, atol=1e-5)
    assert stats.layer_names[0] == "0 Linear" and n_hooks(learn.model) == 0


def test_activation_stats_plot_draws_means_and_stds(tmp_path):
    learn = make_learner()
    stats = ActivationStats()
    with pytest.raises(FastbaseError, match="pass it to a fit"):
        stats.plot()
    learn.fit(1, callbacks=[stats])
    fig = stats.plot(save_to=tmp_path / "stats.png")
    assert type(fig).__name__ == "Figure" and (tmp_path / "stats.png").stat().st_size > 0
    means, stds = fig.axes[:2]
    assert len(means.lines) == len(stds.lines) == 3 and len(means.lines[0].get_ydata()) == 4
    assert len(stats.plot(layers=[2]).axes[0].lines) == 1
    with pytest.raises(FastbaseError, match="from 0 to 2"):
        stats.plot(layers=[3])


def test_probe_runs_leave_activation_stats_out():
    learn = make_learner(callbacks=[ActivationStats()])
    stats = learn.callbacks[0]
    learn.lr_find(num_it=5)
    assert stats.stats is None and n_hooks(learn.model) == 0
    learn.fit(1)
    assert stats.stats.shape == (2, 3, 4)


def test_dummy_batch_leaves_the_global_random_stream_alone():
    model = small_cnn()
    torch.manual_seed(3)
    expected = torch.rand(2)
    torch.manual_seed(3)
    first = dummy_batch(model)
    assert torch.equal(torch.rand(2), expected) and torch.equal(dummy_batch(model), first)
