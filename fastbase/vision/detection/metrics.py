"""Layer 6: detection metrics: mean average precision from torchmetrics' `MeanAveragePrecision`
with the COCO evaluation backend (pycocotools), not a hand-written one. `MeanAP()` is COCO's mAP
over IoU 0.5:0.95, `MeanAP(iou=0.5)` the Pascal-style mAP@0.5; both read a `Detector`'s output and
the batch's boxes, on the CPU, and compute once over the whole validation set.
"""
from __future__ import annotations

import torch

from ...metric_base import Metric, MetricError
from .model import DetectorOutput, boxes_to_targets, detections_to_boxes

__all__ = ["MeanAP", "coco_map", "mean_ap"]

UNIT_HW = (1000, 1000)  # boxes are scaled to [-1, 1]; IoUs of axis-aligned boxes do not change with (h, w)


def coco_map(iou: float | None = None, class_metrics: bool = False):
    """torchmetrics' `MeanAveragePrecision` on boxes (x1 y1 x2 y2 pixels) with pycocotools, over the
    COCO IoU thresholds or only `iou`; `class_metrics` adds the per-class AP. A MetricError says how
    to install the `detection` extra when it is missing."""
    try:
        import pycocotools  # noqa: F401  (the backend torchmetrics loads by name)
        from torchmetrics.detection import MeanAveragePrecision
    except ImportError as e:
        raise MetricError("mAP is computed by torchmetrics with pycocotools, not installed: "
                          "pip install 'fastbase[detection]'.") from e
    return MeanAveragePrecision(box_format="xyxy", iou_type="bbox", backend="pycocotools",
                                iou_thresholds=None if iou is None else [iou], class_metrics=class_metrics)


class MeanAP(Metric):
    """mAP over the validation set (`iou=None`: COCO's 0.5:0.95; `iou=0.5`: mAP@0.5), named `map` or
    `map50` in the results table. Images without true boxes count as COCO counts them."""

    def __init__(self, iou: float | None = None):
        self.iou = iou
        self._map, self._batches = None, 0

    def reset(self) -> None:
        self._map, self._batches = coco_map(self.iou), 0

    def accumulate(self, pred, *yb) -> None:
        if not isinstance(pred, DetectorOutput) or len(yb) != 2:
            raise MetricError("MeanAP scores a Detector's output against the batch's (boxes, labels); "
                              f"got a {type(pred).__name__} and {len(yb)} target(s).")
        boxes, labels = yb
        hw, self._batches = UNIT_HW, self._batches + 1
        self._map.update([{k: v.cpu() for k, v in d.items()} for d in detections_to_boxes(pred.detections, hw)],
                         [{k: v.cpu() for k, v in t.items()} for t in boxes_to_targets(boxes, labels, hw)])

    @property
    def value(self):
        if self._map is None or not self._batches:  # nothing accumulated yet
            return torch.tensor(float("nan"))
        return torch.tensor(float(self._map.compute()["map"]))

    @property
    def name(self) -> str:
        return "map" if self.iou is None else f"map{round(self.iou * 100)}"


def mean_ap() -> list[MeanAP]:
    """The two metrics `detection_learner` reports: mAP@0.5 and mAP@0.5:0.95."""
    return [MeanAP(iou=0.5), MeanAP()]
