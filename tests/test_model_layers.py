"""Model building blocks (`fastbase.layers`): shapes and behaviour of each block, and lesson 7's
resnet-mnist model built from them and trained by a Learner."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize
from torch.utils.data import TensorDataset

from fastbase.core import FastbaseError
from fastbase.data import DataBunch
from fastbase.layers import (
    AdaptiveConcatPool2d,
    Flatten,
    Lambda,
    MergeLayer,
    NormType,
    PixelShuffle_ICNR,
    SelfAttention,
    SequentialEx,
    batchnorm_2d,
    bn_drop_lin,
    children,
    conv_layer,
    flatten_model,
    icnr,
    in_channels,
    init_default,
    relu,
    requires_grad,
    res_block,
    simple_cnn,
)
from fastbase.learner import Learner


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def test_star_import_gives_the_layers():
    namespace = {}
    exec("from fastbase.layers import *", namespace)  # noqa: S102 -- the statement under test, on a fixed string
    for name in ("Flatten", "Lambda", "conv_layer", "res_block", "SequentialEx", "MergeLayer", "PixelShuffle_ICNR",
                 "SelfAttention", "simple_cnn", "NormType", "batchnorm_2d", "relu", "children", "requires_grad",
                 "init_default", "bn_drop_lin", "icnr"):
        assert name in namespace, name


def test_flatten_keeps_the_batch_and_full_flattens_all():
    x = torch.randn(2, 3, 4, 5).to(memory_format=torch.channels_last)
    assert Flatten()(x).shape == (2, 60) and torch.equal(Flatten()(x)[1], x[1].flatten())
    assert Flatten(full=True)(x).shape == (120,)


def test_lambda_applies_its_function():
    assert torch.equal(Lambda(lambda x: x * 2)(torch.ones(3)), torch.full((3,), 2.0))


def test_conv_layer_is_conv_relu_batchnorm_and_stride_2_halves_the_size():
    layer = conv_layer(3, 8, stride=2)
    assert [type(m) for m in layer] == [nn.Conv2d, nn.ReLU, nn.BatchNorm2d]
    assert layer[0].bias is None  # BatchNorm follows, so a bias would be cancelled
    assert layer(torch.randn(2, 3, 9, 10)).shape == (2, 8, 5, 5)
    assert conv_layer(3, 8)(torch.randn(2, 3, 9, 10)).shape == (2, 8, 9, 10)


def test_conv_layer_options():
    plain = conv_layer(3, 4, norm_type=None, use_activ=False)
    assert [type(m) for m in plain] == [nn.Conv2d] and plain[0].bias is not None
    assert torch.count_nonzero(plain[0].bias) == 0  # init_default zeroes the bias
    assert plain[0].weight.std() > 0  # and initialises the weight
    assert isinstance(conv_layer(3, 4, leaky=0.1)[1], nn.LeakyReLU)
    one_d = conv_layer(3, 4, is_1d=True)
    assert [type(m) for m in one_d] == [nn.Conv1d, nn.ReLU, nn.BatchNorm1d]
    assert one_d(torch.randn(2, 3, 7)).shape == (2, 4, 7)
    up = conv_layer(4, 2, ks=2, stride=2, transpose=True)
    assert isinstance(up[0], nn.ConvTranspose2d) and up(torch.randn(1, 4, 5, 5)).shape == (1, 2, 10, 10)
    assert isinstance(conv_layer(8, 8, self_attention=True)[-1], SelfAttention)
    assert isinstance(conv_layer(3, 4, norm_type=NormType.Instance)[-1], nn.InstanceNorm2d)


def test_conv_layer_rejects_a_norm_type_that_is_not_one():
    with pytest.raises(FastbaseError, match="NormType.X"):
        conv_layer(3, 4, norm_type="batch")


def test_weight_norm_reparametrises_the_weight_as_scale_times_direction():
    conv = conv_layer(3, 4, norm_type=NormType.Weight)[0]
    assert parametrize.is_parametrized(conv, "weight")
    scale, direction = conv.parametrizations.weight.original0, conv.parametrizations.weight.original1
    assert scale.shape == (4, 1, 1, 1) and direction.shape == conv.weight.shape
    with torch.no_grad():
        scale.mul_(3)
    norms = conv.weight.flatten(1).norm(dim=1)
    assert torch.allclose(norms, scale.flatten(), atol=1e-5)  # each filter's norm is its scale
    assert conv.bias is not None  # no BatchNorm, so the conv keeps its bias


def test_spectral_norm_bounds_the_largest_singular_value():
    conv = conv_layer(6, 4, norm_type=NormType.Spectral)[0]
    assert parametrize.is_parametrized(conv, "weight")
    for _ in range(30):  # power iterations run on each training-mode forward
        conv(torch.randn(1, 6, 5, 5))
    assert float(torch.linalg.matrix_norm(conv.weight.detach().flatten(1), ord=2)) == pytest.approx(1.0, abs=0.05)


def test_batchnorm_2d_zero_starts_with_scale_0():
    assert torch.all(batchnorm_2d(4).weight == 1) and torch.all(batchnorm_2d(4, NormType.BatchZero).weight == 0)


def test_res_block_starts_as_identity_and_adds_its_input():
    block = res_block(4)
    x = torch.randn(2, 4, 6, 6)
    assert torch.allclose(block(x), x)  # the second BatchNorm starts at scale 0
    with torch.no_grad():
        block[1][2].weight.fill_(1.0)
    block.eval()
    assert torch.allclose(block(x), x + block[1](block[0](x)))


def test_res_block_bottle_and_dense():
    bottle = res_block(8, bottle=True)
    assert bottle[0][0].out_channels == 4 and bottle(torch.randn(2, 8, 5, 5)).shape == (2, 8, 5, 5)
    dense = res_block(4, dense=True)
    x = torch.randn(2, 4, 5, 5)
    out = dense(x)
    assert out.shape == (2, 8, 5, 5) and torch.equal(out[:, 4:], x)


def test_merge_layer_in_sequential_ex_adds_or_concatenates_the_block_input():
    double = Lambda(lambda x: 2 * x)
    x = torch.randn(2, 3, 4)
    assert torch.equal(SequentialEx(double, MergeLayer())(x), 3 * x)
    assert torch.equal(SequentialEx(double, MergeLayer(dense=True))(x), torch.cat([2 * x, x], dim=1))
    block = SequentialEx(double)
    block.append(MergeLayer())
    assert len(block) == 2 and isinstance(block[1], MergeLayer)


def test_pixel_shuffle_icnr_doubles_height_and_width_and_starts_as_nearest_neighbour():
    up = PixelShuffle_ICNR(4, 3)
    x = torch.randn(2, 4, 5, 6)
    out = up(x)
    assert out.shape == (2, 3, 10, 12)
    # every 2x2 block holds one value: a nearest-neighbour upsampling of the 5x6 map
    assert torch.allclose(out, F.interpolate(out[..., ::2, ::2], scale_factor=2, mode="nearest"))
    assert parametrize.is_parametrized(up.conv[0], "weight")  # NormType.Weight by default
    assert PixelShuffle_ICNR(4, blur=True)(x).shape == (2, 4, 10, 12)
    assert PixelShuffle_ICNR(2, scale=3)(torch.randn(1, 2, 3, 3)).shape == (1, 2, 9, 9)


def test_icnr_repeats_each_kernel_over_the_channels_a_pixel_shuffle_groups():
    weight = icnr(torch.empty(8, 3, 1, 1), scale=2)
    assert torch.equal(weight[0], weight[3]) and not torch.equal(weight[3], weight[4])
    with pytest.raises(FastbaseError, match="multiple of scale"):
        icnr(torch.empty(6, 3, 1, 1), scale=2)


def test_self_attention_starts_as_identity_and_then_mixes_positions():
    attention = SelfAttention(16)
    x = torch.randn(2, 16, 4, 5)
    assert attention.gamma.item() == 0 and torch.equal(attention(x), x)
    with torch.no_grad():
        attention.gamma.fill_(1.0)
    out = attention(x)
    assert out.shape == x.shape and not torch.allclose(out, x)
    changed = x.clone()
    changed[0, :, 0, 0] += 5  # one position changes: with attention, others see it too
    assert not torch.allclose(attention(changed)[0, :, 3, 4], out[0, :, 3, 4])


def test_simple_cnn_shapes_and_batchnorm_on_all_but_the_last():
    model = simple_cnn((3, 8, 16, 10), bn=True)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    kinds = [type(block[-1]) for block in model[:3]]
    assert kinds == [nn.BatchNorm2d, nn.BatchNorm2d, nn.ReLU]
    assert [block[0].stride for block in model[:3]] == [(2, 2)] * 3
    with pytest.raises(FastbaseError, match="one of each per convolution"):
        simple_cnn((3, 8, 10), strides=[2])


def test_requires_grad_freezes_unfreezes_and_reports():
    model = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1))
    assert requires_grad(model) is True
    requires_grad(model[0], False)
    assert requires_grad(model[0]) is False and requires_grad(model[2]) is True
    assert not any(p.requires_grad for p in model[0].parameters())
    requires_grad(model, True)
    assert all(p.requires_grad for p in model.parameters())
    assert requires_grad(nn.ReLU()) is None


def test_children_flatten_model_and_in_channels():
    model = nn.Sequential(conv_layer(5, 4, norm_type=NormType.Weight), nn.Sequential(nn.ReLU(), Flatten()))
    assert children(model) == [model[0], model[1]]
    leaves = flatten_model(model)
    assert [type(m).__name__ for m in leaves] == ["ParametrizedConv2d", "ReLU", "ReLU", "Flatten"]
    assert in_channels(model) == 5 and in_channels(nn.Linear(7, 2)) == 7
    with pytest.raises(FastbaseError, match="no layer with a weight"):
        in_channels(nn.ReLU())


def test_init_default_initialises_the_weight_and_zeroes_the_bias():
    layer = init_default(nn.Linear(4, 3), nn.init.ones_)
    assert torch.all(layer.weight == 1) and torch.all(layer.bias == 0)


def test_small_helpers():
    assert isinstance(relu(), nn.ReLU) and relu(leaky=0.2).negative_slope == 0.2
    kinds = [type(m) for m in bn_drop_lin(4, 2, p=0.3, actn=nn.ReLU())]
    assert kinds == [nn.BatchNorm1d, nn.Dropout, nn.Linear, nn.ReLU]
    assert [type(m) for m in bn_drop_lin(4, 2, bn=False)] == [nn.Linear]
    assert AdaptiveConcatPool2d()(torch.randn(2, 3, 5, 5)).shape == (2, 6, 1, 1)


def test_vision_learner_keeps_its_names_from_the_shared_layers():
    from fastbase.vision import learner as vision_learner

    assert vision_learner.AdaptiveConcatPool2d is AdaptiveConcatPool2d


# --- lesson 7, resnet-mnist ------------------------------------------------------------------------
def conv2(ni, nf):
    return conv_layer(ni, nf, stride=2)


def conv_and_res(ni, nf):
    return nn.Sequential(conv2(ni, nf), res_block(nf))


def test_lesson7_resnet_mnist_model_trains_with_a_learner():
    model = nn.Sequential(conv_and_res(1, 8), conv_and_res(8, 16), conv_and_res(16, 32), conv_and_res(32, 16),
                          conv2(16, 10), Flatten())
    # 28x28 -> 14 -> 7 -> 4 -> 2 -> 1: ten outputs per image, as in the lesson
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 1, 28, 28, generator=g)
    y = torch.randint(0, 10, (64,), generator=g)
    x[torch.arange(64), 0, y, y] += 6  # a bright pixel on the diagonal says the class: learnable
    train, valid = TensorDataset(x[:48], y[:48]), TensorDataset(x[48:], y[48:])
    data = DataBunch.create(train, valid, bs=16, num_workers=0, device="cpu", seed=0)
    learn = Learner(data, model, loss_func=nn.CrossEntropyLoss(), silent=True)
    learn.fit_one_cycle(3, 0.05)
    losses = [float(v) for v in learn.recorder.losses]
    assert len(losses) == 9 and all(torch.isfinite(torch.tensor(losses)))
    assert sum(losses[-3:]) < sum(losses[:3])


def test_lr_find_restores_normalised_and_attention_layers():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(48, 3, 8, 8, generator=g), torch.randint(0, 2, (48,), generator=g)
    data = DataBunch.create(TensorDataset(x[:32], y[:32]), TensorDataset(x[32:], y[32:]), bs=16, num_workers=0,
                            device="cpu", seed=0)
    model = nn.Sequential(conv_layer(3, 8, norm_type=NormType.Weight, self_attention=True), PixelShuffle_ICNR(8, 4),
                          conv_layer(4, 8, stride=2, norm_type=NormType.Spectral), nn.AdaptiveAvgPool2d(1), Flatten(),
                          nn.Linear(8, 2))
    learn = Learner(data, model, loss_func=nn.CrossEntropyLoss(), silent=True)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert any(k.endswith("original0") for k in before) and any(k.endswith("_u") for k in before)
    learn.lr_find(num_it=6)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    learn.fit(1, 1e-2)
    assert not torch.equal(before["0.0.parametrizations.weight.original1"],
                           model.state_dict()["0.0.parametrizations.weight.original1"])
