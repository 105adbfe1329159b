"""lr_find: an lr sweep that restores everything, stops on divergence, costs only its iterations,
and returns (valley, steep, minimum) computed against log10(lr)."""
import matplotlib.figure
import numpy as np
import pytest
import torch
from tiny_models import make_data, make_learner

from fastbase.callback import Callback
from fastbase.callbacks.lr_finder import LRFinderError, LRSuggestions, suggest_lrs


def snapshot(learn):
    opt = learn.opt.state_dict()
    return ({k: v.clone() for k, v in learn.model.state_dict().items()},
            {k: {n: t.clone() for n, t in s.items()} for k, s in opt["state"].items()}, opt["param_groups"])


def test_lr_find_restores_weights_and_optimizer_state_exactly():
    learn = make_learner(groups=True)
    learn.fit_one_cycle(1, slice(1e-3, 1e-2))
    model, state, groups = snapshot(learn)
    learn.lr_find(num_it=30, stop_div=False, wd=0.5)
    model2, state2, groups2 = snapshot(learn)
    assert all(torch.equal(model[k], model2[k]) for k in model)  # BatchNorm buffers included
    assert groups == groups2  # lr, betas, wd of every param group
    assert all(torch.equal(state[k][n], state2[k][n]) for k in state for n in state[k])


def test_lr_find_leaves_the_random_state_as_it_found_it():
    learn = make_learner()
    torch.manual_seed(3)
    expected = torch.rand(3)
    torch.manual_seed(3)
    learn.lr_find(num_it=10, stop_div=False)
    assert torch.equal(torch.rand(3), expected)


def test_lr_find_costs_only_its_iterations():
    class Count(Callback):
        changes_step = True  # so that the probe run keeps it and it sees the batches

        def __init__(self):
            self.train, self.valid = 0, 0

        def after_batch(self):
            if self.learn.training:
                self.train += 1
            else:
                self.valid += 1

    count = Count()
    learn = make_learner(callbacks=[count])  # 4 batches per epoch
    learn.lr_find(num_it=10, stop_div=False)
    assert (count.train, count.valid) == (10, 0)
    lrs = learn.recorder.lrs
    assert lrs[0] == pytest.approx(1e-7) and lrs[-1] == pytest.approx(10) and len(lrs) == 10


def test_lr_find_stops_when_the_loss_diverges():
    learn = make_learner(make_data(n_train=1024))
    learn.lr_find(end_lr=1e4, num_it=100)
    n = len(learn.recorder.lrs)
    assert 20 < n < 100 and learn.recorder.lrs[-1] < 1e4
    losses = learn.recorder.smooth_losses
    assert not np.isfinite(losses[-1]) or losses[-1] > 4 * min(losses[:-1])


def test_lr_find_returns_valley_steep_minimum_in_that_order():
    learn = make_learner(make_data(n_train=1024))
    sugg = learn.lr_find()
    assert isinstance(sugg, LRSuggestions) and sugg._fields == ("valley", "steep", "minimum")
    assert all(1e-7 < v < 10 for v in sugg) and sugg[0] == sugg.valley and sugg[2] == sugg.minimum
    fig = learn.recorder.plot(suggestion=True)
    assert isinstance(fig, matplotlib.figure.Figure)
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert [label.split(":")[0] for label in labels] == ["valley", "steep", "minimum"]


def test_suggestions_work_against_log_lr_and_drop_the_start_and_non_finite_points():
    # dense sampling up to 1e-3, coarse after: against the index, the gentle slope at 3e-2 would look
    # steeper than the real (per log10 lr) steepest descent at 3e-5
    lrs = np.concatenate([np.logspace(-6, -3, 50), np.logspace(-3, 0, 11)[1:]])
    log_lrs = np.log10(lrs)
    losses = 3 - 0.5 * np.tanh(3 * (log_lrs + 4.5)) - np.tanh(0.8 * (log_lrs + 1.5))
    losses[:3] = -5.0  # a spike in the first 10%: ignored
    losses[-3:] = [np.nan, np.inf, np.nan]  # a diverging tail: dropped
    valley, steep, minimum = suggest_lrs(lrs, losses)
    assert steep == pytest.approx(10 ** -4.5, rel=0.2)
    assert minimum == pytest.approx(lrs[-4] / 10) and lrs[5] < valley < lrs[-4]
    index_steep = lrs[6:-3][np.argmin(np.diff(losses[6:-3]))]
    assert index_steep > 1e-3  # what an index-based slope would have picked


def test_too_few_points_is_a_clear_error_and_the_model_is_untouched():
    with pytest.raises(LRFinderError, match="Only 3 usable points"):
        suggest_lrs([1e-3, 1e-2, 1e-1, 1.0], [1.0, 0.9, float("nan"), 0.5])
    learn = make_learner()
    before = {k: v.clone() for k, v in learn.model.state_dict().items()}
    with pytest.raises(LRFinderError, match="num_it"):
        learn.lr_find(num_it=4)
    assert all(torch.equal(v, learn.model.state_dict()[k]) for k, v in before.items())


class ScriptedLoss:
    """A loss whose training values follow a script (then repeat its last value), with a gradient."""

    def __init__(self, values):
        self.values, self.calls = list(values), 0

    def __call__(self, out, y):
        value = self.values[min(self.calls, len(self.values) - 1)]
        self.calls += 1
        return out.mean() * 0 + value


def test_a_lucky_first_batch_does_not_stop_the_sweep():
    # a trained model (e.g. after the frozen stage): small, noisy losses. The first batch's 0.01
    # would have set a best that the ordinary 0.2 after it is 4x above, ending the sweep at once.
    learn = make_learner(make_data(n_train=1024), loss_func=ScriptedLoss([0.01, 0.2]))
    assert isinstance(learn.lr_find(num_it=50), LRSuggestions)
    assert len(learn.recorder.lrs) == 50


def test_a_sweep_that_diverges_too_early_warns_and_still_plots():
    learn = make_learner(make_data(n_train=1024), loss_func=ScriptedLoss([0.3, 0.3, 0.3, 0.3, float("inf")]))
    with pytest.warns(UserWarning, match=r"stopped at iteration 5 \(lr .*diverged.*recorder.plot"):
        assert learn.lr_find(num_it=50) is None
    assert len(learn.recorder.lrs) == 5
    assert isinstance(learn.recorder.plot(skip_start=0, skip_end=0, return_fig=True), matplotlib.figure.Figure)
