"""fastai v1's schedules and callbacks: GeneralScheduler with TrainingPhase, fit_fc, oversampling,
PeakMemMetric, StopAfterNBatches, ShowGraph, MLFlowTracker, TensorBoard histograms, images and graph;
and fastbase.utils.mem on a machine without CUDA."""
import math

import matplotlib
import pytest
import torch
from tiny_models import make_learner
from torch import nn
from torch.utils.data import TensorDataset

from fastbase.callback import Callback, annealing_cos, annealing_poly
from fastbase.callbacks import (
    GeneralScheduler,
    MLFlowTracker,
    OverSamplingCallback,
    PeakMemMetric,
    ShowGraph,
    StopAfterNBatches,
    TensorBoardLogger,
    TerminateOnNaN,
    TerminateOnNaNCallback,
    TrainingPhase,
)
from fastbase.core import FastbaseError
from fastbase.data import DataBunch
from fastbase.learner import Learner
from fastbase.train import fit_fc
from fastbase.utils import mem

matplotlib.use("Agg")


def test_general_scheduler_runs_its_phases_then_stops():
    learn = make_learner()  # 128 items, bs 32: 4 batches per epoch
    phases = [TrainingPhase(3).schedule_hp("lr", (1e-3, 1e-2)).schedule_hp("mom", 0.9),
              TrainingPhase(3).schedule_hp("lr", 1e-2, anneal=annealing_cos)]
    learn.fit(5, 1e-3, callbacks=[GeneralScheduler(learn, phases)])
    rec = learn.recorder
    expected = [1e-3 + (1e-2 - 1e-3) * n / 3 for n in range(3)] + [annealing_cos(1e-2, 0, n / 3) for n in range(3)]
    assert rec.lrs == pytest.approx(expected)
    assert rec.moms[:3] == pytest.approx([0.9] * 3)
    assert len(rec.values) == 2  # the second epoch stopped after its 2 batches, and no third began
    assert annealing_poly(2)(1.0, 0.0, 0.5) == pytest.approx(0.25)
    with pytest.raises(FastbaseError, match="hyper-parameters a phase can move"):
        TrainingPhase(2).schedule_hp("learning_rate", 1e-3)


def test_fit_fc_is_flat_then_cosine():
    learn = make_learner()
    fit_fc(learn, 2, 1e-2, start_pct=0.5)  # 8 batches: 4 flat, 4 annealed to 0
    lrs, moms = learn.recorder.lrs, learn.recorder.moms
    assert lrs[:4] == pytest.approx([1e-2] * 4) and moms[:4] == pytest.approx([0.95] * 4)
    assert lrs[4:] == pytest.approx([annealing_cos(1e-2, 0, n / 4) for n in range(4)])
    assert moms[4:] == pytest.approx([0.85] * 4)


class SeenTargets(Callback):
    def before_fit(self):
        self.targets = []

    def before_batch(self):
        if self.learn.training:
            self.targets.append(self.learn.yb[0])


def test_oversampling_balances_the_classes_and_puts_the_loader_back():
    gen = torch.Generator().manual_seed(0)
    y = torch.tensor([0] * 90 + [1] * 10)
    train = TensorDataset(torch.randn(100, 8, generator=gen), y)
    valid = TensorDataset(torch.randn(20, 8, generator=gen), y[::5])
    for ds in (train, valid):
        ds.classes = ["common", "rare"]
    data = DataBunch.create(train, valid, bs=20, num_workers=0, device="cpu", seed=0)
    original = data.train_dl
    learn = make_learner(data)
    seen = SeenTargets()
    learn.fit(1, 1e-3, callbacks=[OverSamplingCallback(learn), seen])
    drawn = torch.cat(seen.targets)
    assert len(drawn) == 180  # the largest class's count times the number of classes
    assert 0.35 < float(drawn.float().mean()) < 0.65  # the rare class drawn about half the time (10% of the items)
    assert data.train_dl is original


def test_peak_mem_metric_adds_its_columns():
    learn = make_learner(callbacks=[PeakMemMetric()])
    learn.fit(1, 1e-3)
    names = learn.recorder.value_names
    assert names[2:4] == ["cpu used", "cpu peak"]
    used, peak = learn.recorder.values[-1][2:4]
    assert math.isfinite(used) and peak >= used and peak >= 0


def test_stop_after_n_batches_and_show_graph():
    learn = make_learner()
    learn.fit(3, 1e-3, callbacks=[StopAfterNBatches(n_batches=2)])
    assert len(learn.recorder.losses) == 2 and not learn.recorder.values
    graph = ShowGraph()
    learn.fit(2, 1e-3, callbacks=[graph])
    labels = [line.get_label() for line in graph.fig.axes[0].get_lines()]
    assert "train" in labels and "valid" in labels
    assert TerminateOnNaNCallback is TerminateOnNaN


class FakeMlflow:
    """Records what an MlflowClient would be asked."""

    def __init__(self):
        self.calls = []

    def get_experiment_by_name(self, name):
        return None

    def create_experiment(self, name):
        self.calls.append(("experiment", name))
        return "7"

    def create_run(self, experiment_id):
        run = type("Run", (), {"info": type("Info", (), {"run_id": "r1"})()})()
        self.calls.append(("run", experiment_id))
        return run

    def __getattr__(self, name):  # log_param, log_metric, log_artifact, set_terminated
        return lambda *args, **kwargs: self.calls.append((name, *args))


def test_mlflow_tracker_logs_params_metrics_and_the_notebook(tmp_path):
    notebook = tmp_path / "nb.ipynb"
    notebook.write_text("{}")
    client = FakeMlflow()
    learn = make_learner()
    learn.fit(2, 1e-3, callbacks=[MLFlowTracker(learn, "exp", {"bs": 32}, notebook, client=client)])
    kinds = [c[0] for c in client.calls]
    assert client.calls[:3] == [("experiment", "exp"), ("run", "7"), ("log_param", "r1", "bs", 32)]
    assert kinds.count("log_metric") == 4 and kinds[-2:] == ["log_artifact", "set_terminated"]


def test_mlflow_tracker_without_mlflow_says_how_to_install_it():
    try:
        import mlflow  # noqa: F401
        pytest.skip("mlflow is installed")
    except ImportError:
        pass
    with pytest.raises(FastbaseError, match=r"pip install 'fastbase\[mlflow\]'"):
        make_learner().fit(1, 1e-3, callbacks=[MLFlowTracker(exp_name="exp")])


def test_tensorboard_writes_histograms_images_and_the_graph(tmp_path):
    pytest.importorskip("tensorboard", reason="TensorBoardLogger needs the optional tensorboard package")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    gen = torch.Generator().manual_seed(0)
    ds = TensorDataset(torch.rand(16, 3, 8, 8, generator=gen), torch.randint(0, 2, (16,), generator=gen))
    ds.classes = ["a", "b"]
    data = DataBunch.create(ds, ds, bs=8, num_workers=0, device="cpu")
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
    learn = Learner(data, model, path=tmp_path, silent=True)
    logger = TensorBoardLogger(name="run", hist_iters=1)
    learn.fit(1, 1e-3, callbacks=[logger])
    logger.close()
    acc = EventAccumulator(str(tmp_path / "runs" / "run"), size_guidance={"histograms": 0, "images": 0}).Reload()
    tags = acc.Tags()
    assert "weights/0.weight" in tags["histograms"] and "grads/4.bias" in tags["histograms"]
    assert len(acc.Histograms("weights/0.weight")) == 2  # every batch with hist_iters=1
    assert tags["images"] == ["images/train"] and tags["graph"]


def test_memory_helpers_answer_on_a_cpu():
    assert mem.cpu_rss_mb() > 10
    if not torch.cuda.is_available():
        assert mem.gpu_mem_get() == mem.GPUMemory(0, 0, 0) and mem.gpu_mem_get_all() == []
        assert mem.gpu_mem_get_free_no_cache() == 0 and mem.gpu_mem_get_used_no_cache() == 0
        assert mem.gpu_with_max_free_mem() == (None, 0)
        assert mem.GPUMemTrace(silent=True).data() == (0, 0)
    else:
        total, free, used = mem.gpu_mem_get()
        assert total > 0 and free + used == total
    assert mem.b2mb(3 * 2**20 + 5) == 3
