"""Segmentation losses and metrics against values computed by hand: pixel accuracy with a void code,
v1's dice/IoU, the mean IoU of a whole set from summed counts, CrossEntropyFlat over pixels, and
decoding per-pixel probabilities into a class map."""
import math
from functools import partial

import pytest
import torch
import torch.nn.functional as F

from fastbase.core import FastbaseError
from fastbase.data import DataBunch
from fastbase.layers import SigmoidRange
from fastbase.losses import CrossEntropyFlat
from fastbase.metrics import AvgMetric, as_metric, per_item_loss
from fastbase.vision.segmentation import MeanIoU, acc_segmentation, dice, foreground_acc


def scores(pred_map: torch.Tensor, n_classes: int) -> torch.Tensor:
    """(bs, H, W) predicted classes -> (bs, c, H, W) scores whose arg-max is that map."""
    return F.one_hot(pred_map, n_classes).permute(0, 3, 1, 2).float()


PRED = torch.tensor([[[0, 1], [2, 2]]])  # one 2x2 image
TARGET = torch.tensor([[[0, 1], [1, 3]]])  # 3: void


def test_pixel_accuracy_counts_every_pixel_without_a_void_code():
    assert acc_segmentation(scores(PRED, 4), TARGET).item() == pytest.approx(2 / 4)


def test_pixel_accuracy_leaves_the_void_pixels_out():
    # the void pixel (target 3) is left out: 2 right of 3 labelled pixels
    assert acc_segmentation(scores(PRED, 4), TARGET, void_code=3).item() == pytest.approx(2 / 3)
    acc_camvid = partial(acc_segmentation, void_code=3)  # the course's metric for CamVid
    assert acc_camvid(scores(PRED, 4), TARGET[:, None]).item() == pytest.approx(2 / 3)  # (bs, 1, H, W) masks too
    assert as_metric(acc_camvid).name == "acc_segmentation"
    all_void = torch.full_like(TARGET, 3)
    assert acc_segmentation(scores(PRED, 4), all_void, void_code=3).item() == 0.0


def test_foreground_accuracy_ignores_the_background():
    # background (0) left out: targets 1, 1, 3 predicted 1, 2, 2 -> 1 of 3
    assert foreground_acc(scores(PRED, 4), TARGET).item() == pytest.approx(1 / 3)


def test_dice_and_iou_of_a_binary_mask():
    pred = torch.tensor([[[1, 1, 0, 0]]])
    target = torch.tensor([[[1, 0, 1, 0]]])
    # intersection 1, |P| + |T| = 4 -> dice 2/4; union 3 -> IoU 1/3
    assert dice(scores(pred, 2), target).item() == pytest.approx(0.5)
    assert dice(scores(pred, 2), target, iou=True).item() == pytest.approx(1 / 3)
    empty = torch.zeros_like(target)
    assert dice(scores(empty, 2), empty).item() == 1.0 and dice(scores(empty, 2), empty, iou=True).item() == 1.0


def test_a_target_of_the_wrong_shape_is_named():
    with pytest.raises(FastbaseError, match=r"\(1, 4, 2, 2\) and \(1, 3, 3\)"):
        acc_segmentation(scores(PRED, 4), torch.zeros(1, 3, 3, dtype=torch.long))


def test_mean_iou_sums_intersections_and_unions_over_the_batches():
    metric = MeanIoU()
    # batch 1: class 1 fills the image and is found everywhere
    metric.accumulate(scores(torch.ones(1, 2, 2, dtype=torch.long), 2), torch.ones(1, 2, 2, dtype=torch.long))
    # batch 2: one pixel of class 1, predicted as 0; the rest class 0, found
    target = torch.tensor([[[1, 0], [0, 0]]])
    metric.accumulate(scores(torch.zeros(1, 2, 2, dtype=torch.long), 2), target)
    # over the set: class 0: intersection 3, union 4; class 1: intersection 4, union 5
    assert metric.confusion.tolist() == [[3, 0], [1, 4]]
    assert metric.per_class.tolist() == pytest.approx([3 / 4, 4 / 5])
    assert metric.value.item() == pytest.approx((3 / 4 + 4 / 5) / 2)
    # the mean of per-batch mean IoUs would differ: batch 1 -> 1.0 (class 0 absent), batch 2 -> (3/4 + 0) / 2
    assert not math.isclose(metric.value.item(), (1.0 + 3 / 8) / 2)
    metric.reset()
    assert metric.value is None


def test_mean_iou_leaves_out_void_pixels_and_the_void_class():
    metric = MeanIoU(void_code=3)
    metric.accumulate(scores(PRED, 4), TARGET)
    # labelled pixels: (t0,p0), (t1,p1), (t1,p2). class 0: 1/1; class 1: 1/2; class 2: 0/1; class 3 void
    iou = metric.per_class
    assert iou[:3].tolist() == pytest.approx([1.0, 0.5, 0.0]) and math.isnan(iou[3])
    assert metric.value.item() == pytest.approx(0.5)
    assert metric.name == "mean_iou"


def test_cross_entropy_flat_is_the_mean_over_every_pixel():
    torch.manual_seed(0)
    logits, target = torch.randn(2, 3, 4, 5), torch.randint(0, 3, (2, 4, 5))
    flat = F.cross_entropy(logits.permute(0, 2, 3, 1).reshape(-1, 3), target.reshape(-1))
    loss = CrossEntropyFlat(axis=1)
    assert loss(logits, target).item() == pytest.approx(flat.item(), rel=1e-6)
    assert loss(logits, target[:, None]).item() == pytest.approx(flat.item(), rel=1e-6)  # (bs, 1, H, W) masks
    per_pixel = per_item_loss(loss)(logits, target)
    assert per_pixel.shape == (2, 4, 5) and per_pixel.mean().item() == pytest.approx(flat.item(), rel=1e-6)
    assert torch.allclose(loss.activation(logits).sum(1), torch.ones(2, 4, 5))
    channels_last = CrossEntropyFlat(axis=-1)(logits.permute(0, 2, 3, 1), target)
    assert channels_last.item() == pytest.approx(flat.item(), rel=1e-6)
    with pytest.raises(FastbaseError, match="target should have shape"):
        loss(logits, target[:, :2])


def test_metrics_average_over_a_validation_set_through_the_metric_protocol():
    metric = AvgMetric(acc_segmentation)
    metric.reset()
    metric.accumulate(scores(PRED, 4), TARGET)
    metric.accumulate(scores(TARGET, 4), TARGET)
    assert metric.value.item() == pytest.approx((0.5 + 1.0) / 2)


def test_decode_preds_gives_a_class_map_per_image():
    ds = torch.utils.data.TensorDataset(torch.zeros(4, 3, 2, 2), torch.zeros(4, 2, 2, dtype=torch.long))
    ds.classes = ["a", "b", "c"]
    data = DataBunch.create(ds, ds, bs=2, num_workers=0, device="cpu")
    probs = scores(torch.tensor([[[2, 0], [1, 1]]]), 3)
    (class_map,) = data.decode_preds(probs)
    assert class_map.tolist() == [[2, 0], [1, 1]]


def test_sigmoid_range_stays_inside_its_bounds():
    layer = SigmoidRange(-1.0, 4.0)
    out = layer(torch.tensor([-100.0, 0.0, 100.0]))
    assert out.tolist() == pytest.approx([-1.0, 1.5, 4.0])
    with pytest.raises(FastbaseError, match="low < high"):
        SigmoidRange(2.0, 1.0)
