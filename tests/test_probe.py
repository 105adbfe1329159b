"""Probe runs (`Learner.probe`): lr_find, overfit and sanity_check train for a moment and undo it.
They keep only the callbacks that change how a step is computed, so nothing a user attached logs,
tracks or saves during them, and every piece of state they touch is put back."""
import pathlib
import random
from functools import partial

import numpy as np
import pytest
import torch
from tiny_models import make_learner

import fastbase
from fastbase.callback import Callback
from fastbase.callbacks import (
    Checkpoint,
    CSVLogger,
    EarlyStopping,
    MixUp,
    SaveModelCallback,
)


def _files(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def _states(callbacks):
    return [cb.state_dict() for cb in callbacks]


class Seen(Callback):
    """Counts the training batches it sees."""
    def __init__(self):
        self.batches = 0

    def after_batch(self):
        self.batches += self.learn.training


@pytest.mark.parametrize("probe", ["lr_find", "overfit", "sanity_check"])
def test_a_probe_writes_no_file_and_leaves_every_callback_as_it_was(tmp_path, probe):
    watched = [CSVLogger("history"), Checkpoint(), EarlyStopping(patience=1), SaveModelCallback(every="epoch"),
               Seen()]
    learn = make_learner(path=tmp_path, callbacks=watched, metrics=[])
    learn.fit(1, 1e-2)  # a real fit first: the callbacks hold state, and files exist
    files, states = _files(tmp_path), _states(watched)
    csv_before = (tmp_path / "history.csv").read_bytes()
    seen = watched[-1].batches
    recorder = learn.recorder.state_dict()
    {"lr_find": lambda: learn.lr_find(num_it=8, stop_div=False),
     "overfit": lambda: learn.overfit(n_items=4, steps=3),
     "sanity_check": lambda: learn.sanity_check(n_steps=3, n_items=4, show=False)}[probe]()
    assert _files(tmp_path) == files
    assert (tmp_path / "history.csv").read_bytes() == csv_before
    assert _states(watched) == states and watched[-1].batches == seen
    if probe != "lr_find":  # lr_find keeps its sweep in the recorder, for recorder.plot()
        assert learn.recorder.state_dict() == recorder


def test_callback_fns_of_other_kinds_are_not_even_built_in_a_probe(tmp_path):
    built = []

    class Logger(Callback):
        def __init__(self):
            built.append(self)

    learn = make_learner(path=tmp_path, callback_fns=[Logger, partial(CSVLogger, "log")])
    learn.lr_find(num_it=5, stop_div=False)
    assert built == [] and not (tmp_path / "log.csv").exists()
    learn.fit(1, 1e-3)
    assert len(built) == 1 and (tmp_path / "log.csv").exists()


def test_a_callback_that_changes_the_step_runs_in_the_probe():
    mixup = MixUp(alpha=0.4)
    calls = []
    original = mixup.before_batch
    mixup.before_batch = lambda: calls.append(1) or original()
    learn = make_learner(callbacks=[mixup])
    learn.lr_find(num_it=5, stop_div=False)
    assert len(calls) == 5


def test_the_probe_puts_everything_back_even_after_an_error():
    learn = make_learner()
    learn.fit(1, 1e-2)
    weights = {k: v.clone() for k, v in learn.model.state_dict().items()}
    opt_state = learn.opt.state_dict()
    lr_before, data = learn.opt.lr, learn.data
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    expected = (random.random(), np.random.rand(), torch.rand(1))
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    with pytest.raises(RuntimeError, match="boom"), learn.probe():
        learn.data = None
        learn.model[0].weight.data.add_(1.0)
        learn.opt.lr = 123.0
        torch.rand(5), np.random.rand(3), random.random()
        raise RuntimeError("boom")
    assert learn.data is data and learn.opt.lr == lr_before
    assert all(torch.equal(v, weights[k]) for k, v in learn.model.state_dict().items())
    assert learn.opt.state_dict()["state"].keys() == opt_state["state"].keys()
    assert random.random() == expected[0] and np.random.rand() == expected[1]
    assert torch.equal(torch.rand(1), expected[2])


def test_overfit_without_restore_keeps_the_overfitted_weights_but_not_the_data():
    learn = make_learner()
    before = learn.model[0].weight.detach().clone()
    data = learn.data
    learn.overfit(n_items=4, steps=3, restore=False)
    assert learn.data is data and not torch.equal(learn.model[0].weight, before)


def test_nothing_in_the_package_asks_whether_lr_find_is_running():
    package = pathlib.Path(fastbase.__file__).parent
    assert [p.name for p in package.rglob("*.py") if "in_lr_find" in p.read_text()] == []
