"""Layer 6: segmentation metrics: pixel accuracy (`acc_segmentation`, `foreground_acc`), `dice`,
and `MeanIoU` accumulated over the whole set, with the pixel counting they and
`SegmentationInterpretation` share (`pixel_confusion`, `iou_per_class`).

Inputs are (bs, c, H, W) scores, targets (bs, H, W) or (bs, 1, H, W) class indexes.
"""
from __future__ import annotations

import torch

from ...core import FastbaseError
from ...metrics import Metric

__all__ = ["MeanIoU", "acc_segmentation", "dice", "foreground_acc", "iou_per_class", "pixel_confusion"]


def _pixel_target(input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """`target` as (bs, H, W), checked against the (bs, c, H, W) `input`."""
    if target.dim() == input.dim() and target.shape[1] == 1:
        target = target.squeeze(1)
    if target.shape != input.shape[:1] + input.shape[2:]:
        raise FastbaseError(f"A segmentation metric needs scores (bs, c, H, W) and a target (bs, H, W) of class "
                            f"indexes; got {tuple(input.shape)} and {tuple(target.shape)}.")
    return target


def acc_segmentation(input: torch.Tensor, target: torch.Tensor, void_code: int | None = None) -> torch.Tensor:
    """Pixel accuracy: the fraction of pixels whose arg-max class (dim 1) is the target, leaving out
    the pixels whose target is `void_code` (unlabelled). A batch with no labelled pixel counts 0.

    The course's CamVid metric is this with CamVid's void code: `acc_camvid` of lesson 3 is
    `partial(acc_segmentation, void_code=codes.index('Void'))` (30 for camvid_tiny's codes.txt). As a
    metric it is averaged over batches weighted by their size (as v1 did), so batches with different
    numbers of void pixels weigh by images, not pixels."""
    target = _pixel_target(input, target)
    correct = input.argmax(dim=1) == target
    if void_code is None:
        return correct.float().mean()
    labelled = target != void_code
    return (correct & labelled).sum().float() / labelled.sum().clamp_min(1).float()  # no sync: no boolean indexing


def foreground_acc(input: torch.Tensor, target: torch.Tensor, bkg_idx: int = 0) -> torch.Tensor:
    """Pixel accuracy over the pixels whose target is not the background class `bkg_idx`
    (`acc_segmentation` with `void_code=bkg_idx`)."""
    return acc_segmentation(input, target, void_code=bkg_idx)


def dice(input: torch.Tensor, targs: torch.Tensor, iou: bool = False, eps: float = 1e-8) -> torch.Tensor:
    """Dice coefficient of a binary segmentation over the batch, fastai v1's metric: class 1 is the
    foreground, `2|P∩T| / (|P| + |T|)` with P the pixels predicted 1 (arg-max over dim 1) and T the
    target's 1 pixels; with `iou`, the IoU (Jaccard index) `|P∩T| / |P∪T|`. 1 when both are empty.
    Targets must be 0/1. For several classes, or one value over the whole set, use `MeanIoU`."""
    targs = _pixel_target(input, targs)
    n = targs.shape[0]
    pred, targs = input.argmax(dim=1).view(n, -1), targs.reshape(n, -1)
    intersect = (pred * targs).sum().float()
    total = (pred + targs).sum().float()
    value = intersect / (total - intersect + eps) if iou else 2.0 * intersect / total.clamp_min(eps)
    return torch.where(total > 0, value, torch.ones_like(value))


class MeanIoU(Metric):
    """Intersection over union per class, accumulated over the whole set: a confusion matrix of
    (target, predicted class) pixel counts summed on the device over every batch, then per class
    `intersection / union` from the sums, and `value` their mean over the classes that occur (in
    the targets or the predictions). Not a mean of per-batch IoUs, which would weigh a batch where a
    class has one pixel like one where it fills the image.

    Input (bs, c, H, W) scores, target (bs, H, W) or (bs, 1, H, W). Pixels whose target is
    `void_code`, or outside 0..c-1, are left out, and the void class out of the mean. After a run:
    `per_class` (c,) IoUs (NaN for a class that never occurs) and `confusion` (c, c)."""

    def __init__(self, void_code: int | None = None):
        self.void_code = void_code
        self.reset()

    def reset(self) -> None:
        self._counts: torch.Tensor | None = None

    def accumulate(self, pred: torch.Tensor, *yb) -> None:
        target = _pixel_target(pred, yb[0])
        counts = pixel_confusion(pred.argmax(dim=1), target, pred.shape[1], self.void_code)
        self._counts = counts if self._counts is None else self._counts + counts

    @property
    def confusion(self) -> torch.Tensor | None:
        """(c, c) pixel counts: row = target class, column = predicted class."""
        return self._counts

    @property
    def per_class(self) -> torch.Tensor | None:
        return None if self._counts is None else iou_per_class(self._counts, self.void_code)

    @property
    def value(self):
        iou = self.per_class
        return None if iou is None else iou.nanmean()

    @property
    def name(self) -> str:
        return "mean_iou"


def pixel_confusion(pred_class: torch.Tensor, target: torch.Tensor, n_classes: int,
                    void_code: int | None = None) -> torch.Tensor:
    """(c, c) long tensor of pixel counts, row = target class, column = predicted class, from class
    maps of one shape (any, e.g. (bs, H, W)). Pixels whose target is `void_code` or outside
    0..c-1 are left out. Counted on the tensors' device without a sync (no boolean indexing)."""
    target, pred_class, c = target.reshape(-1).long(), pred_class.reshape(-1).long(), int(n_classes)
    keep = (target >= 0) & (target < c)
    if void_code is not None:
        keep &= target != void_code
    cells = torch.where(keep, target * c + pred_class, c * c)  # c*c: the bin of left-out pixels
    counts = torch.zeros(c * c + 1, dtype=torch.long, device=target.device)
    counts.index_add_(0, cells, torch.ones_like(cells))  # a bincount that needs no device sync
    return counts[:-1].view(c, c)


def iou_per_class(confusion: torch.Tensor, void_code: int | None = None) -> torch.Tensor:
    """(c,) IoU per class from a (c, c) `pixel_confusion`: intersection / union, NaN for a class
    that neither occurs nor is predicted, and for the void class."""
    counts = confusion.double()
    intersection = counts.diagonal()
    union = counts.sum(0) + counts.sum(1) - intersection
    iou = torch.where(union > 0, intersection / union.clamp_min(1), torch.full_like(union, float("nan")))
    if void_code is not None and 0 <= void_code < len(iou):
        iou[void_code] = float("nan")
    return iou.float()
