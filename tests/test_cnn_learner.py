"""cnn_learner: frozen pretrained body, trainable head, layer groups and slice learning rates,
normalisation from the architecture, export and reload, and the demo end to end."""
import json
import warnings

import pytest
import torch
import torchvision
from torch import nn
from torch.utils.data import Dataset

from fastbase.cli import main, run_demo
from fastbase.data import DataBunch, cifar_stats, imagenet_stats
from fastbase.learner import load_learner
from fastbase.vision import models
from fastbase.vision.learner import cnn_learner, create_cnn
from fastbase.vision.models import arch_meta, weights_file


class TinyImages(Dataset):
    """Random 3x16x16 images, two classes."""
    classes = ("a", "b")

    def __init__(self, n, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.x, self.y = torch.rand(n, 3, 16, 16, generator=g), torch.randint(0, 2, (n,), generator=g)

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return self.x[i], self.y[i]


def tiny_data(**kwargs):
    return DataBunch.create(TinyImages(32), TinyImages(16, seed=1), bs=8, num_workers=0, device="cpu", **kwargs)


@pytest.fixture
def cached_resnet18(tmp_path, monkeypatch):
    """A resnet18 weights file in a temporary torch hub cache, as torchvision would have downloaded it."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    torch.manual_seed(0)
    state = torchvision.models.resnet18(weights=None).state_dict()
    for key, value in state.items():  # BatchNorm statistics as a trained network has them
        if key.endswith("running_mean"):
            value.normal_(0, 0.1)
        elif key.endswith("running_var"):
            value.uniform_(0.5, 2.0)
    weights = torchvision.models.get_model_weights("resnet18")[arch_meta(models.resnet18).weights]
    target = weights_file(weights)
    target.parent.mkdir(parents=True)
    torch.save(state, target)
    return state


def trainable(module):
    return {n for n, p in module.named_parameters() if p.requires_grad}


def test_pretrained_learner_freezes_whole_body_and_keeps_its_batchnorm_statistics(cached_resnet18):
    learn = cnn_learner(tiny_data(), models.resnet18, ps=0.0)
    body, head = learn.model[0], learn.model[1]
    assert torch.equal(body[0].weight, cached_resnet18["conv1.weight"])
    assert all(p.requires_grad for p in head.parameters())
    assert trainable(body) == set()  # BatchNorm included: train_bn=False for a pretrained body
    assert (learn.train_bn, learn.freeze_bn_stats) == (False, "body")
    assert "BatchNorm: train_bn=False, freeze_bn_stats='body' (running statistics fixed in the body" in learn.summary()
    body_bn, head_bn = body[1], head[2]  # bn1 of resnet18; the head's first BatchNorm1d
    body_stats, head_stats = body_bn.running_var.clone(), head_bn.running_var.clone()
    learn.fit(1, 1e-3)
    assert torch.equal(body_bn.running_var, body_stats)  # ImageNet's statistics stay
    assert not torch.equal(head_bn.running_var, head_stats)  # the new head learns its own
    learn.unfreeze()
    head_stats, conv = head_bn.running_var.clone(), body[0].weight.clone()
    learn.fit(1, 1e-3)
    assert torch.equal(body_bn.running_var, body_stats)  # still ImageNet's once unfrozen
    assert not torch.equal(head_bn.running_var, head_stats)  # the head's follow the body as it trains
    assert not torch.equal(body[0].weight, conv)  # fine-tuning trains the body's weights


def test_fastai_batchnorm_behaviour_on_request(cached_resnet18):
    learn = cnn_learner(tiny_data(), models.resnet18, train_bn=True, freeze_bn_stats=False)
    body = learn.model[0]
    bn_params = {n for m_name, m in body.named_modules() if isinstance(m, nn.BatchNorm2d)
                 for n in (f"{m_name}.weight", f"{m_name}.bias")}
    assert trainable(body) == bn_params
    stats = body[1].running_var.clone()
    learn.fit(1, 1e-3)
    assert not torch.equal(body[1].running_var, stats)


def test_scratch_learner_learns_its_batchnorm():
    learn = cnn_learner(tiny_data(), models.resnet18, pretrained=False)
    assert (learn.train_bn, learn.freeze_bn_stats) == (True, False)
    stats = learn.model[0][1].running_var.clone()
    learn.fit(1, 1e-3)
    assert not torch.equal(learn.model[0][1].running_var, stats)


def test_unfreeze_makes_everything_trainable(cached_resnet18):
    learn = cnn_learner(tiny_data(), models.resnet18)
    learn.unfreeze()
    assert all(p.requires_grad for p in learn.model.parameters())


def test_frozen_training_changes_only_head_and_bn(cached_resnet18):
    learn = cnn_learner(tiny_data(), models.resnet18, ps=0.0)
    conv_before = learn.model[0][0].weight.clone()
    head_before = learn.model[1][-1].weight.clone()
    learn.fit(1, 1e-2)
    assert torch.equal(learn.model[0][0].weight, conv_before)
    assert not torch.equal(learn.model[1][-1].weight, head_before)


def test_resnet_learner_has_three_layer_groups_and_slice_lrs_reach_them():
    learn = cnn_learner(tiny_data(), models.resnet18, pretrained=False)
    assert len(learn.layer_groups) == 3
    learn.fit(1, slice(1e-5, 1e-3))
    assert list(learn.opt.lrs) == pytest.approx([1e-5, 1e-4, 1e-3])
    body_lr = {id(p): g["lr"] for g in learn.opt.param_groups for p in g["params"]}
    assert body_lr[id(learn.model[0][0].weight)] == pytest.approx(1e-5)  # conv1: group 0
    assert body_lr[id(learn.model[0][7][0].conv1.weight)] == pytest.approx(1e-4)  # layer4: group 1
    assert body_lr[id(learn.model[1][-1].weight)] == pytest.approx(1e-3)  # head


def test_scratch_learner_is_not_frozen():
    learn = cnn_learner(tiny_data(), models.resnet18, pretrained=False)
    assert all(p.requires_grad for p in learn.model.parameters())


def test_unnormalised_data_get_architecture_stats(cached_resnet18):
    data = tiny_data()
    cnn_learner(data, models.resnet18)
    assert data.stats is not None
    assert data.stats[0] == pytest.approx(imagenet_stats[0]) and data.stats[1] == pytest.approx(imagenet_stats[1])


def test_other_stats_warn_for_pretrained_body(cached_resnet18):
    data = tiny_data().normalize(cifar_stats)
    with pytest.warns(UserWarning, match="expects"):
        cnn_learner(data, models.resnet18)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cnn_learner(tiny_data().normalize(imagenet_stats), models.resnet18)


def test_create_cnn_is_cnn_learner():
    assert create_cnn is cnn_learner


def test_export_and_load_learner_give_same_predictions(tmp_path):
    learn = cnn_learner(tiny_data(), models.resnet18, pretrained=False, path=tmp_path)
    learn.fit(1, 1e-3)
    learn.export()
    loaded = load_learner(tmp_path)
    x = TinyImages(1, seed=5).x[0]
    label, idx, probs = learn.predict(x)
    label2, idx2, probs2 = loaded.predict(x)
    assert label == label2 and int(idx) == int(idx2)
    assert torch.allclose(probs, probs2, atol=1e-6)


def test_demo_runs_end_to_end_on_reduced_setting(tmp_path):
    summary = run_demo(tmp_path / "out", size=16, bs=32, epochs=2, unfreeze_epochs=1, lr_find_iters=20, limit=640)
    assert {"export.pkl", "lr_find.png", "losses.png", "lr.png", "metrics.png", "report.html"} <= set(summary["files"])
    assert 0.0 <= summary["accuracy"] <= 1.0
    assert summary["accuracy"] > 0.2  # ten classes: chance is 0.1
    learn = load_learner(tmp_path / "out" / "export.pkl")
    assert learn.data.classes == [str(i) for i in range(10)]


def test_demo_command_prints_json(tmp_path, capsys):
    code = main(["demo", "--out", str(tmp_path / "o"), "--size", "16", "--epochs", "1", "--unfreeze-epochs", "1",
                 "--lr-find-iters", "10", "--limit", "128", "--json"])
    assert code == 0
    out = capsys.readouterr().out
    summary = json.loads(out[out.index("{\n"):])  # the JSON summary follows the per-epoch lines
    assert summary["out"] == str(tmp_path / "o") and "export.pkl" in summary["files"]


def test_command_without_subcommand_shows_help(capsys):
    assert main([]) == 2
    assert "demo" in capsys.readouterr().out
