"""The one encoder interface (`fastbase.vision.encoder`): every body `create_body` and
`timm_features_encoder` return is an `Encoder` with stages, feature maps, strides and layer groups;
a torchvision body is still an `nn.Sequential`; `DynamicUnet` reads every kind the same way; and the
state-dict keys of saved models are those they had before the interface (so old files load)."""
from collections import OrderedDict

import pytest
import torch
from torch import nn

from fastbase.core import FastbaseError
from fastbase.layers import conv_layer
from fastbase.vision import models
from fastbase.vision.activations import body_of
from fastbase.vision.encoder import Encoder, PyramidEncoder, SequentialEncoder, as_encoder
from fastbase.vision.interpret import cam_layer
from fastbase.vision.learner import body_layer_groups, build_cnn_model, create_body, create_head
from fastbase.vision.segmentation.unet import DynamicUnet


def tiny_arch(pretrained=False):
    """A three-stage classifier (32x32 -> 16 -> 8 -> 4), cut at its pooling layer by create_body."""
    return nn.Sequential(conv_layer(3, 8, stride=2), conv_layer(8, 16, stride=2), conv_layer(16, 16, stride=2),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10))


class TwoScales(nn.Module):
    """A module returning its maps as a list, with a parameter of its own besides its children."""

    def __init__(self):
        super().__init__()
        self.a, self.b = conv_layer(3, 8, stride=2), conv_layer(8, 16, stride=2)
        self.scale = nn.Parameter(torch.ones(1))

    def forward(self, x):
        first = self.a(x) * self.scale
        return [first, self.b(first)]


def test_a_torchvision_body_is_an_encoder_and_still_an_nn_sequential():
    body = create_body(models.resnet18, pretrained=False)
    assert isinstance(body, SequentialEncoder) and isinstance(body, nn.Sequential) and len(body) == 8
    assert isinstance(body[4], nn.Sequential) and isinstance(body[:6], SequentialEncoder)  # indexed and sliced
    assert body.strides(32) == [2, 2, 2, 4, 4, 8, 16, 32] and body.pyramid(64) == [2, 4, 5, 6, 7]
    assert body.out_channels() == 512 and body.channels(32)[-1] == 512
    model = nn.Sequential(body, create_head(1024, 3))  # fastai v1's course builds it so
    assert model(torch.rand(2, 3, 32, 32)).shape == (2, 3)
    assert [len(g) for g in body.layer_groups((6,))] == [6, 2] and body_of(model) == list(body.children())
    with pytest.raises(FastbaseError, match="must increase"):
        body.layer_groups((6, 3))


def test_features_keep_frees_the_maps_nobody_reads_and_the_last_map_is_the_forward_output():
    body = create_body(tiny_arch, pretrained=False).eval()
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        every, kept = body.features(x), body.features(x, keep=[0])
        assert torch.equal(every[-1], body(x)) and [t is not None for t in kept] == [True, False, True]


def test_as_encoder_keeps_the_modules_and_their_state_dict_keys():
    seq = nn.Sequential(OrderedDict(stem=conv_layer(3, 4, stride=2), deep=conv_layer(4, 8, stride=2)))
    enc = as_encoder(seq)
    assert isinstance(enc, SequentialEncoder) and list(enc.state_dict()) == list(seq.state_dict())
    assert enc.stem is seq.stem and as_encoder(enc) is enc
    module = TwoScales()
    pyramid = as_encoder(module)
    assert isinstance(pyramid, PyramidEncoder) and list(pyramid.state_dict()) == list(module.state_dict())
    assert {id(p) for p in pyramid.parameters()} == {id(p) for p in module.parameters()}  # the same tensors
    pyramid.eval()
    assert not module.training and not module.a.training  # the wrapped module follows the mode
    shapes = pyramid.feature_shapes(16)
    assert [tuple(s) for s in shapes] == [(1, 8, 8, 8), (1, 16, 4, 4)] and pyramid.strides(16) == [2, 4]
    assert pyramid.layer_groups() == [pyramid]  # no feature_info: one group
    with pytest.raises(FastbaseError, match="an nn.Module"):
        as_encoder("resnet18")


def test_a_unet_reads_every_encoder_kind_one_way_and_keeps_the_old_keys():
    module = TwoScales()
    unet = DynamicUnet(module, n_classes=2, img_size=16).eval()
    assert isinstance(unet.encoder, PyramidEncoder) and unet.skip_idxs == [0]
    assert {"encoder.a.0.weight", "encoder.scale"} <= set(unet.state_dict())  # the bare module's keys
    unet2 = DynamicUnet(TwoScales(), n_classes=2, img_size=16).eval()
    unet2.load_state_dict(unet.state_dict())
    x = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(unet(x), unet2(x))
    seq_unet = DynamicUnet(create_body(tiny_arch, pretrained=False), n_classes=2, img_size=32)
    assert isinstance(seq_unet.encoder, SequentialEncoder) and "encoder.0.0.weight" in seq_unet.state_dict()
    with pytest.raises(FastbaseError, match="several resolutions"):
        DynamicUnet(nn.Conv2d(3, 4, 3, stride=2), n_classes=2, img_size=16)


def test_cnn_models_keep_their_keys_and_split_through_the_encoder():
    model = build_cnn_model(models.resnet18, 3)
    keys = list(model.state_dict())
    assert keys[0] == "0.0.weight" and "0.4.0.conv1.weight" in keys and keys[-1].startswith("1.")
    groups = body_layer_groups(model[0], (6,))
    assert len(groups) == 2 and cam_layer(model) is model[0]
    assert isinstance(model[0], Encoder)


def test_timm_bodies_and_features_encoders_are_encoders_with_the_keys_they_had():
    pytest.importorskip("timm", reason="timm backbones are optional")
    from fastbase.vision.timm_models import TimmBody, timm_features_encoder

    cnn = build_cnn_model("timm:test_resnet", 3)
    assert isinstance(cnn[0], TimmBody) and next(iter(cnn.state_dict())) == "0.model.conv1.0.weight"
    maps = cnn[0].eval().features(torch.rand(1, 3, 32, 32))
    assert cnn[0].strides(32) == [2, 4, 8, 16, 32][:len(maps)] and maps[-1].shape[1] == cnn[0].out_channels()
    encoder, channels = timm_features_encoder("timm:test_resnet")
    assert isinstance(encoder, PyramidEncoder) and encoder.channels(32) == channels
    assert encoder(torch.rand(2, 3, 32, 32)).shape[1] == channels[-1]  # forward: the deepest map
    unet = DynamicUnet(encoder, n_classes=2, img_size=32)
    assert next(iter(unet.state_dict())) == "encoder.conv1.0.weight"  # timm's features model's own keys
    assert len(encoder.layer_groups()) == 2 and encoder.default_split() == (len(channels) - 2,)
