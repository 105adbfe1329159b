"""`fine_tune` (fastai 2's recipe) and `two_stages`: both stages run as specified, the outcome is
reported, and `keep_best` puts back the frozen stage's weights only when the unfrozen stage did worse."""
import io
import math
from contextlib import redirect_stdout

import pytest
import torch
from image_fixtures import digits_fixture  # noqa: F401 -- `digits` is a fixture
from tiny_models import make_learner

from fastbase.callback import Callback
from fastbase.core import FastbaseError
from fastbase.finetune import StageComparison, two_stages
from fastbase.metrics import accuracy


def _learner(**kwargs):
    return make_learner(groups=True, metrics=[accuracy], **kwargs)


def _weights(learn):
    return {k: v.clone() for k, v in learn.model.state_dict().items()}


def test_fine_tune_trains_head_frozen_then_everything_at_fastai_rates():
    learn = _learner()
    seen = []
    body_before = learn.model[0].weight.clone()

    def record():
        seen.append((learn.n_frozen, learn.opt.lrs if learn.opt else None))

    result = learn.fine_tune(2, base_lr=4e-3, freeze_epochs=1, callbacks=[_AtFitEnd(record)])
    assert [n for n, _ in seen] == [2, 0]  # head only (3 groups, 2 frozen), then all groups
    assert len(learn.recorder.values) == 2  # the recorder keeps the last fit: 2 unfrozen epochs
    # the unfrozen fit's schedule ends at max_lr / final_div, spread from base_lr/2/100 to base_lr/2
    lrs = learn.recorder.lrs
    assert lrs[0] == pytest.approx(2e-3 / 5, rel=1e-6)  # starts at max / div
    assert max(lrs) == pytest.approx(2e-3, rel=1e-6)
    assert not torch.equal(body_before, learn.model[0].weight)  # the body trained in the second stage
    assert isinstance(result, StageComparison) and result.monitor == "accuracy" and result.mode == "max"
    assert result.kept == "unfrozen"


class _AtFitEnd(Callback):
    """Calls `fn` after each fit (to look at the Learner between the stages)."""
    def __init__(self, fn):
        self.fn = fn

    def after_fit(self):
        self.fn()


def test_keep_best_puts_back_the_frozen_weights_when_the_second_stage_is_worse():
    learn = _learner()
    saved = {}

    def frozen():
        learn.fit_one_cycle(1, 1e-2)
        saved.update(_weights(learn))

    def ruin():  # a second stage that wrecks the model: a huge learning rate
        learn.fit(1, 50.0)

    result = two_stages(learn, frozen, ruin, keep_best=True, monitor="valid_loss")
    assert result.mode == "min" and not result.helped and result.kept == "frozen"
    assert result.unfrozen > result.frozen
    for k, v in learn.model.state_dict().items():
        assert torch.equal(v, saved[k]), k
    assert learn.n_frozen == 0  # the Learner stays unfrozen
    assert "frozen stage's weights were put back" in result.message


def test_keep_best_keeps_a_second_stage_that_helped():
    learn = _learner()
    result = two_stages(learn, lambda: learn.fit_one_cycle(1, 1e-4), lambda: learn.fit_one_cycle(3, 1e-2),
                        keep_best=True, monitor="valid_loss")
    assert result.helped and result.kept == "unfrozen"
    assert "improved valid_loss" in result.message


def test_without_keep_best_a_worse_second_stage_is_reported_and_kept(capsys):
    learn = _learner(silent=False)
    result = two_stages(learn, lambda: learn.fit_one_cycle(1, 1e-2), lambda: learn.fit(1, 50.0),
                        monitor="valid_loss")
    assert not result.helped and result.kept == "unfrozen"
    out = capsys.readouterr().out
    assert "The unfrozen stage worsened valid_loss" in out and "keep_best=True would have kept" in out


def test_unknown_monitor_names_what_is_recorded():
    learn = _learner()
    with pytest.raises(FastbaseError, match="records .*valid_loss.*accuracy"):
        two_stages(learn, lambda: learn.fit(1, 1e-3), lambda: learn.fit(1, 1e-3), monitor="f1")


def test_no_frozen_stage_compares_nothing():
    learn = _learner()
    result = learn.fine_tune(1, freeze_epochs=0, keep_best=True)
    assert math.isnan(result.frozen) and not result.helped and result.kept == "unfrozen"


def test_comparison_directions():
    assert StageComparison("valid_loss", "min", 0.5, 0.4, "unfrozen").helped
    assert not StageComparison("accuracy", "max", 0.9, 0.85, "unfrozen").helped
    assert not StageComparison("accuracy", "max", 0.9, 0.9, "unfrozen").helped
    assert "did not change" in StageComparison("accuracy", "max", 0.9, 0.9, "unfrozen").message


@pytest.mark.parametrize("keep_best", [False, True])
def test_train_command_says_whether_the_unfrozen_stage_helped(digits, tmp_path, monkeypatch, keep_best):
    """`fastbase train` on a 'pretrained' body (tiny_vision's tiny_arch ignores `pretrained` but is frozen
    like one): the summary compares the stages, and the final accuracy is that of the weights kept."""
    import json

    from fastbase.cli import main

    monkeypatch.setenv("FASTBASE_HOME", str(tmp_path / "home"))
    argv = ["train", str(digits), "--arch", "tiny_vision:tiny_arch", "--pretrained", "--size", "16", "--bs", "16",
            "--workers", "0", "--seed", "0", "--lr-find-iters", "8", "--limit", "48", "--no-flip", "--epochs", "1",
            "--unfreeze-epochs", "1", "--lr", "0.5", "--out", str(tmp_path / "run"), "--json",
            *(["--keep-best"] if keep_best else [])]
    out = io.StringIO()
    with redirect_stdout(out):
        assert main(argv) == 0
    summary = json.loads(out.getvalue())
    second = summary["second_stage"]
    assert second["monitor"] == "accuracy" and second["kept"] in ("frozen", "unfrozen")
    assert second["helped"] == (second["unfrozen"] > second["frozen"])
    if keep_best and not second["helped"]:
        assert second["kept"] == "frozen"
    kept = second["frozen"] if second["kept"] == "frozen" else second["unfrozen"]
    assert summary["accuracy"] == pytest.approx(kept, abs=1e-6)
    assert second["message"].startswith("The unfrozen stage")
