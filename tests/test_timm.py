"""timm backbones: names resolve, bodies and stage layer groups, pretrained weights from a file the test
writes (fastbase's folder and the Hugging Face hub cache, offline), BatchNorm defaults, export and
reload, compare_archs, Grad-CAM and show_activations, the features_only encoder. Three families:
a resnet (BatchNorm), a ConvNeXt (LayerNorm) and a ViT (tokens: no Grad-CAM)."""
import sys
import warnings
from functools import partial

import pytest
import torch
from torch import nn
from torch.utils.data import Dataset

from fastbase.core import FastbaseError
from fastbase.data import DataBunch
from fastbase.interpret import InterpretationError
from fastbase.learner import load_learner
from fastbase.vision import models
from fastbase.vision.activations import stage_outputs
from fastbase.vision.compare import compare_archs
from fastbase.vision.interpret import cam_layer, grad_cam
from fastbase.vision.learner import cnn_learner
from fastbase.vision.models import PretrainedWeightsError
from fastbase.vision.timm_models import (
    TimmArch,
    TimmBody,
    resolve_arch,
    timm_arch,
    timm_features_encoder,
    timm_weights_file,
)

timm = pytest.importorskip("timm", reason="timm backbones are optional: pip install 'fastbase[timm]'")

RESNET, CONVNEXT = "timm:test_resnet", "timm:test_convnext"
VIT = partial(timm_arch, "test_vit", img_size=32)  # a ViT takes one input size: the data's
FAMILIES = {"resnet": lambda: resolve_arch(RESNET), "convnext": lambda: resolve_arch(CONVNEXT), "vit": VIT}


class RandomImages(Dataset):
    classes = ("a", "b", "c")

    def __init__(self, n, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.x, self.y = torch.rand(n, 3, 32, 32, generator=g), torch.randint(0, 3, (n,), generator=g)

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return self.x[i], self.y[i]


def tiny_data():
    return DataBunch.create(RandomImages(16), RandomImages(8, seed=1), bs=8, num_workers=0, device="cpu")


def save_weights(name, file, **kwargs):
    """A full timm classifier's state dict (as timm publishes them) with trained-looking BatchNorm stats."""
    torch.manual_seed(0)
    state = timm.create_model(name, pretrained=False, **kwargs).state_dict()
    for key, value in state.items():
        if key.endswith("running_mean"):
            value.normal_(0, 0.1)
        elif key.endswith("running_var"):
            value.uniform_(0.5, 2.0)
    file.parent.mkdir(parents=True, exist_ok=True)
    if file.suffix == ".safetensors":
        from safetensors.torch import save_file
        save_file({k: v.contiguous() for k, v in state.items()}, str(file))
    else:
        torch.save(state, file)
    return state


@pytest.fixture
def offline_cache(tmp_path, monkeypatch):
    """An empty torch hub folder and Hugging Face cache, FASTBASE_OFFLINE, and any hub download failing the test."""
    import huggingface_hub

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("FASTBASE_OFFLINE", "1")

    def no_network(*args, **kwargs):
        raise AssertionError("the network was used although fastbase is offline")

    monkeypatch.setattr(timm.models._hub, "hf_hub_download", no_network)
    monkeypatch.setattr(timm.models._builder, "load_state_dict_from_url", no_network)
    return tmp_path


# --- names -----------------------------------------------------------------------------------------------
def test_names_resolve_to_torchvision_first_and_timm_otherwise():
    assert resolve_arch("resnet18") is models.resnet18  # fastbase's (torchvision's) name stays torchvision's
    assert isinstance(resolve_arch("timm:resnet18"), TimmArch) and resolve_arch("timm:resnet18").name == "resnet18"
    assert resolve_arch("convnext_atto").arch_name == "timm:convnext_atto"
    arch = resolve_arch(partial(timm.create_model, "test_resnet", drop_rate=0.1, pretrained=True))
    assert (arch.name, arch.create_kwargs) == ("test_resnet", {"drop_rate": 0.1})
    with pytest.raises(FastbaseError, match="convnext_atto"):
        resolve_arch("timm:convnext_atoo")  # a typo gets similar names
    with pytest.raises(FastbaseError, match="not in fastbase.vision.models.*nor a timm model"):
        resolve_arch("no_such_net")


def test_without_timm_installed_the_error_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)  # import timm now fails
    with pytest.raises(FastbaseError, match=r"pip install \"fastbase\[timm\]\""):
        resolve_arch("timm:resnet18")
    assert resolve_arch("resnet18") is models.resnet18


# --- bodies and layer groups ------------------------------------------------------------------------------
@pytest.mark.parametrize("family", FAMILIES)
def test_timm_learner_predicts_one_logit_per_class_with_three_layer_groups(family):
    learn = cnn_learner(tiny_data(), FAMILIES[family](), pretrained=False, silent=True)
    body = learn.model[0]
    assert isinstance(body, TimmBody)
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert body.eval()(x).shape[:2] == (2, body.num_features)
        assert learn.model.eval()(x).shape == (2, 3)
    assert len(learn.layer_groups) == 3 and learn.layer_groups[-1] is learn.model[1]
    ids = [id(p) for g in learn.layer_groups for p in g.parameters()]
    assert len(ids) == len(set(ids)) and set(ids) == {id(p) for p in learn.model.parameters()}


def test_resnet_stages_split_like_fastai_after_layer2():
    learn = cnn_learner(tiny_data(), RESNET, pretrained=False, silent=True)
    net = learn.model[0].model
    first, second = ({id(m) for m in g.modules()} for g in learn.layer_groups[:2])
    assert id(net.layer2) in first and id(net.conv1) in first and id(net.layer3) in second and id(net.layer4) in second
    learn.freeze_to(1)  # a random body: BatchNorm stays trainable (train_bn), convolutions freeze
    convs = [m for m in net.layer2.modules() if isinstance(m, nn.Conv2d)]
    assert convs and not any(c.weight.requires_grad for c in convs)
    assert all(p.requires_grad for p in net.layer3.parameters())
    learn.create_opt(slice(1e-4, 1e-2))
    assert [round(g["lr"], 6) for g in learn.opt.opt.param_groups[::2]] == [1e-4, 1e-3, 1e-2]


def test_vit_splits_its_blocks_in_the_middle_and_keeps_tokens_in_the_first_group():
    learn = cnn_learner(tiny_data(), VIT(), pretrained=False, silent=True)
    net = learn.model[0].model
    first, second = learn.layer_groups[:2]
    assert any(p is net.cls_token for p in first.parameters())
    assert any(p is net.pos_embed for p in first.parameters())
    assert id(net.blocks[2]) in {id(m) for m in first.modules()} and id(net.blocks[3]) in {id(m) for m in second.modules()}


def test_timm_create_model_style_callable_works():
    learn = cnn_learner(tiny_data(), partial(timm.create_model, "test_convnext"), pretrained=False, silent=True)
    assert isinstance(learn.model[0], TimmBody) and learn.model_spec["kwargs"]["arch"]["timm"] == "test_convnext"


def test_channels_last_by_family_on_the_cpu():
    from fastbase.callbacks.channels_last import ChannelsLast

    def has_cl(learn):
        return any(isinstance(cb, ChannelsLast) for cb in learn.callbacks)

    assert has_cl(cnn_learner(tiny_data(), "timm:resnet10t", pretrained=False, silent=True))
    assert not has_cl(cnn_learner(tiny_data(), CONVNEXT, pretrained=False, silent=True))


# --- pretrained weights -----------------------------------------------------------------------------------
def test_pretrained_weights_from_fastbase_folder_offline_keep_batchnorm_as_trained(offline_cache):
    target = timm_weights_file("test_resnet")
    assert target == offline_cache / "torch" / "hub" / "checkpoints" / "timm" / "test_resnet.r160_in1k.safetensors"
    state = save_weights("test_resnet", target)
    data = tiny_data()
    learn = cnn_learner(data, RESNET, silent=True)
    net = learn.model[0].model
    assert torch.equal(net.conv1[0].weight, state["conv1.0.weight"])
    cfg = timm.models.get_pretrained_cfg("test_resnet")
    assert torch.allclose(data.norm.mean, torch.tensor(cfg.mean)) and torch.allclose(data.norm.std, torch.tensor(cfg.std))
    assert (learn.train_bn, learn.freeze_bn_stats, learn.n_frozen) == (False, "body", 2)
    before = net.bn1.running_mean.clone() if hasattr(net, "bn1") else net.conv1[1].running_mean.clone()
    learn.fit(1, 1e-3)
    after = net.bn1.running_mean if hasattr(net, "bn1") else net.conv1[1].running_mean
    assert torch.equal(before, after)  # frozen pretrained BatchNorm keeps its statistics
    assert not any(p.requires_grad for p in net.layer1.parameters())


@pytest.mark.parametrize("name,kwargs", [("test_convnext", {}), ("test_vit", {"img_size": 32})])
def test_pretrained_weights_from_the_hugging_face_cache_offline(offline_cache, name, kwargs):
    hub_id = timm.models.get_pretrained_cfg(name).hf_hub_id
    repo = offline_cache / "hf" / f"models--{hub_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0" * 40)
    state = save_weights(name, repo / "snapshots" / ("0" * 40) / "model.safetensors")
    learn = cnn_learner(tiny_data(), timm_arch(name, **kwargs), silent=True)
    key = "stem.0.weight" if name == "test_convnext" else "patch_embed.proj.weight"
    assert torch.equal(learn.model[0].model.get_submodule(key.rsplit(".", 1)[0]).weight, state[key])


def test_missing_weights_offline_name_the_file_the_folder_and_the_alternative(offline_cache):
    with pytest.raises(PretrainedWeightsError) as err:
        cnn_learner(tiny_data(), CONVNEXT, silent=True)
    msg = str(err.value)
    assert str(timm_weights_file("test_convnext")) in msg and "FASTBASE_OFFLINE" in msg
    assert "huggingface.co/timm/test_convnext.r160_in1k" in msg and "pretrained=False" in msg


def test_a_weights_file_can_be_given_directly(tmp_path):
    state = save_weights("test_convnext", tmp_path / "mine.pth")
    learn = cnn_learner(tiny_data(), CONVNEXT, pretrained=str(tmp_path / "mine.pth"), silent=True)
    assert torch.equal(learn.model[0].model.stem[0].weight, state["stem.0.weight"])


def test_data_normalised_with_other_stats_get_a_warning(offline_cache):
    save_weights("test_vit", timm_weights_file("test_vit"), img_size=32)
    data = tiny_data().normalize(([0.1, 0.1, 0.1], [0.3, 0.3, 0.3]))
    with pytest.warns(UserWarning, match="pretrained timm:test_vit body expects"):
        cnn_learner(data, VIT(), silent=True)


def test_feature_cache_trains_the_head_of_a_frozen_timm_convnext(offline_cache):
    from fastbase.vision.feature_cache import FeatureCache

    save_weights("test_convnext", timm_weights_file("test_convnext"))
    learn = cnn_learner(tiny_data(), CONVNEXT, silent=True)  # pretrained: frozen, BatchNorm defaults
    body_before = {k: v.clone() for k, v in learn.model[0].state_dict().items()}
    learn.fit(1, 1e-2, callbacks=[FeatureCache()])  # raises FeatureCacheError where it does not apply
    assert all(torch.equal(v, learn.model[0].state_dict()[k]) for k, v in body_before.items())


# --- export ---------------------------------------------------------------------------------------------
def test_export_records_the_timm_name_and_version_and_reloads(tmp_path):
    learn = cnn_learner(tiny_data(), CONVNEXT, pretrained=False, silent=True, path=tmp_path)
    arch = learn.model_spec["kwargs"]["arch"]
    assert arch == {"timm": "test_convnext", "kwargs": {}, "timm_version": timm.__version__}
    file = learn.export(tmp_path / "export.pkl")
    loaded = load_learner(file)
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(loaded.model.eval()(x), learn.model.eval()(x), atol=1e-5)


def test_loading_a_timm_export_without_timm_says_what_to_install(tmp_path, monkeypatch):
    learn = cnn_learner(tiny_data(), RESNET, pretrained=False, silent=True, path=tmp_path)
    file = learn.export(tmp_path / "export.pkl")
    monkeypatch.setitem(sys.modules, "timm", None)
    with pytest.raises(FastbaseError, match=r"test_resnet.*timm " + timm.__version__.replace(".", r"\.") +
                       r".*pip install \"fastbase\[timm\]\""):
        load_learner(file)


def test_torchscript_export_reproduces_a_timm_resnet(tmp_path):
    learn = cnn_learner(tiny_data(), RESNET, pretrained=False, silent=True, path=tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TorchScript's deprecation notes
        assert learn.export_torchscript(tmp_path / "model.pt").is_file()  # checked against PyTorch inside


@pytest.mark.slow
def test_onnx_export_reproduces_a_timm_convnext_in_onnxruntime(tmp_path):
    pytest.importorskip("onnxruntime", reason="ONNX export is checked with onnxruntime: pip install 'fastbase[onnx]'")
    learn = cnn_learner(tiny_data(), CONVNEXT, pretrained=False, silent=True, path=tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's notes
        assert learn.export_onnx(tmp_path / "model.onnx").is_file()  # checked against PyTorch inside


# --- compare, interpretation ------------------------------------------------------------------------------
@pytest.mark.slow
def test_compare_archs_takes_torchvision_and_timm_names():
    table = compare_archs(tiny_data(), ["squeezenet1_1", "timm:test_convnext"], modes=["scratch"], lr=1e-3,
                          latency_runs=1, progress=False, silent=True)
    rows = table.to_dict("records") if hasattr(table, "to_dict") else table
    assert [r["arch"] for r in rows] == ["squeezenet1_1", "timm:test_convnext"]
    assert all(not r["error"] and 0 <= r["accuracy"] <= 1 for r in rows), rows


@pytest.mark.slow
def test_cli_compare_takes_timm_names(tmp_path):
    import csv

    from tiny_vision import noise_folder

    from fastbase.cli import main

    folder, out = noise_folder(tmp_path / "images"), tmp_path / "out"
    code = main(["compare", str(folder), "--archs", "squeezenet1_1,timm:test_resnet,test_convnext", "--modes", "scratch",
                 "--epochs", "1", "--size", "32", "--bs", "8", "--lr", "0.001", "--workers", "0", "--out", str(out)])
    assert code == 0
    with open(out / "compare.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["arch"] for r in rows] == ["squeezenet1_1", "timm:test_resnet", "test_convnext"]
    assert all(r["error"] == "" and float(r["latency_bs1_ms"]) > 0 for r in rows), rows


@pytest.mark.parametrize("arch", [RESNET, CONVNEXT])
def test_grad_cam_uses_the_last_stage_of_a_timm_convnet(arch):
    learn = cnn_learner(tiny_data(), arch, pretrained=False, silent=True)
    assert cam_layer(learn.model) is learn.model[0]
    cams = grad_cam(learn.model, torch.rand(2, 3, 32, 32), torch.tensor([0, 2]))
    assert cams.shape == (2, 32, 32) and (cams >= 0).all()


def test_grad_cam_on_a_vit_says_it_does_not_apply():
    learn = cnn_learner(tiny_data(), VIT(), pretrained=False, silent=True)
    with pytest.raises(InterpretationError, match="transformer.*Grad-CAM does not apply.*heatmap=False"):
        grad_cam(learn.model, torch.rand(1, 3, 32, 32), torch.tensor([0]))


def test_activations_follow_the_timm_stages():
    learn = cnn_learner(tiny_data(), RESNET, pretrained=False, silent=True)
    names = [name.split()[0] for name, _ in stage_outputs(learn.model, torch.rand(1, 3, 64, 64))]
    assert names[-4:] == ["0.model.layer1", "0.model.layer2", "0.model.layer3", "0.model.layer4"]


# --- the U-Net encoder ------------------------------------------------------------------------------------
def test_features_encoder_gives_one_map_per_stride_with_its_channels(offline_cache):
    save_weights("test_resnet", timm_weights_file("test_resnet"))
    encoder, channels = timm_features_encoder("timm:test_resnet", pretrained=True)
    feats = encoder.features(torch.rand(1, 3, 64, 64))
    assert [f.shape[1] for f in feats] == channels and len(channels) == 5
    assert [f.shape[-1] for f in feats] == [32, 16, 8, 4, 2]
    assert isinstance(encoder, nn.Module)
