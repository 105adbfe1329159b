"""SegmentationInterpretation: IoU per class with class names, confusion between classes over
pixels (void left out), the images with the largest losses, and their plots, on a U-Net trained
on the embedded digits' masks and on hand-made class maps."""
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from test_unet import digit_data, tiny_arch

from fastbase.interpret import InterpretationError
from fastbase.vision.segmentation import (
    MeanIoU,
    SegmentationInterpretation,
    acc_segmentation,
    unet_learner,
)


@pytest.fixture(scope="module")
def trained():
    torch.manual_seed(0)
    learn = unet_learner(digit_data(n_train=128), tiny_arch, pretrained=False, metrics=[acc_segmentation, MeanIoU()])
    learn.fit_one_cycle(1, 2e-2)
    return learn


def fake_learner(classes):
    return SimpleNamespace(data=SimpleNamespace(classes=classes))


def test_numbers_agree_with_the_metrics_of_the_last_epoch(trained):
    interp = SegmentationInterpretation.from_learner(trained)
    accuracy, mean_iou = trained.recorder.values[-1][2:]
    assert len(interp) == 32 and interp.pred_class.shape == interp.y_true.shape == (32, 16, 16)
    cm = interp.confusion_matrix()
    assert cm.shape == (2, 2) and cm.sum() == 32 * 16 * 16
    assert abs(np.trace(cm) / cm.sum() - accuracy) < 1e-5
    assert abs(interp.mean_iou() - float(mean_iou)) < 1e-5
    table = interp.per_class_iou()
    rows = table.to_dict("records") if hasattr(table, "to_dict") else table
    assert [r["class"] for r in rows] == ["background", "digit"]
    assert [r["pixels"] for r in rows] == cm.sum(1).tolist() and [r["predicted"] for r in rows] == cm.sum(0).tolist()
    assert rows[1]["iou"] == pytest.approx(cm[1, 1] / (cm[1].sum() + cm[:, 1].sum() - cm[1, 1]))


def test_losses_are_per_image_and_top_losses_sort_them(trained):
    interp = SegmentationInterpretation.from_learner(trained)
    _, targets, pixel_losses = trained.get_preds(with_loss=True)
    assert interp.losses.shape == (32,) and torch.allclose(interp.losses, pixel_losses)
    values, idxs = interp.top_losses(5)
    assert torch.equal(values, interp.losses.sort(descending=True).values[:5])
    assert torch.equal(interp.y_true[idxs[0]], targets[idxs[0]])


def test_class_maps_from_get_preds_give_the_same_interpretation(trained):
    probs, targets, losses = trained.get_preds(with_loss=True)
    from_probs = SegmentationInterpretation(trained, probs, targets, losses)
    from_maps = SegmentationInterpretation(trained, probs.argmax(1), targets[:, None], losses)  # masks as (n, 1, H, W)
    assert np.array_equal(from_probs.confusion_matrix(), from_maps.confusion_matrix())


def test_void_pixels_are_left_out_of_counts_iou_and_accuracy():
    target = torch.tensor([[[0, 1], [2, 2]], [[1, 1], [0, 2]]])
    pred = torch.tensor([[[0, 1], [1, 0]], [[1, 0], [0, 1]]])
    interp = SegmentationInterpretation(fake_learner(["road", "car", "void"]), pred, target, torch.tensor([0.5, 1.0]),
                                        void_code=2)
    assert interp.confusion_matrix().tolist() == [[2, 0, 0], [1, 2, 0], [0, 0, 0]]
    rows = interp.per_class_iou()
    rows = rows.to_dict("records") if hasattr(rows, "to_dict") else rows
    assert [r["iou"] for r in rows[:2]] == pytest.approx([2 / 3, 2 / 3]) and np.isnan(rows[2]["iou"])
    assert interp.mean_iou() == pytest.approx(2 / 3)
    assert interp.pixel_accuracy().tolist() == pytest.approx([1.0, 2 / 3])
    assert ("car", "road", 1) in interp.most_confused()


def test_bad_shapes_and_void_code_are_refused_with_what_was_found():
    with pytest.raises(InterpretationError, match=r"\(2, 3\)"):
        SegmentationInterpretation(fake_learner(["a", "b"]), torch.zeros(2, 3), torch.zeros(2, 4, 4), torch.zeros(2))
    with pytest.raises(InterpretationError, match="do not match"):
        SegmentationInterpretation(fake_learner(["a", "b"]), torch.zeros(2, 4, 4), torch.zeros(2, 5, 5), torch.zeros(2))
    with pytest.raises(InterpretationError, match="void_code=7"):
        SegmentationInterpretation(fake_learner(["a", "b"]), torch.zeros(2, 4, 4), torch.zeros(2, 4, 4), torch.zeros(2),
                                   void_code=7)


def test_plot_top_losses_shows_image_true_and_predicted_masks(trained):
    interp = SegmentationInterpretation.from_learner(trained)
    fig = interp.plot_top_losses(3, legend=True)
    axes = fig.axes
    assert len(axes) == 9
    _, idxs = interp.top_losses(3)
    assert axes[0].get_title().startswith(f"#{int(idxs[0])}: loss")
    assert [ax.get_title() for ax in axes[1:3]] == ["true", "predicted"]
    true_overlay, predicted_overlay = axes[1].get_images()[-1], axes[2].get_images()[-1]
    assert np.array_equal(true_overlay.get_array(), interp.y_true[idxs[0]].numpy())
    assert np.array_equal(predicted_overlay.get_array(), interp.pred_class[idxs[0]].long().numpy())
    assert true_overlay.get_clim() == predicted_overlay.get_clim() == (-0.5, 1.5)  # one colour per class in both


def test_plot_confusion_matrix_names_the_classes(trained):
    fig = SegmentationInterpretation.from_learner(trained).plot_confusion_matrix(normalize=True)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["background", "digit"]
    assert len(ax.texts) == 4


def test_show_results_interpretation_and_image_segment_colour_a_class_alike(trained):
    """One mask painter: each class has one colour in `show_results`, in the interpretation's plot and
    in `ImageSegment.show` (the same colour map, bounds and class count)."""
    from fastbase.vision.segmentation import ImageSegment, show_segment_results

    results = show_segment_results(trained, rows=1, return_fig=True)  # SegmentationDataBunch.show_results
    top = SegmentationInterpretation.from_learner(trained).plot_top_losses(k=1, return_fig=True)
    alone = ImageSegment(torch.tensor([[0, 1]]), trained.data.classes).show()
    painted = [results.axes[0].images[-1], top.axes[1].images[-1], alone.images[-1]]
    for code in (0, 1):
        colours = {tuple(np.round(im.cmap(im.norm(code)), 6)) for im in painted}
        assert len(colours) == 1, f"class {code} is drawn in {len(colours)} colours: {colours}"
    assert {im.norm.vmin for im in painted} == {-0.5} and {im.norm.vmax for im in painted} == {1.5}
