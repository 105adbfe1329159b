"""One-channel images (`convert_mode='L'`) from the file to the batch, lesson 7-resnet-mnist's data
cells and its `conv(1, 8)` model on the embedded digits, `Image.apply_tfms`, and `train_ds[i]`
augmenting afresh."""
import pytest
import torch
from torch import nn

from fastbase.core import defaults
from fastbase.data import Category, DataError
from fastbase.datasets import URLs, untar_data
from fastbase.learner import Learner
from fastbase.metrics import accuracy
from fastbase.vision.data import ImageList
from fastbase.vision.image import Image, load_image, open_image
from fastbase.vision.rand_pad import rand_pad
from fastbase.vision.show import plot_multi
from fastbase.vision.transforms import Flip, Rotate, get_transforms


@pytest.fixture(scope="module")
def digits():
    return untar_data(URLs.DIGITS)


def test_load_image_gray_gives_one_channel(digits):
    fn = min((digits / "train" / "3").iterdir())
    x, hw = load_image(fn, convert_mode="L")
    rgb, _ = load_image(fn)
    assert x.shape == (1, 8, 8) and x.dtype == torch.uint8 and hw == (8, 8)
    assert torch.equal(x[0], rgb[0])  # a gray file: the same values as each RGB channel
    assert open_image(fn, convert_mode="L").shape == (1, 8, 8)


def test_lesson7_resnet_mnist_data_cells(digits, monkeypatch):
    monkeypatch.setattr(defaults, "cmap", "binary")
    il = ImageList.from_folder(digits, convert_mode="L")
    assert str(il.items[0]).endswith(".png")
    assert il[0].shape == (1, 8, 8)
    il[0].show()
    sd = il.split_by_folder(train="train", valid="valid")
    ll = sd.label_from_folder()
    x, y = ll.train[0]
    ax = x.show()
    assert ax.images[0].get_cmap().name == "binary"
    assert isinstance(y, Category) and x.shape == (1, 8, 8)
    tfms = ([*rand_pad(padding=1, size=8, mode="zeros")], [])
    ll = ll.transform(tfms)
    data = ll.databunch(bs=128, num_workers=0).normalize()
    assert data.padding_mode == "zeros"  # rand_pad's mode, as fastai fills the shifted border
    x, y = data.train_ds[0]
    assert isinstance(x, Image) and x.shape == (1, 8, 8)
    plot_multi(lambda i, j, ax: data.train_ds[0][0].show(ax, cmap="gray"), 3, 3, figsize=(8, 8))
    xb, yb = data.one_batch()
    assert xb.shape == (128, 1, 8, 8) and yb.shape == (128,)
    assert len(data.stats[0]) == 1  # batch statistics of the one channel
    assert data.show_batch(rows=3, figsize=(5, 5), return_fig=True) is not None

    def conv(ni, nf):
        return nn.Conv2d(ni, nf, kernel_size=3, stride=2, padding=1)
    model = nn.Sequential(conv(1, 8), nn.BatchNorm2d(8), nn.ReLU(), conv(8, 16), nn.BatchNorm2d(16), nn.ReLU(),
                          conv(16, 10), nn.BatchNorm2d(10), nn.Flatten())
    learn = Learner(data, model, loss_func=nn.CrossEntropyLoss(), metrics=accuracy, silent=True)
    assert model(xb).shape == (128, 10)
    learn.fit_one_cycle(1, max_lr=0.1)
    pred, _idx, probs = learn.predict(data.valid_ds[0][0])
    assert isinstance(pred, Category) and probs.shape == (10,)


def test_train_ds_items_are_augmented_afresh_valid_ones_are_not(digits):
    data = (ImageList.from_folder(digits).split_by_folder().label_from_folder()
            .transform(([Rotate(max_deg=45, p=1.0)], []), size=16).databunch(bs=32, num_workers=0))
    a, b = data.train_ds[0][0].data, data.train_ds[0][0].data
    assert a.shape == (3, 16, 16) and not torch.equal(a, b)
    assert torch.equal(data.valid_ds[0][0].data, data.valid_ds[0][0].data)
    assert torch.equal(data.fix_dl.dataset[0][0].data, data.fix_dl.dataset[0][0].data)
    assert data.train_ds.x.items[0] == data.train_ds.items[0] and isinstance(data.train_ds.x[0], Image)
    assert data.train_ds.y.classes == data.classes


def test_image_apply_tfms(digits):
    img = open_image(min((digits / "train" / "5").iterdir()))
    assert torch.allclose(img.apply_tfms([Flip(p=1.0)]).data, img.data.flip(-1), atol=1 / 255)
    out = img.apply_tfms(get_transforms()[0], size=16)
    assert isinstance(out, Image) and out.shape == (3, 16, 16) and 0 <= out.data.min() <= out.data.max() <= 1
    gray = open_image(min((digits / "train" / "5").iterdir()), convert_mode="L")
    assert gray.apply_tfms([], size=(12, 10), resize_method=3).shape == (1, 12, 10)


def test_three_channel_stats_on_gray_batches_are_an_error(digits):
    data = (ImageList.from_folder(digits, convert_mode="L").split_by_folder().label_from_folder()
            .transform(None, size=8).databunch(bs=16, num_workers=0))
    data.normalize(([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]))
    with pytest.raises(DataError, match="statistics for 3 channels, but the batch has 1"):
        data.one_batch()
