"""U-Nets on timm encoders: `unet_learner(data, 'timm:NAME')` builds the decoder on timm's
`features_only` feature pyramid, splits the encoder into layer groups by stages (freeze, slice
learning rates), loads weights from a file the test writes, and exports by timm name."""
import pytest
import torch
from test_unet import assert_output_size_and_gradient_at_the_stem, digit_data, trainable
from torch import nn

from fastbase.core import FastbaseError
from fastbase.learner import load_learner
from fastbase.vision.segmentation import DynamicUnet, acc_segmentation, unet_learner
from fastbase.vision.timm_models import timm_features_encoder

timm = pytest.importorskip("timm", reason="timm encoders are optional: pip install 'fastbase[timm]'")


def stage_ids(group):
    return {id(m) for m in group.modules()}


def test_timm_resnet18_encoder_gives_one_skip_per_stride_and_splits_after_layer2():
    learn = unet_learner(digit_data(n_train=16, n_valid=8, size=32), "timm:resnet18", pretrained=False)
    unet = learn.model
    assert isinstance(unet, DynamicUnet) and unet.pyramid and unet.skip_idxs == [0, 1, 2, 3]  # strides 2..16
    assert unet.blocks[0].shuf.conv[0].in_channels == 512  # layer4's channels feed the middle
    enc = unet.encoder
    first, second, decoder = learn.layer_groups
    assert id(enc.conv1) in stage_ids(first) and id(enc.layer2) in stage_ids(first)
    assert id(enc.layer3) in stage_ids(second) and id(enc.layer4) in stage_ids(second)
    assert id(unet.middle) in stage_ids(decoder) and id(unet.final) in stage_ids(decoder)
    ids = [id(p) for g in learn.layer_groups for p in g.parameters()]
    assert len(ids) == len(set(ids)) and set(ids) == {id(p) for p in unet.parameters()}  # each parameter once
    learn.freeze_to(1)  # a random body: BatchNorm stays trainable (train_bn), convolutions freeze
    assert not any(m.weight.requires_grad for m in enc.layer2.modules() if isinstance(m, nn.Conv2d))
    assert all(p.requires_grad for p in enc.layer3.parameters())
    learn.create_opt(slice(1e-4, 1e-2))
    assert [round(g["lr"], 6) for g in learn.opt.opt.param_groups[::2]] == [1e-4, 1e-3, 1e-2]


@pytest.mark.parametrize("name", ["convnext_atto", "efficientnet_b0"])
def test_other_timm_families_build_at_odd_sizes_and_train_to_the_stem(name):
    encoder, channels = timm_features_encoder(name)
    unet = DynamicUnet(encoder, n_classes=3, img_size=(40, 36))
    assert unet.blocks[0].shuf.conv[0].in_channels == channels[-1]
    assert_output_size_and_gradient_at_the_stem(unet, 3, (40, 36))
    with torch.no_grad():
        assert unet.eval()(torch.randn(1, 3, 35, 51)).shape == (1, 3, 35, 51)  # another size at run time


def test_a_timm_name_without_prefix_learns_digit_masks():
    torch.manual_seed(0)
    data = digit_data(n_train=128, size=32)  # ConvNeXt's stride-2 kernels of 2 need 32 px to reach stride 32
    learn = unet_learner(data, "convnext_atto", pretrained=False, metrics=[acc_segmentation])
    assert learn.model.pyramid and len(learn.layer_groups) == 3
    loss_before, accuracy_before = learn.validate()
    learn.fit_one_cycle(2, 3e-3)
    loss_after, accuracy_after = learn.validate()
    assert loss_after < 0.8 * loss_before and accuracy_after > accuracy_before, (loss_before, loss_after)


def test_pretrained_timm_encoder_loads_the_file_and_starts_frozen(tmp_path):
    torch.manual_seed(0)
    state = timm.create_model("resnet18", pretrained=False).state_dict()  # a classifier's file, as timm publishes
    for key, value in state.items():
        if key.endswith("running_var"):
            value.uniform_(0.5, 2.0)
    file = tmp_path / "resnet18.pth"
    torch.save(state, file)
    data = digit_data(n_train=16, n_valid=8, size=32)
    learn = unet_learner(data, "timm:resnet18", pretrained=str(file))
    enc = learn.model.encoder
    assert torch.equal(enc.conv1.weight, state["conv1.weight"])
    assert torch.equal(enc.layer4[1].bn2.running_var, state["layer4.1.bn2.running_var"])
    assert data.norm is not None and learn.n_frozen == 2 and trainable(enc) == set()
    assert (learn.train_bn, learn.freeze_bn_stats) == (False, "finetune")
    before = enc.bn1.running_var.clone()
    learn.fit(1, 1e-3)
    assert torch.equal(enc.bn1.running_var, before)
    learn.unfreeze()
    assert trainable(enc) == {n for n, _ in enc.named_parameters()}


def test_export_records_the_timm_name_and_load_learner_predicts_the_same(tmp_path):
    data = digit_data(n_train=16, n_valid=8, size=32)
    learn = unet_learner(data, "timm:resnet18", pretrained=False, path=tmp_path)
    learn.fit(1, 1e-3)
    arch = learn.model_spec["kwargs"]["arch"]
    assert arch["timm"] == "resnet18" and arch["timm_version"] == timm.__version__
    x = data.valid_ds.x[:2]
    learn.model.eval()
    with torch.no_grad():
        expected = learn.model(data.norm.norm(x) if data.norm is not None else x)
    loaded = load_learner(learn.export())
    assert isinstance(loaded.model, DynamicUnet) and loaded.model.pyramid
    with torch.no_grad():
        got = loaded.model.eval()(loaded.data.norm.norm(x) if loaded.data.norm is not None else x)
    assert torch.allclose(got, expected, atol=1e-5)


def test_a_torchvision_name_keeps_the_sequential_encoder():
    learn = unet_learner(digit_data(n_train=8, n_valid=8), "resnet18", pretrained=False)
    assert not learn.model.pyramid and learn.model.skip_idxs == [2, 4, 5]  # 16 px: layer3 and layer4 are 1x1
    assert learn.model_spec["kwargs"]["arch"] == "fastbase.vision.models:resnet18"


def test_cut_is_refused_for_a_timm_encoder():
    with pytest.raises(FastbaseError, match="cut=3"):
        unet_learner(digit_data(n_train=8, n_valid=8), "timm:resnet18", pretrained=False, cut=3)


def test_an_input_too_small_for_the_encoder_says_so():
    with pytest.raises(FastbaseError, match=r"cannot take a \(16, 16\) input"):
        DynamicUnet(timm_features_encoder("convnext_atto")[0], n_classes=2, img_size=16)


def test_an_encoder_returning_one_tensor_is_refused_with_advice():
    with pytest.raises(FastbaseError, match="features_only"):
        DynamicUnet(timm.create_model("resnet18", num_classes=0), n_classes=2, img_size=32)
