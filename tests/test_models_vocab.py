"""fastai v1's XResNet family and wide ResNet: parameter counts equal fastai v1's, the XResNet tricks
are in place, and both work in cnn_learner (and XResNet in unet_learner) from random weights."""
import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from fastbase.core import FastbaseError
from fastbase.data import DataBunch
from fastbase.vision import models
from fastbase.vision.learner import cnn_learner
from fastbase.vision.segmentation import DynamicUnet, unet_learner

# Parameter counts of fastai v1's models at their defaults (xresnet: 3 input channels, 1000 classes;
# wrn_22: 10 classes), counted from the layer lists of fastai v1.0.x's fastai/vision/models/xresnet.py
# and wrn.py (convolutions without bias, BatchNorm weight and bias, the final Linear with bias).
FASTAI_V1_PARAMS = {"xresnet18": 11_708_744, "xresnet34": 21_816_904, "xresnet50": 25_576_264,
                    "xresnet101": 44_568_392, "xresnet152": 60_212_040, "wrn_22": 9_658_458}


@pytest.mark.parametrize("name", sorted(FASTAI_V1_PARAMS))
def test_parameter_counts_match_fastai_v1(name):
    with torch.device("meta"):  # counted without allocating or initialising the weights
        model = getattr(models, name)()
    assert sum(p.numel() for p in model.parameters()) == FASTAI_V1_PARAMS[name]


def test_xresnet_has_the_three_conv_stem_zero_bn_and_pooled_shortcut():
    with torch.device("meta"):
        model = models.xresnet50()
    stem = [m for m in list(model.children())[:3]]
    assert [s[0].kernel_size for s in stem] == [(3, 3)] * 3 and [s[0].out_channels for s in stem] == [32, 32, 64]
    block = model[5][0]  # first block of the second stage: halves the size
    assert isinstance(block.pool, nn.AvgPool2d) and block.idconv[0].stride == (1, 1)
    model = models.xresnet18(c_out=3)
    last_bns = [stage_block.convs[-1][1].weight for stage in list(model.children())[4:8] for stage_block in stage]
    assert all(float(w.detach().abs().sum()) == 0 for w in last_bns)  # each block starts as the identity
    with pytest.raises(FastbaseError, match="pretrained=False"):
        models.xresnet18(pretrained=True)


def image_data(n=8, size=16, c=3):
    gen = torch.Generator().manual_seed(0)
    ds = TensorDataset(torch.rand(n, 3, size, size, generator=gen), torch.randint(0, c, (n,), generator=gen))
    ds.classes = [f"c{i}" for i in range(c)]
    return DataBunch.create(ds, ds, bs=8, num_workers=0, device="cpu", seed=0)


def test_xresnet_and_wrn_train_in_cnn_learner():
    torch.manual_seed(0)
    data = image_data()
    learn = cnn_learner(data, models.xresnet18, pretrained=False, silent=True)
    assert len(learn.layer_groups) == 3
    learn.fit(1, 1e-3)
    assert learn.get_preds()[0].shape == (8, 3)
    wrn = cnn_learner(data, models.wrn_22, pretrained=False, silent=True)
    assert wrn.get_preds()[0].shape == (8, 3)


def test_xresnet_in_unet_learner():
    gen = torch.Generator().manual_seed(0)
    ds = TensorDataset(torch.rand(4, 3, 32, 32, generator=gen), torch.randint(0, 2, (4, 32, 32), generator=gen))
    ds.classes = ["background", "object"]
    data = DataBunch.create(ds, ds, bs=2, num_workers=0, device="cpu")
    learn = unet_learner(data, models.xresnet18, pretrained=False, silent=True)
    assert isinstance(learn.model, DynamicUnet)
    with torch.no_grad():
        assert learn.model.eval()(torch.rand(2, 3, 32, 32)).shape == (2, 2, 32, 32)
