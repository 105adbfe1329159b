"""show_activations and show_filters: headless figures with one row per body stage / one panel per filter."""
import matplotlib.pyplot as plt
import pytest
import torch
from image_fixtures import color_folder_fixture  # noqa: F401 - the `color_folder` fixture
from tiny_models import make_learner
from torch import nn
from torch.utils.data import Dataset

from fastbase.core import FastbaseError
from fastbase.data import DataBunch
from fastbase.learner import Learner
from fastbase.vision import models
from fastbase.vision.activations import show_activations, show_filters, stage_outputs
from fastbase.vision.data import ImageDataBunch
from fastbase.vision.learner import cnn_learner


class RandomImages(Dataset):
    classes = ("a", "b")

    def __init__(self, n):
        g = torch.Generator().manual_seed(0)
        self.x, self.y = torch.rand(n, 3, 32, 32, generator=g), torch.randint(0, 2, (n,), generator=g)

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return self.x[i], self.y[i]


def small_cnn(pretrained=False):
    """conv 16 px -> pool -> conv 8 px: two stages."""
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(4, 6, 3, padding=1),
                         nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 10))


@pytest.fixture(scope="module")
def resnet_learner():
    data = DataBunch.create(RandomImages(8), RandomImages(4), bs=4, num_workers=0, device="cpu")
    return cnn_learner(data, models.resnet18, pretrained=False, silent=True)


def image_axes(fig):
    return [ax for ax in fig.axes if ax.images]


def test_activations_show_a_row_per_resnet_stage(resnet_learner):
    fig = show_activations(resnet_learner, torch.rand(3, 32, 32), n_channels=3)
    # stages end where the spatial size changes: relu (16 px), layer1 (8), layer2 (4), layer3 (2), layer4 (1)
    labels = [ax.get_ylabel() for ax in fig.axes if ax.get_ylabel()]
    assert len(labels) == 5 and labels[0].endswith("(64, 16, 16)") and labels[-1].endswith("(512, 1, 1)")
    assert len(image_axes(fig)) == 5 * 3 + 1  # feature maps, and the input image
    plt.close(fig)


def test_activations_after_chosen_layer_groups_skip_outputs_without_maps(resnet_learner):
    fig = show_activations(resnet_learner, torch.rand(3, 32, 32), layer_groups=resnet_learner.layer_groups,
                           n_channels=2)
    assert len(image_axes(fig)) == 2 * 2 + 1  # two body groups; the head's output is no feature map
    plt.close(fig)


def test_strongest_channels_come_first():
    model = nn.Sequential(nn.Conv2d(3, 3, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    with torch.no_grad():
        model[0].weight.zero_()
        model[0].bias.copy_(torch.tensor([0.0, 2.0, 1.0]))
    data = DataBunch.create(RandomImages(8), RandomImages(4), bs=4, num_workers=0, device="cpu")
    learn = Learner(data, model, silent=True)
    (_, maps), _ = stage_outputs(model, torch.rand(1, 3, 32, 32))  # conv (32 px), pool (1 px); flatten has no maps
    assert maps.shape == (3, 32, 32)
    fig = show_activations(learn, torch.rand(3, 32, 32), n_channels=3)
    assert [ax.get_title() for ax in fig.axes[1:4]] == ["ch 1", "ch 2", "ch 0"]
    plt.close(fig)


def test_activations_of_an_image_file(color_folder):
    data = ImageDataBunch.from_folder(color_folder, size=16, bs=4, num_workers=0, device="cpu")
    learn = cnn_learner(data, small_cnn, pretrained=False, silent=True)
    image = next((color_folder / "valid" / "red").iterdir())
    fig = show_activations(learn, image, n_channels=4)
    assert len(image_axes(fig)) == 2 * 4 + 1  # 16 px and 8 px stages
    assert fig.axes[0].images[0].get_array().shape == (16, 16, 3)
    plt.close(fig)


def test_activations_need_feature_maps():
    with pytest.raises(FastbaseError, match="feature maps"):
        show_activations(make_learner(silent=True), torch.randn(8))


def test_filters_of_the_first_conv_are_rgb_images(resnet_learner):
    fig = show_filters(resnet_learner)
    panels = image_axes(fig)
    assert len(panels) == 64
    picture = panels[0].images[0].get_array()
    assert picture.shape == (7, 7, 3) and picture.min() >= 0 and picture.max() <= 1
    plt.close(fig)


def test_deeper_filters_are_grey_and_capped(resnet_learner):
    fig = show_filters(resnet_learner, layer=1, max_filters=10)
    panels = image_axes(fig)
    assert len(panels) == 10 and panels[0].images[0].get_array().shape == (3, 3)
    plt.close(fig)


def test_filters_of_a_missing_layer_say_how_many_there_are(resnet_learner):
    with pytest.raises(FastbaseError, match="has 20 convolutions"):
        show_filters(resnet_learner, layer=50)
