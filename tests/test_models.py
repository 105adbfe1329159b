"""Bodies, heads and layer groups for transfer learning, and pretrained weights through the torch hub cache."""
import pytest
import torch
import torchvision
from torch import nn

from fastbase.vision import models
from fastbase.vision.learner import (
    AdaptiveConcatPool2d,
    build_cnn_model,
    cnn_layer_groups,
    create_body,
    create_head,
    num_features_model,
)
from fastbase.vision.models import PretrainedWeightsError, arch_meta, weights_file


@pytest.mark.parametrize("arch", [models.resnet18, models.mobilenet_v2, models.squeezenet1_1, models.densenet121,
                                  models.efficientnet_b0, models.mobilenet_v3_small, models.regnet_y_400mf])
@pytest.mark.parametrize("size,nc", [(32, 2), (64, 10)])
def test_model_outputs_one_logit_per_class(arch, size, nc):
    model = build_cnn_model(arch, nc).eval()
    with torch.no_grad():
        assert model(torch.rand(2, 3, size, size)).shape == (2, nc)


@pytest.mark.parametrize("arch,n_features", [(models.resnet18, 512), (models.resnet50, 2048),
                                             (models.mobilenet_v2, 1280), (models.densenet121, 1024)])
def test_body_feature_count(arch, n_features):
    assert num_features_model(create_body(arch, pretrained=False)) == n_features


@pytest.mark.parametrize("arch", [models.resnet34, models.mobilenet_v2, models.vgg16_bn, models.convnext_tiny,
                                  models.alexnet])
def test_layer_groups_cover_every_parameter_once(arch):
    model = build_cnn_model(arch, 5)
    groups = cnn_layer_groups(model, arch_meta(arch).split)
    ids = [id(p) for g in groups for p in g.parameters()]
    assert len(ids) == len(set(ids))
    assert set(ids) == {id(p) for p in model.parameters()}


def test_resnet_has_three_groups_split_after_layer2():
    model = build_cnn_model(models.resnet18, 3)
    groups = cnn_layer_groups(model, arch_meta(models.resnet18).split)
    assert len(groups) == 3
    assert isinstance(groups[0][-1], nn.Sequential) and groups[0][-1] is model[0][5]  # layer2
    assert groups[1][0] is model[0][6] and groups[2] is model[1]  # layer3 starts group 1; head is last


def test_head_layout_follows_fastai():
    head = create_head(1024, 7, lin_ftrs=[256], ps=0.4)
    kinds = [type(m) for m in head]
    assert kinds == [AdaptiveConcatPool2d, nn.Flatten, nn.BatchNorm1d, nn.Dropout, nn.Linear, nn.ReLU,
                     nn.BatchNorm1d, nn.Dropout, nn.Linear]
    assert head[3].p == pytest.approx(0.2) and head[7].p == pytest.approx(0.4)
    assert head[4].in_features == 1024 and head[-1].out_features == 7
    assert isinstance(create_head(512, 3, concat_pool=False, bn_final=True)[-1], nn.BatchNorm1d)


def test_concat_pool_doubles_channels():
    assert AdaptiveConcatPool2d()(torch.rand(2, 5, 7, 7)).shape == (2, 10, 1, 1)


def tiny_classifier(pretrained=False, num_classes=1000):
    """An architecture fastbase does not know: cut at its last pooling layer."""
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, num_classes))


def test_unknown_architecture_is_cut_at_last_pool():
    body = create_body(tiny_classifier, pretrained=False)
    assert [type(m) for m in body] == [nn.Conv2d, nn.ReLU]
    model = build_cnn_model(tiny_classifier, 4)
    assert model(torch.rand(2, 3, 16, 16)).shape == (2, 4)
    assert len(cnn_layer_groups(model, ())) == 2


def test_explicit_cut_index_and_function():
    assert len(create_body(models.resnet18, pretrained=False, cut=-3)) == 7
    body = create_body(models.resnet18, pretrained=False, cut=lambda m: nn.Sequential(m.conv1, m.bn1))
    assert len(body) == 2


def test_torchvision_function_gets_same_metadata():
    assert arch_meta(torchvision.models.resnet18) is arch_meta(models.resnet18)


def test_pretrained_loads_through_torch_hub_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    torch.manual_seed(0)
    reference = torchvision.models.squeezenet1_1(weights=None).state_dict()
    weights = torchvision.models.get_model_weights("squeezenet1_1")[arch_meta(models.squeezenet1_1).weights]
    target = weights_file(weights)
    assert target.parent == tmp_path / "hub" / "checkpoints"
    target.parent.mkdir(parents=True)
    torch.save(reference, target)
    body = create_body(models.squeezenet1_1, pretrained=True)
    assert torch.equal(body[0].weight, reference["features.0.weight"])
    assert torch.equal(body[12].expand3x3.weight, reference["features.12.expand3x3.weight"])


def test_missing_weights_offline_names_file_folder_and_alternative(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setenv("FASTBASE_OFFLINE", "1")
    with pytest.raises(PretrainedWeightsError) as err:
        create_body(models.resnet18, pretrained=True)
    msg = str(err.value)
    assert "resnet18-f37072fd.pth" in msg and str(tmp_path / "hub" / "checkpoints") in msg
    assert "pretrained=False" in msg


def test_failed_download_is_a_clear_error_not_random_weights(tmp_path, monkeypatch):
    import urllib.error

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))

    def no_network(*args, **kwargs):
        raise urllib.error.URLError("no route to host")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    with pytest.raises(PretrainedWeightsError, match="could not be downloaded.*no route to host"):
        create_body(models.mobilenet_v2, pretrained=True)
