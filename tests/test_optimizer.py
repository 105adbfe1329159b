"""The optimizer wrapper: per-layer-group hyper-parameters from floats, lists, arrays and slices;
weight decay decoupled, and kept off BatchNorm, biases and embeddings unless asked."""
import functools
import inspect

import numpy as np
import pytest
import torch
from tiny_models import three_groups, tiny_mlp
from torch import nn

from fastbase.core import FastbaseError
from fastbase.learner import Learner
from fastbase.optimizer import (
    Adam,
    OptimWrapper,
    even_mults,
    lr_range,
    split_no_wd_params,
)


def wrapper(opt_func=Adam, **kwargs):
    torch.manual_seed(0)
    model = tiny_mlp()
    return model, OptimWrapper(opt_func, three_groups(model), **kwargs)


def pair_lrs(opt):
    """lr of each torch param group: [decayed, not decayed] of layer group 0, then 1, ..."""
    return [g["lr"] for g in opt.param_groups]


def test_each_layer_group_is_split_into_decayed_and_not_decayed_groups():
    model = tiny_mlp()
    splits = split_no_wd_params(three_groups(model))
    assert [len(d) for d, _ in splits] == [1, 0, 1]  # the two Linear weights
    assert [len(nd) for _, nd in splits] == [3, 0, 1]  # bias + BN weight and bias; head bias
    assert splits[0][0][0] is model[0].weight and any(p is model[1].weight for p in splits[0][1])


class TinyViT(nn.Module):
    """A stand-in for a vision transformer: torchvision's parameter names, or timm's declared ones."""

    def __init__(self, timm_style: bool):
        super().__init__()
        self.timm_style = timm_style
        names = ("cls_token", "pos_embed") if timm_style else ("class_token", "pos_embedding")
        for name in names:
            self.register_parameter(name, nn.Parameter(torch.zeros(1, 1, 4)))
        self.blocks = nn.Sequential(nn.Linear(4, 4))
        self.blocks[0].register_parameter("rel_pos_table", nn.Parameter(torch.zeros(3, 4)))

    def no_weight_decay(self):
        return {"cls_token", "pos_embed"} if self.timm_style else set()

    def no_weight_decay_keywords(self):
        return {"rel_pos"} if self.timm_style else set()


@pytest.mark.parametrize("timm_style", [False, True], ids=["torchvision names", "timm's no_weight_decay"])
def test_token_and_position_embeddings_are_not_decayed(timm_style):
    model = TinyViT(timm_style)
    [(decay, no_decay)] = split_no_wd_params([model])
    ids = lambda ps: {id(p) for p in ps}
    embeddings = [p for n, p in model.named_parameters() if n.split(".")[-1] in ("cls_token", "pos_embed",
                                                                                 "class_token", "pos_embedding")]
    assert ids(embeddings) <= ids(no_decay) and id(model.blocks[0].bias) in ids(no_decay)
    assert id(model.blocks[0].weight) in ids(decay)
    assert (id(model.blocks[0].rel_pos_table) in ids(no_decay)) == timm_style  # only a declared keyword frees it
    opt = OptimWrapper(torch.optim.SGD, [model], lr=0.1, wd=0.5)
    before = {n: p.detach().clone() + 1 for n, p in model.named_parameters()}
    with torch.no_grad():
        for n, p in model.named_parameters():
            p.copy_(before[n])
            p.grad = torch.zeros_like(p)
    opt.step()  # zero gradients: only the decay moves a parameter
    moved = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert moved == ({"blocks.0.weight"} if timm_style else {"blocks.0.weight", "blocks.0.rel_pos_table"})


@pytest.mark.parametrize("lr, expected", [
    (1e-3, [1e-3, 1e-3, 1e-3]),
    ([1e-5, 1e-4, 1e-3], [1e-5, 1e-4, 1e-3]),
    (np.array([1e-5, 1e-4, 1e-3]), [1e-5, 1e-4, 1e-3]),
    (slice(1e-6, 1e-4), [1e-6, 1e-5, 1e-4]),
    (slice(1e-3), [1e-4, 1e-4, 1e-3]),
])
def test_discriminative_lrs_land_in_the_right_param_groups(lr, expected):
    _, opt = wrapper(lr=lr)
    assert pair_lrs(opt) == pytest.approx([v for v in expected for _ in range(2)])
    assert opt.lrs == pytest.approx(expected) and opt.lr == pytest.approx(expected[-1])


def test_wrong_number_of_lrs_is_a_clear_error():
    _, opt = wrapper()
    with pytest.raises(FastbaseError, match="2 values of lr for 3 layer groups"):
        opt.lr = [1e-3, 1e-2]


def test_lr_range_follows_fastai_v1():
    assert lr_range(0.1, 3) == 0.1
    assert lr_range(slice(1e-3), 1).tolist() == [1e-3]
    assert even_mults(1e-6, 1e-2, 5) == pytest.approx([1e-6, 1e-5, 1e-4, 1e-3, 1e-2])


def test_momentum_sets_adam_betas_and_sgd_momentum():
    _, adam = wrapper()
    adam.mom = [0.8, 0.85, 0.9]
    assert [g["betas"] for g in adam.param_groups[::2]] == [(0.8, 0.99), (0.85, 0.99), (0.9, 0.99)]
    _, sgd = wrapper(functools.partial(torch.optim.SGD, momentum=0.9))
    sgd.mom = 0.7
    assert {g["momentum"] for g in sgd.param_groups} == {0.7} and sgd.mom == 0.7


def decay_one_step(bn_wd: bool, true_wd: bool = True):
    """One SGD step with zero gradients: only weight decay moves the parameters."""
    model, opt = wrapper(torch.optim.SGD, lr=0.5, wd=0.1, bn_wd=bn_wd, true_wd=true_wd)
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(2.0)
    before = {k: v.clone() for k, v in model.named_parameters()}
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    return {k: (v / before[k]).mean().item() for k, v in model.named_parameters()}


def test_weight_decay_skips_batchnorm_and_bias_by_default():
    ratio = decay_one_step(bn_wd=False)
    assert ratio["0.weight"] == pytest.approx(0.95) and ratio["3.weight"] == pytest.approx(0.95)
    for name in ("0.bias", "1.weight", "1.bias", "3.bias"):
        assert ratio[name] == 1.0, name


def test_bn_wd_decays_batchnorm_and_bias_too():
    ratio = decay_one_step(bn_wd=True)
    assert all(r == pytest.approx(0.95) for r in ratio.values())


def test_true_wd_keeps_the_optimizers_own_weight_decay_at_zero():
    _, opt = wrapper(wd=0.1)
    assert {g["weight_decay"] for g in opt.param_groups} == {0.0}
    assert opt.wds == [0.1, 0.1, 0.1] and [g["wd"] for g in opt.param_groups[1::2]] == [0.0, 0.0, 0.0]
    _, l2 = wrapper(wd=0.1, true_wd=False)
    assert [g["weight_decay"] for g in l2.param_groups] == [0.1, 0.0] * 3


def test_l2_weight_decay_goes_through_the_gradient():
    ratio = decay_one_step(bn_wd=False, true_wd=False)  # SGD: p -= lr * (grad + wd * p)
    assert ratio["0.weight"] == pytest.approx(0.95) and ratio["0.bias"] == 1.0


def test_frozen_parameters_are_not_decayed():
    model, opt = wrapper(torch.optim.SGD, lr=0.5, wd=0.1)
    model[0].weight.requires_grad_(False)
    before = model[0].weight.clone()
    model[3].weight.grad = torch.zeros_like(model[3].weight)
    opt.step()
    assert torch.equal(model[0].weight, before)


def adam_zero_grad_step(true_wd: bool):
    """One step of the default optimizer (`Adam`) with zero gradients, lr 0.1, wd 0.2, weights at 2:
    only weight decay can move them. Returns the new value of the first layer's weights."""
    model, opt = wrapper(lr=0.1, wd=0.2, true_wd=true_wd)
    with torch.no_grad():
        model[0].weight.fill_(2.0)
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    return model[0].weight.detach()


def test_the_default_adam_decays_decoupled_under_true_wd_as_adamw():
    # the wrapper multiplies by 1 - lr * wd and Adam's own step with zero gradients is 0: AdamW
    assert torch.allclose(adam_zero_grad_step(true_wd=True), torch.tensor(2.0 * (1 - 0.1 * 0.2)), rtol=0, atol=1e-7)


def test_the_default_adam_with_true_wd_false_puts_the_decay_in_the_gradient():
    # L2: the gradient is wd * p = 0.4, and Adam's first step moves by lr * sign(gradient), not by lr * wd * p
    assert torch.allclose(adam_zero_grad_step(true_wd=False), torch.tensor(2.0 - 0.1), atol=1e-5)


def test_the_learners_default_optimizer_is_adam_with_fastai_betas():
    opt_func = inspect.signature(Learner).parameters["opt_func"].default
    assert opt_func is Adam and opt_func.func is torch.optim.Adam and opt_func.keywords == {"betas": (0.9, 0.99)}
