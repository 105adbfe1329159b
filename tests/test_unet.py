"""U-Nets: DynamicUnet's layout from the encoder's sizes, any input size, other encoder families, and
unet_learner (learning digit masks, predictions per pixel, the pretrained body frozen, export)."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from PIL import Image as PILImage
from torch import nn
from torch.utils.data import Dataset

from fastbase.core import FastbaseError
from fastbase.data import DataBunch
from fastbase.datasets import URLs, untar_data
from fastbase.layers import NormType, SelfAttention, conv_layer
from fastbase.learner import load_learner
from fastbase.losses import CrossEntropyFlat
from fastbase.vision import models
from fastbase.vision.learner import create_body
from fastbase.vision.models import arch_meta, weights_file
from fastbase.vision.segmentation import (
    DynamicUnet,
    MeanIoU,
    UnetBlock,
    acc_segmentation,
    unet_learner,
)


class DigitMasks(Dataset):
    """Real scans as a two-class segmentation: the embedded 8x8 digits scaled to `size`, with noise;
    the mask is the digit's ink (pixels above half intensity) against the background."""
    classes = ("background", "digit")

    def __init__(self, folder, n: int, size: int = 16, seed: int = 0):
        files = sorted(folder.glob("*/*.png"))[:n]
        ink = torch.stack([torch.from_numpy(np.array(PILImage.open(f), dtype=np.float32) / 255)[None] for f in files])
        ink = F.interpolate(ink, size=(size, size), mode="bilinear", align_corners=False)
        noise = 0.2 * torch.randn(ink.shape, generator=torch.Generator().manual_seed(seed))
        self.x = (ink + noise).clamp(0, 1).expand(-1, 3, -1, -1).contiguous()
        self.y = (ink[:, 0] > 0.5).long()

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i], self.y[i]


def digit_data(n_train=96, n_valid=32, size=16, bs=16):
    path = untar_data(URLs.DIGITS)
    return DataBunch.create(DigitMasks(path / "train", n_train, size), DigitMasks(path / "valid", n_valid, size, seed=1),
                            bs=bs, num_workers=0, device="cpu", seed=0)


def tiny_arch(pretrained=False):
    """A three-stage classifier (16x16 -> 8 -> 4 -> 2), cut at its pooling layer by create_body."""
    return nn.Sequential(conv_layer(3, 16, stride=2), conv_layer(16, 32, stride=2), conv_layer(32, 32, stride=2),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10))


def trainable(module):
    return {n for n, p in module.named_parameters() if p.requires_grad}


def assert_output_size_and_gradient_at_the_stem(unet, n_classes, size):
    """The U-Net maps (2, 3, *size) to (2, n_classes, *size), and the loss reaches its first convolution."""
    x, y = torch.randn(2, 3, *size), torch.randint(0, n_classes, (2, *size))
    out = unet(x)
    assert out.shape == (2, n_classes, *size)
    CrossEntropyFlat(axis=1)(out, y).backward()
    first_conv = next(m for m in unet.encoder.modules() if isinstance(m, nn.Conv2d))
    assert first_conv.weight.grad is not None and first_conv.weight.grad.abs().sum() > 0  # the skips reach the stem


# --- DynamicUnet ---------------------------------------------------------------------------------
def test_skip_connections_where_the_resnet_encoder_changes_resolution():
    unet = DynamicUnet(create_body(models.resnet18, pretrained=False), n_classes=3, img_size=(64, 64))
    # relu after the stem (1/2), layer1 (1/4), layer2 (1/8), layer3 (1/16); layer4 (1/32) feeds the middle
    assert unet.skip_idxs == [2, 4, 5, 6]
    assert len(unet.blocks) == 4 and all(isinstance(b, UnetBlock) for b in unet.blocks)
    assert unet.blocks[0].shuf.conv[0].in_channels == 512  # the deepest block upsamples layer4's channels
    assert unet.cross is not None and unet.cross[0][0].in_channels == unet.blocks[-1].n_out + 3  # input joined again


def test_forward_keeps_only_the_maps_the_skips_read():
    body = create_body(models.resnet18, pretrained=False).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        every = body.features(x)
        kept = body.features(x, keep=[2, 4])
    assert [i for i, t in enumerate(kept) if t is not None] == [2, 4, len(body) - 1]  # the deepest always
    assert all(torch.equal(kept[i], every[i]) for i in (2, 4, len(body) - 1))


@pytest.mark.parametrize("size", [(32, 32), (45, 37)])
def test_output_has_the_input_size_also_for_odd_sizes(size):
    unet = DynamicUnet(create_body(models.resnet18, pretrained=False), n_classes=5, img_size=size).eval()
    with torch.no_grad():
        assert unet(torch.randn(2, 3, *size)).shape == (2, 5, *size)
        assert unet(torch.randn(1, 3, 29, 51)).shape == (1, 5, 29, 51)  # another size at run time


@pytest.mark.parametrize("arch", [models.mobilenet_v2, models.regnet_y_400mf], ids=lambda a: a.__name__)
def test_other_encoder_families_build_and_train(arch):
    assert_output_size_and_gradient_at_the_stem(DynamicUnet(create_body(arch, pretrained=False), n_classes=2,
                                                             img_size=(33, 33)), 2, (33, 33))


def test_options_y_range_self_attention_blur_and_norm_type():
    body = create_body(models.resnet18, pretrained=False)
    unet = DynamicUnet(body, n_classes=3, img_size=(32, 32), y_range=(-3.0, 3.0), self_attention=True, blur=True,
                       blur_final=False, norm_type=NormType.Weight, last_cross=False).eval()
    with torch.no_grad():
        out = unet(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 3, 32, 32) and out.min() >= -3 and out.max() <= 3 and out.std() > 0
    attention = [i for i, b in enumerate(unet.blocks) if any(isinstance(m, SelfAttention) for m in b.modules())]
    assert attention == [len(unet.blocks) - 3]
    assert [b.shuf.blur is not None for b in unet.blocks] == [True, True, True, False]
    assert unet.cross is None
    assert hasattr(unet.blocks[0].conv1[0], "parametrizations")  # weight-normalised convolutions


def test_a_non_sequential_encoder_is_refused_with_advice():
    with pytest.raises(FastbaseError, match="nn.Sequential"):
        DynamicUnet(torchvision.models.resnet18(weights=None), n_classes=2, img_size=32)


# --- unet_learner ----------------------------------------------------------------------------------
def test_unet_learner_learns_digit_masks_and_predicts_per_pixel():
    torch.manual_seed(0)
    data = digit_data(n_train=256)
    learn = unet_learner(data, tiny_arch, pretrained=False, metrics=[acc_segmentation, MeanIoU()])
    assert isinstance(learn.loss_func, CrossEntropyFlat) and learn.n_frozen == 0
    chance = max(data.valid_ds.y.float().mean().item(), 1 - data.valid_ds.y.float().mean().item())
    learn.fit_one_cycle(2, 2e-2)
    accuracy, mean_iou = learn.recorder.values[-1][2:]
    assert accuracy > chance + 0.1, (accuracy, chance)  # about 0.90 against 0.69 for "all background"
    assert mean_iou > 0.6

    probs, targets = learn.get_preds()
    assert probs.shape == (32, 2, 16, 16) and targets.shape == (32, 16, 16)
    assert torch.allclose(probs.sum(1), torch.ones(32, 16, 16), atol=1e-5)
    assert abs((probs.argmax(1) == targets).float().mean().item() - accuracy) < 1e-5

    class_map, decoded, item_probs = learn.predict(data.valid_ds.x[0])
    assert class_map.shape == decoded.shape == (16, 16) and item_probs.shape == (2, 16, 16)
    assert torch.equal(class_map, item_probs.argmax(0))


@pytest.fixture
def cached_resnet18(tmp_path, monkeypatch):
    """A resnet18 weights file in a temporary torch hub cache, as torchvision would have downloaded it."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    torch.manual_seed(0)
    state = torchvision.models.resnet18(weights=None).state_dict()
    for key, value in state.items():  # BatchNorm statistics as a trained network has them
        if key.endswith("running_var"):
            value.uniform_(0.5, 2.0)
    target = weights_file(torchvision.models.get_model_weights("resnet18")[arch_meta(models.resnet18).weights])
    target.parent.mkdir(parents=True)
    torch.save(state, target)
    return state


def test_pretrained_encoder_is_loaded_frozen_and_keeps_its_batchnorm(cached_resnet18):
    data = digit_data(n_train=32, n_valid=16, size=32)
    learn = unet_learner(data, models.resnet18, wd=1e-3)
    unet = learn.model
    assert torch.equal(unet.encoder[0].weight, cached_resnet18["conv1.weight"])
    assert data.norm is not None  # normalised with the ImageNet stats the body expects
    assert len(learn.layer_groups) == 3 and learn.n_frozen == 2  # encoder[:6], encoder[6:], decoder
    assert trainable(unet.encoder) == set()
    assert trainable(learn.layer_groups[-1]) == {n for n, _ in learn.layer_groups[-1].named_parameters()}
    assert (learn.train_bn, learn.freeze_bn_stats, learn.wd) == (False, "finetune", 1e-3)
    stats = unet.encoder[1].running_var.clone()
    learn.fit(1, 1e-3)
    assert torch.equal(unet.encoder[1].running_var, stats)  # the frozen body's BatchNorm statistics stay
    learn.unfreeze()
    assert trainable(unet.encoder) == {n for n, _ in unet.encoder.named_parameters()}


def test_export_and_load_learner_give_the_same_predictions(tmp_path):
    data = digit_data(n_train=16, n_valid=8, size=32)
    learn = unet_learner(data, models.resnet18, pretrained=False, self_attention=True, norm_type=NormType.Weight,
                         path=tmp_path)
    learn.fit(1, 1e-3)
    learn.model.eval()
    x = data.valid_ds.x[:2]
    with torch.no_grad():
        expected = learn.model(data.norm.norm(x) if data.norm is not None else x)
    loaded = load_learner(learn.export())
    assert isinstance(loaded.model, DynamicUnet) and isinstance(loaded.loss_func, CrossEntropyFlat)
    with torch.no_grad():
        got = loaded.model(loaded.data.norm.norm(x) if loaded.data.norm is not None else x)
    assert torch.allclose(got, expected, atol=1e-5)
    class_map, _, probs = loaded.predict(x[0])
    assert class_map.shape == (32, 32) and probs.shape == (2, 32, 32)


def test_unet_learner_needs_classes():
    class NoClasses(DigitMasks):
        classes = None

    path = untar_data(URLs.DIGITS)
    data = DataBunch.create(NoClasses(path / "train", 8), NoClasses(path / "valid", 8), bs=4, num_workers=0, device="cpu")
    with pytest.raises(FastbaseError, match="classes"):
        unet_learner(data, tiny_arch, pretrained=False)


def test_lr_find_restores_a_unet_and_summary_lists_its_groups():
    learn = unet_learner(digit_data(n_train=32, n_valid=8), tiny_arch, pretrained=False)
    before = {k: v.clone() for k, v in learn.model.state_dict().items()}
    learn.lr_find(num_it=5, stop_div=False)
    assert all(torch.equal(v, learn.model.state_dict()[k]) for k, v in before.items())
    summary = learn.summary()
    assert summary.startswith("DynamicUnet") and "blocks.1.relu" in summary


def test_an_encoder_returning_its_feature_maps_as_a_list_works():
    class TwoScales(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = conv_layer(3, 8, stride=2), conv_layer(8, 16, stride=2)

        def forward(self, x):
            first = self.a(x)
            return [first, self.b(first)]

    from fastbase.vision.segmentation import unet_layer_groups

    unet = DynamicUnet(TwoScales(), n_classes=2, img_size=(16, 16))
    assert unet.pyramid and unet.skip_idxs == [0] and unet(torch.randn(1, 3, 16, 16)).shape == (1, 2, 16, 16)
    assert len(unet_layer_groups(unet, None)) == 2  # no stages to cut at: the encoder, then the decoder
