"""compare_archs: one row per (architecture, mode) with sane measurements, modes that really freeze or
start from random weights, failures kept in their row, the Pareto plot, and `fastbase compare`."""
import csv
import json
import math
import pathlib
import sys

import pytest
import torch
from image_fixtures import make_color_folder
from torch import nn
from torch.utils.data import Dataset

from fastbase.cli import main
from fastbase.data import DataBunch
from fastbase.vision.compare import (
    COLUMNS,
    compare_archs,
    learner_for,
    markdown_table,
    measure_latency,
    pareto_front,
    plot_compare,
)
from fastbase.vision.models import PretrainedWeightsError


def tiny_cnn(pretrained=False):
    """Two conv blocks and a classifier. `pretrained=True` loads `$TORCH_HOME/hub/checkpoints/tiny_cnn.pth`,
    as torchvision loads from its hub cache, and fails as it does when the file is missing."""
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                          nn.Flatten(), nn.Linear(16, 10))
    if pretrained:
        file = weights_path()
        if not file.is_file():
            raise PretrainedWeightsError(f"No pretrained weights at {file}.")
        model.load_state_dict(torch.load(file, weights_only=True))
    return model


def big_input_cnn(pretrained=False):
    """A body whose 24x24 kernel cannot run on 16x16 images (it builds: the body is probed at 64 px)."""
    return nn.Sequential(nn.Conv2d(3, 4, 24), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 10))


def weights_path():
    return pathlib.Path(torch.hub.get_dir()) / "checkpoints" / "tiny_cnn.pth"


class Quadrants(Dataset):
    """16x16 images, class 1 when the top-left quadrant is brighter than the rest: learnable by a CNN."""
    classes = ("dark", "bright")

    def __init__(self, n, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.y = torch.randint(0, 2, (n,), generator=g)
        self.x = torch.rand(n, 3, 16, 16, generator=g) * 0.5
        self.x[self.y == 1, :, :8, :8] += 0.5

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return self.x[i], self.y[i]


def tiny_data():
    return DataBunch.create(Quadrants(16), Quadrants(8, seed=1), bs=8, num_workers=0, device="cpu", seed=0)


@pytest.fixture
def tiny_weights(tmp_path, monkeypatch):
    """Pretrained weights for tiny_cnn in a temporary torch hub cache."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    torch.manual_seed(123)
    state = tiny_cnn().state_dict()
    weights_path().parent.mkdir(parents=True)
    torch.save(state, weights_path())
    return state


def rows_of(table):
    return table.to_dict("records") if hasattr(table, "to_dict") else table


def test_table_has_one_row_per_pair_with_sane_values(tiny_weights):
    table = compare_archs(tiny_data(), [tiny_cnn], epochs=1, lr=1e-2, latency_runs=2, progress=False, silent=True)
    rows = rows_of(table)
    assert list(table.columns) == list(COLUMNS)
    assert [(r["arch"], r["mode"]) for r in rows] == [("tiny_cnn", "head"), ("tiny_cnn", "full"),
                                                      ("tiny_cnn", "scratch")]
    for r in rows:
        assert not isinstance(r["error"], str), r["error"]
        assert 0 <= r["accuracy"] <= 1 and r["error_rate"] == pytest.approx(1 - r["accuracy"])
        assert r["latency_bs1_ms"] > 0 and r["latency_bs4_ms"] > 0
        assert r["train_s_per_epoch"] > 0 and r["model_mb"] > 0 and r["peak_mem_mb"] >= 0
        assert r["lr"] == pytest.approx(1e-2) and math.isfinite(r["valid_loss"])
    head, full, scratch = rows
    assert head["params_trainable"] < head["params_total"]
    assert full["params_trainable"] == full["params_total"] == scratch["params_total"]
    assert head["pretrained"] and full["pretrained"] and not scratch["pretrained"]


def test_head_freezes_the_pretrained_body_and_scratch_has_random_weights(tiny_weights):
    first_conv = tiny_weights["0.weight"]
    head = learner_for(tiny_data(), tiny_cnn, "head", silent=True)
    full = learner_for(tiny_data(), tiny_cnn, "full", silent=True)
    scratch = learner_for(tiny_data(), tiny_cnn, "scratch", silent=True)
    assert torch.equal(head.model[0][0].weight, first_conv) and torch.equal(full.model[0][0].weight, first_conv)
    assert not torch.equal(scratch.model[0][0].weight, first_conv)
    assert not head.model[0][0].weight.requires_grad and all(p.requires_grad for p in head.model[1].parameters())
    assert all(p.requires_grad for learn in (full, scratch) for p in learn.model.parameters())


def test_a_failing_pair_is_reported_in_its_row_and_the_others_run(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty"))  # no pretrained weights there
    table = compare_archs(tiny_data(), [big_input_cnn, tiny_cnn], modes=("head", "scratch"), epochs=1, lr=1e-2,
                          latency_runs=1, progress=False, silent=True, scratch_only=[big_input_cnn])
    rows = rows_of(table)
    assert [(r["arch"], r["mode"]) for r in rows] == [("big_input_cnn", "scratch"), ("tiny_cnn", "head"),
                                                      ("tiny_cnn", "scratch")]
    assert rows[0]["error"].startswith("RuntimeError") and math.isnan(rows[0]["accuracy"])
    assert rows[1]["error"].startswith("PretrainedWeightsError")
    assert not isinstance(rows[2]["error"], str) and rows[2]["accuracy"] >= 0


def test_lr_comes_from_lr_find_when_not_given_and_data_stay_unchanged(capsys):
    data = tiny_data()
    table = compare_archs(data, [tiny_cnn], modes=("scratch",), epochs=1,
                          lr_find_iters=12, latency_runs=1, silent=True)
    row = rows_of(table)[0]
    assert row["lr"] > 0 and row["lr_find_s"] > 0
    assert data.norm is None  # the pairs trained on a normalised copy
    assert "compare [1/1] tiny_cnn / scratch" in capsys.readouterr().out


def test_without_pandas_the_table_is_a_list_of_dicts(monkeypatch):
    monkeypatch.setitem(sys.modules, "pandas", None)  # `import pandas` now raises ImportError
    table = compare_archs(tiny_data(), [tiny_cnn], modes=("scratch",), epochs=1, lr=1e-2, latency_runs=1,
                          progress=False, silent=True)
    assert isinstance(table, list) and set(table[0]) == set(COLUMNS)
    assert "| tiny_cnn | scratch |" in markdown_table(table)


def test_unknown_arch_name_and_mode_are_clear_errors():
    with pytest.raises(Exception, match="Unknown architecture 'resnet_99'"):
        compare_archs(tiny_data(), ["resnet_99"], progress=False)
    with pytest.raises(Exception, match="modes must be some of"):
        compare_archs(tiny_data(), [tiny_cnn], modes=("half",), progress=False)


def test_latency_is_timed_in_eval_mode_and_restores_training_mode():
    model = tiny_cnn().train()
    seen = []
    model[0].register_forward_hook(lambda m, i, o: seen.append((m.training, torch.is_inference_mode_enabled())))
    result = measure_latency(model, (3, 16, 16), (1, 4), runs=3, warmup=1)
    assert set(result) == {1, 4} and all(v > 0 for v in result.values())
    assert set(seen) == {(False, True)} and len(seen) == 8 and model.training


def test_pareto_front_keeps_points_nothing_beats():
    costs, scores = [1.0, 2.0, 3.0, 2.5, 1.0], [0.5, 0.8, 0.9, 0.7, 0.4]
    assert pareto_front(costs, scores) == [0, 1, 2]


def test_plot_compare_draws_both_trade_offs_and_marks_pareto_best():
    import matplotlib.pyplot as plt

    rows = [dict.fromkeys(COLUMNS) | {"arch": a, "mode": "head", "accuracy": acc, "train_s_per_epoch": t,
                                      "latency_bs1_ms": lat} for a, acc, t, lat in
            [("a", 0.9, 10.0, 5.0), ("b", 0.8, 5.0, 9.0), ("c", 0.7, 12.0, 8.0)]]
    rows.append(dict.fromkeys(COLUMNS) | {"arch": "d", "mode": "head", "error": "RuntimeError: too small"})
    fig = plot_compare(rows)
    time_ax, latency_ax = fig.axes[:2]
    assert "training seconds" in time_ax.get_xlabel() and "latency" in latency_ax.get_xlabel()
    stars = lambda ax: sum(len(c.get_offsets()) for c in ax.collections if c.get_sizes()[0] > 100)
    assert stars(time_ax) == 2 and stars(latency_ax) == 1  # a and b; a only
    assert {t.get_text() for t in time_ax.texts} == {"a/head", "b/head", "c/head"}
    plt.close(fig)


def test_cli_compare_writes_csv_markdown_and_png(tmp_path, capsys):
    folder = make_color_folder(tmp_path / "colors", per_class=(4, 2), hw=(16, 16))
    out = tmp_path / "out"
    code = main(["compare", str(folder), "--archs", "test_compare:tiny_cnn", "--modes", "scratch", "--epochs", "1",
                 "--size", "16", "--bs", "4", "--lr", "0.01", "--workers", "0", "--out", str(out)])
    assert code == 0
    with open(out / "compare.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 1 and rows[0]["arch"] == "test_compare:tiny_cnn" and rows[0]["mode"] == "scratch"
    assert float(rows[0]["latency_bs1_ms"]) > 0 and rows[0]["error"] == ""
    assert (out / "compare.md").read_text().startswith("| arch | mode |")
    assert (out / "compare.png").stat().st_size > 1000
    assert "wrote" in capsys.readouterr().out


def test_cli_compare_prints_one_json_document_with_json(tmp_path, capsys):
    folder = make_color_folder(tmp_path / "colors", per_class=(4, 2), hw=(16, 16))
    code = main(["compare", str(folder), "--archs", "test_compare:tiny_cnn", "--modes", "scratch", "--epochs", "1",
                 "--size", "16", "--bs", "4", "--lr", "0.01", "--workers", "0", "--out", str(tmp_path / "out"),
                 "--json"])
    payload = json.loads(capsys.readouterr().out)
    assert code == 0 and [r["mode"] for r in payload["rows"]] == ["scratch"]
    assert sorted(pathlib.Path(f).name for f in payload["files"]) == ["compare.csv", "compare.md", "compare.png"]
