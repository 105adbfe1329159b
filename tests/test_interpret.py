"""ClassificationInterpretation: numbers against hand-computed ones on a fixed model, every plot
drawn headless with the expected panels and titles, Grad-CAM maps, and figures saved to files."""
import math
import re

import matplotlib
import numpy as np
import pytest
import torch
from image_fixtures import make_color_folder
from tiny_models import make_data, make_learner
from torch import nn
from torch.utils.data import TensorDataset

from fastbase.data import DataBunch, DatasetType, imagenet_stats
from fastbase.interpret import ClassificationInterpretation, InterpretationError
from fastbase.learner import Learner
from fastbase.vision.data import ImageDataBunch
from fastbase.vision.interpret import cam_layer, grad_cam

matplotlib.use("Agg")
pytestmark = pytest.mark.filterwarnings("ignore:The image decoding:DeprecationWarning")  # torchvision 0.29

# Logits are the inputs themselves (identity model), so every number can be worked out by hand.
X = [[2, 0, 0], [0, 1, 0], [0, 0, 3], [0.5, 0, 0], [0, 2, 1], [3, 0, 0], [0, 0.2, 0], [0, 1, 0]]
Y = [0, 0, 2, 1, 1, 2, 2, 0]
PRED = [0, 1, 2, 0, 1, 0, 1, 1]  # arg-max of each row of X


def fixed_learner():
    ds = TensorDataset(torch.tensor(X, dtype=torch.float32), torch.tensor(Y))
    ds.classes = ["a", "b", "c"]
    data = DataBunch.create(ds, ds, bs=3, num_workers=0, device="cpu")
    model = nn.Linear(3, 3, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.eye(3))
    return Learner(data, model, silent=True)


def cross_entropy_by_hand(logits, target):
    return math.log(sum(math.exp(v) for v in logits)) - logits[target]


def test_numbers_match_hand_computed_cross_entropy_and_counts():
    interp = ClassificationInterpretation.from_learner(fixed_learner())
    expected = [cross_entropy_by_hand(x, y) for x, y in zip(X, Y)]
    assert interp.losses.tolist() == pytest.approx(expected, abs=1e-6)
    assert interp.pred_class.tolist() == PRED and interp.y_true.tolist() == Y
    assert interp.preds.sum(dim=1).tolist() == pytest.approx([1.0] * len(X))
    losses, idxs = interp.top_losses(3)
    order = sorted(range(len(X)), key=lambda i: -expected[i])
    assert idxs.tolist() == order[:3] and losses.tolist() == pytest.approx([expected[i] for i in order[:3]])
    assert interp.top_losses(2, largest=False).indices.tolist() == order[::-1][:2]
    assert len(interp.top_losses().values) == len(X) == len(interp)
    assert interp.confusion_matrix().tolist() == [[1, 2, 0], [1, 1, 0], [1, 1, 1]]
    assert interp.confusion_matrix().dtype == np.int64


def test_equal_losses_keep_item_order():
    interp = ClassificationInterpretation.from_learner(fixed_learner())
    idxs = interp.top_losses().indices.tolist()
    assert interp.losses[1] == interp.losses[7] and idxs.index(1) == idxs.index(7) - 1


def test_most_confused_sorts_by_count_then_class_order():
    interp = ClassificationInterpretation.from_learner(fixed_learner())
    assert interp.most_confused() == [("a", "b", 2), ("b", "a", 1), ("c", "a", 1), ("c", "b", 1)]
    assert interp.most_confused(min_val=2) == [("a", "b", 2)]


def test_training_set_is_read_in_order_without_augmentation():
    learn = make_learner()
    interp = ClassificationInterpretation.from_learner(learn, ds_type="train")
    assert interp.ds_type == DatasetType.Train
    assert interp.y_true.tolist() == learn.data.train_ds.tensors[1].tolist()


def test_multi_label_and_unlabelled_sets_raise_clear_errors():
    with pytest.raises(InterpretationError, match="multi-label"):
        ClassificationInterpretation.from_learner(make_learner(make_data(multi_label=True)))
    with pytest.raises(InterpretationError, match="Unknown ds_type"):
        ClassificationInterpretation.from_learner(make_learner(), ds_type="validation")


def test_plot_top_losses_needs_images():
    interp = ClassificationInterpretation.from_learner(fixed_learner())
    with pytest.raises(InterpretationError, match="ImageDataBunch"):
        interp.plot_top_losses(4)


def test_confusion_matrix_plot_has_counts_names_and_title(tmp_path):
    interp = ClassificationInterpretation.from_learner(fixed_learner())
    fig = interp.plot_confusion_matrix(title="Digits")
    ax = fig.axes[0]
    assert ax.get_title() == "Digits" and (ax.get_xlabel(), ax.get_ylabel()) == ("Predicted", "Actual")
    assert [t.get_text() for t in ax.get_xticklabels()] == ["a", "b", "c"]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["a", "b", "c"]
    assert [t.get_text() for t in ax.texts] == ["1", "2", "0", "1", "1", "0", "1", "1", "1"]
    normalised = interp.plot_confusion_matrix(normalize=True, norm_dec=2).axes[0]
    assert [t.get_text() for t in normalised.texts][:3] == ["0.33", "0.67", "0.00"]
    assert interp.plot_confusion_matrix(return_fig=False) is None
    matplotlib.pyplot.close("all")


# --- images -----------------------------------------------------------------------------------
def tiny_cnn(n_classes=3):
    """A body (conv) and a head, as cnn_learner builds them: nn.Sequential(body, head)."""
    torch.manual_seed(0)
    body = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU())
    head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, n_classes))
    return nn.Sequential(body, head)


@pytest.fixture(scope="module")
def image_learner(tmp_path_factory):
    root = make_color_folder(tmp_path_factory.mktemp("interp") / "colors", per_class=(4, 2), hw=(12, 12))
    data = ImageDataBunch.from_folder(root, size=12, bs=4, num_workers=0, device="cpu").normalize(imagenet_stats)
    return Learner(data, tiny_cnn(), silent=True)


COLOR_OF = {"blue": [0, 0, 1], "green": [0, 1, 0], "red": [1, 0, 0]}


def test_plot_top_losses_draws_denormalised_images_with_titles(image_learner):
    interp = ClassificationInterpretation.from_learner(image_learner)
    fig = interp.plot_top_losses(5)
    shown = [ax for ax in fig.axes if ax.images]
    assert len(shown) == 5 and len(fig.axes) == 6  # a 3 x 2 grid, the last panel empty
    assert fig._suptitle.get_text() == "prediction/actual/loss/probability"
    losses, idxs = interp.top_losses(5)
    for ax, loss, i in zip(shown, losses, idxs):
        pred, actual = interp.classes[interp.pred_class[i]], interp.classes[interp.y_true[i]]
        prob = float(interp.preds[i, interp.y_true[i]])
        assert ax.get_title() == f"{pred}/{actual} / {float(loss):.2f} / {prob:.2f}"
        pixels = np.asarray(ax.images[0].get_array())
        assert pixels.shape == (12, 12, 3)
        assert pixels[6, 6] == pytest.approx(COLOR_OF[actual], abs=0.01)  # the colour, not normalised values
    assert re.fullmatch(r"\w+/\w+ / \d+\.\d\d / \d\.\d\d", shown[0].get_title())


def test_heatmap_overlays_a_map_of_the_image_size(image_learner):
    interp = ClassificationInterpretation.from_learner(image_learner)
    fig = interp.plot_top_losses(4, heatmap=True)
    shown = [ax for ax in fig.axes if ax.images]
    assert len(shown) == 4 and all(len(ax.images) == 2 for ax in shown)
    assert np.asarray(shown[0].images[1].get_array()).shape == (12, 12)


def test_grad_cam_is_non_negative_image_sized_and_leaves_gradients_alone(image_learner):
    model = image_learner.model
    model.train()
    x = image_learner.data.one_batch(DatasetType.Valid)[0]
    cams = grad_cam(model, x, torch.zeros(len(x), dtype=torch.long))
    assert cams.shape == (len(x), 12, 12) and (cams >= 0).all() and cams.sum() > 0
    assert model.training and all(p.grad is None for p in model.parameters())
    assert cam_layer(model) is model[0]


def test_grad_cam_on_other_models_uses_the_last_convolution():
    model = nn.Sequential(nn.Conv2d(3, 2, 3), nn.ReLU(), nn.Conv2d(2, 4, 3, stride=2), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
    assert cam_layer(model) is model[2]
    cams = grad_cam(model, torch.rand(2, 3, 20, 16), torch.tensor([0, 1]))
    assert cams.shape == (2, 20, 16) and (cams >= 0).all()
    with pytest.raises(InterpretationError, match="Conv2d"):
        cam_layer(nn.Linear(3, 2))


def test_tta_losses_are_cross_entropy_of_the_tta_probabilities(image_learner):
    interp = ClassificationInterpretation.from_learner(image_learner, tta=True)
    expected = -interp.preds[torch.arange(len(interp)), interp.y_true].log()
    assert torch.allclose(interp.losses, expected, atol=1e-5)


def test_plots_save_png_files_in_new_folders(image_learner, tmp_path):
    interp = ClassificationInterpretation.from_learner(image_learner)
    interp.plot_top_losses(2, save_to=tmp_path / "a" / "top.png")
    interp.plot_confusion_matrix(save_to=tmp_path / "b" / "cm.png")
    learn = make_learner()
    learn.fit(1)
    assert learn.recorder.plot_losses(save_to=tmp_path / "c" / "losses.png") is not None
    for name in ("a/top.png", "b/cm.png", "c/losses.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_recorder_plots_take_return_fig_and_save_to(tmp_path):
    from fastbase.metrics import accuracy

    learn = make_learner(metrics=[accuracy])
    learn.fit_one_cycle(1)
    rec = learn.recorder
    assert rec.plot_lr(return_fig=False) is None
    fig = rec.plot_metrics(save_to=tmp_path / "m.png")
    assert fig.axes[0].get_ylabel() == "accuracy" and (tmp_path / "m.png").stat().st_size > 0
    assert fig.axes[0].get_xlabel() == "Epoch"
    assert rec.plot(skip_start=0, skip_end=0, save_to=tmp_path / "lr").axes[0].get_xscale() == "log"
    assert (tmp_path / "lr").read_bytes()[:4] == b"\x89PNG"
    matplotlib.pyplot.close("all")


def test_an_unlabelled_test_set_cannot_be_interpreted(image_learner):
    image_learner.data.add_test(image_learner.data.valid_ds.items[:2])
    with pytest.raises(InterpretationError, match="no labels"):
        ClassificationInterpretation.from_learner(image_learner, ds_type="test")
