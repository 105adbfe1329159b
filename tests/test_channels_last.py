"""`learn.to_channels_last()`: the model's weights and the input batches are stored channels-last
(NHWC) in training and validation, the results match the contiguous path up to float rounding, and
`to_contiguous()` undoes it."""
import pytest
import torch
from tiny_vision import noise_folder, tiny_arch, tiny_learner
from torch import nn
from torch.utils.data import TensorDataset

from fastbase.callback import Callback, Order
from fastbase.callbacks.channels_last import ChannelsLast
from fastbase.data import DataBunch
from fastbase.learner import Learner, load_learner

CL = torch.channels_last


def conv_model() -> nn.Sequential:
    """conv-BN-ReLU twice (no conv bias: before BatchNorm its gradient is pure rounding noise, which
    Adam would turn into full-size steps that differ between any two runs), pooling, a classifier."""
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.Conv2d(8, 8, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 2))


def image_data() -> DataBunch:
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(48, 3, 12, 12, generator=g), torch.randint(0, 2, (48,), generator=g)
    train, valid = TensorDataset(x[:32], y[:32]), TensorDataset(x[32:], y[32:])
    train.classes = valid.classes = ["a", "b"]
    return DataBunch.create(train, valid, bs=8, num_workers=0, device="cpu", seed=0)


def conv_learner(**kwargs) -> Learner:
    torch.manual_seed(0)
    return Learner(image_data(), conv_model(), silent=True, **kwargs)


class InputFormats(Callback):
    """Whether each batch the model sees is channels-last, for training and validation batches."""
    order = Order.CHANNELS_LAST + 5  # after ChannelsLast

    def __init__(self):
        self.seen = {True: [], False: []}

    def before_batch(self):
        x = self.learn.xb[0]
        self.seen[self.learn.training].append(x.is_contiguous(memory_format=CL) and not x.is_contiguous())


def conv_weights_channels_last(model) -> list[bool]:
    return [m.weight.is_contiguous(memory_format=CL) and not m.weight.is_contiguous()
            for m in model.modules() if isinstance(m, nn.Conv2d)]


def test_to_channels_last_stores_the_weights_and_every_batch_channels_last():
    formats = InputFormats()
    learn = conv_learner(callbacks=[formats]).to_channels_last()
    assert all(conv_weights_channels_last(learn.model))
    learn.fit(1, 1e-3)
    assert all(conv_weights_channels_last(learn.model))
    assert formats.seen[True] and all(formats.seen[True])
    assert formats.seen[False] and all(formats.seen[False])


def test_channels_last_predicts_as_the_contiguous_path_does():
    plain, last = conv_learner(), conv_learner().to_channels_last()
    assert last.validate() == pytest.approx(plain.validate(), rel=1e-5)
    torch.testing.assert_close(last.get_preds()[0], plain.get_preds()[0], rtol=1e-5, atol=1e-6)


def test_channels_last_trains_as_the_contiguous_path_does():
    plain, last = conv_learner(), conv_learner().to_channels_last()
    for learn in (plain, last):
        learn.fit(1, 1e-3)
    assert last.recorder.losses == pytest.approx(plain.recorder.losses, rel=1e-4)
    for a, b in zip(last.model.parameters(), plain.model.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_to_contiguous_undoes_channels_last():
    formats = InputFormats()
    learn = conv_learner(callbacks=[formats]).to_channels_last().to_contiguous()
    assert not any(isinstance(cb, ChannelsLast) for cb in learn.callbacks)
    assert not any(conv_weights_channels_last(learn.model))
    learn.fit(1, 1e-3)
    assert not any(formats.seen[True]) and not any(formats.seen[False])


def test_weights_saved_channels_last_load_into_a_contiguous_model(tmp_path):
    last = conv_learner(path=tmp_path).to_channels_last()
    last.fit(1, 1e-2)
    last.save("cl")
    plain = conv_learner(path=tmp_path).load("cl")
    assert not any(conv_weights_channels_last(plain.model))
    torch.testing.assert_close(plain.get_preds()[0], last.get_preds()[0], rtol=1e-4, atol=1e-5)


def test_cnn_learner_channels_last_trains_and_exports(tmp_path):
    learn = tiny_learner(noise_folder(tmp_path / "images"), channels_last=True)
    assert any(isinstance(cb, ChannelsLast) for cb in learn.callbacks)
    assert all(conv_weights_channels_last(learn.model))
    learn.fit(1, 1e-3)
    item = learn.data.valid_ds.items[0]
    loaded = load_learner(learn.export(tmp_path / "export.pkl"))
    torch.testing.assert_close(loaded.predict(item)[2], learn.predict(item)[2], rtol=1e-4, atol=1e-6)


def test_cnn_learner_picks_channels_last_on_the_cpu_for_the_archs_measured_faster(tmp_path):
    from fastbase.vision import models
    from fastbase.vision.data import ImageDataBunch
    from fastbase.vision.learner import cnn_learner
    data = ImageDataBunch.from_folder(noise_folder(tmp_path / "images"), size=16, bs=8, num_workers=0, device="cpu")

    def uses_channels_last(arch, **kwargs) -> bool:
        learn = cnn_learner(data, arch, pretrained=False, silent=True, **kwargs)
        found = any(isinstance(cb, ChannelsLast) for cb in learn.callbacks)
        if found:  # (a depthwise or 1x1 kernel is both layouts at once, so only this direction is checked)
            assert all(m.weight.is_contiguous(memory_format=CL) for m in learn.model.modules()
                       if isinstance(m, nn.Conv2d))
        return found

    assert models.model_meta["mobilenet_v2"].channels_last_cpu and not models.model_meta["convnext_tiny"].channels_last_cpu
    assert uses_channels_last(models.mobilenet_v3_small)  # measured 1.4-1.6x faster in training, with its family
    assert not uses_channels_last(models.mobilenet_v3_small, channels_last=False)
    assert not uses_channels_last(models.squeezenet1_1)  # not measured: left as is
    assert uses_channels_last(models.squeezenet1_1, channels_last=True)
    assert not uses_channels_last(tiny_arch)  # an architecture without metadata: as is
