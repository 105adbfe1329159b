"""Debugging on tiny data: `subset` (sizes, reproducibility, the original untouched), `no_augment` (the
same batches every epoch), and `learn.overfit` driving the loss on 1 and 10 items below a threshold."""
import matplotlib.pyplot as plt
import pytest
import torch
from image_fixtures import color_folder_fixture  # noqa: F401 - the `color_folder` fixture
from tiny_models import make_data, make_learner
from torch import nn
from torch.utils.data import RandomSampler

from fastbase.data import DataError
from fastbase.vision.data import ImageDataBunch
from fastbase.vision.dataset import ImageDataset
from fastbase.vision.learner import cnn_learner
from fastbase.vision.transforms import get_transforms


def train_indices(data):
    return list(data.train_ds.indices)


def batches(dl):
    return [(x.clone(), y.clone()) for x, y in dl]


# --- subset -------------------------------------------------------------------------------------------
def test_subset_has_n_training_items_and_the_same_validation_set():
    data = make_data(n_train=128, n_valid=40)
    small = data.subset(10, seed=0)
    assert len(small.train_ds) == 10 and len(small.train_dl) == 1 and small.valid_ds is data.valid_ds
    assert len(small.fix_dl.dataset) == 10 and small.classes == data.classes and small.c == 2
    assert len(data.train_ds) == 128  # the original keeps its items


def test_subset_is_reproducible_from_its_seed():
    data = make_data()
    assert train_indices(data.subset(10, seed=1)) == train_indices(data.subset(10, seed=1))
    assert train_indices(data.subset(10, seed=1)) != train_indices(data.subset(10, seed=2))
    first = [y for _, y in data.subset(20, seed=3, bs=5).train_dl]
    again = [y for _, y in data.subset(20, seed=3, bs=5).train_dl]
    assert all(torch.equal(a, b) for a, b in zip(first, again))  # the same shuffling too


def test_subset_can_take_part_of_the_validation_set():
    data = make_data(n_valid=40)
    assert len(data.subset(10, seed=0, valid=8).valid_ds) == 8
    assert list(data.subset(10, seed=0, valid=[0, 5, 7]).valid_ds.indices) == [0, 5, 7]


def test_subset_size_out_of_range_is_a_clear_error():
    with pytest.raises(DataError, match=r"1 <= n <= 128"):
        make_data(n_train=128).subset(500)


def test_changing_a_subset_leaves_the_original_alone():
    data = make_data()
    small = data.subset(10, seed=0).normalize(([0.0] * 8, [2.0] * 8))
    assert small.norm is not None and data.norm is None
    assert all(not dl.tfms for dl in data.dls)


def test_subset_of_image_data_is_image_data_naming_its_files(color_folder):
    data = ImageDataBunch.from_folder(color_folder, size=16, bs=4, num_workers=0, device="cpu", seed=0)
    small = data.subset(4, seed=0)
    assert isinstance(small.train_ds, ImageDataset) and len(small.train_ds) == 4
    for fn, y in zip(small.train_ds.items, small.train_ds.y):
        assert small.classes[int(y)] == fn.parent.name
    x, y = next(iter(small.train_dl))
    assert x.shape == (4, 3, 16, 16)


# --- no_augment ---------------------------------------------------------------------------------------
def test_no_augment_gives_the_same_batches_every_epoch(color_folder):
    data = ImageDataBunch.from_folder(color_folder, size=16, bs=4, num_workers=0, device="cpu", seed=0,
                                      ds_tfms=get_transforms(max_rotate=30.0, max_lighting=0.5))
    plain = data.no_augment()
    first, second = batches(plain.train_dl), batches(plain.train_dl)
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(first, second))
    assert [len(y) for _, y in first] == [4] * 4  # 18 items, bs 4, the last partial batch dropped as in training
    assert isinstance(data.train_dl.dl.sampler, RandomSampler)  # the original still shuffles


# --- overfit ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("n_items", [1, 10])
def test_overfit_drives_the_loss_on_few_items_near_zero(n_items):
    learn = make_learner()
    result = learn.overfit(n_items=n_items, steps=300, lr=1e-2, threshold=0.05)
    assert result.reached and result.final_loss < 0.05 and result.n_items == n_items
    assert result.losses[0] > 0.3 and result.steps == len(result.losses) < 300


def test_overfit_restores_weights_optimizer_data_and_recorder():
    learn = make_learner()
    learn.fit(1, 1e-2)
    weights = {k: v.clone() for k, v in learn.model.state_dict().items()}
    data, opt, losses = learn.data, learn.opt, learn.recorder.losses
    learn.overfit(n_items=10, steps=20, lr=1e-2)
    assert all(torch.equal(v, learn.model.state_dict()[k]) for k, v in weights.items())
    assert learn.data is data and learn.opt is opt and learn.recorder.losses == losses
    assert len(data.train_ds) == 128


def test_overfit_without_restore_keeps_the_trained_weights():
    learn = make_learner()
    before = learn.model[0].weight.clone()
    learn.overfit(n_items=10, steps=5, lr=1e-2, threshold=0.0, restore=False)
    assert not torch.equal(before, learn.model[0].weight)


def test_overfit_that_cannot_learn_says_so():
    result = make_learner().overfit(n_items=10, steps=8, lr=0.0)
    assert not result.reached and result.steps == 8 and "only fell" in result.message
    fig = result.plot()
    assert fig.axes[0].get_xlabel() == "step" and len(fig.axes[0].lines[0].get_xdata()) == 8
    plt.close(fig)


def tiny_cnn(pretrained=False):
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(8, 10))


@pytest.mark.parametrize("n_items", [1, 10])
def test_overfit_a_cnn_with_dropout_and_batchnorm_head(color_folder, n_items):
    data = ImageDataBunch.from_folder(color_folder, size=16, bs=8, num_workers=0, device="cpu", seed=0,
                                      ds_tfms=get_transforms())
    torch.manual_seed(0)
    learn = cnn_learner(data, tiny_cnn, pretrained=False, ps=0.5, silent=True)  # head: BatchNorm1d, dropout
    result = learn.overfit(n_items=n_items, steps=200, lr=1e-2, threshold=0.05)
    assert result.reached, result
