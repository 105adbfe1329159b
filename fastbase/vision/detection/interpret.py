"""Layer 6: interpreting a detector: `ObjectDetectionInterpretation` runs the Learner over a set once
and keeps each image's true boxes and detections; `ap_table()` gives the AP of each class (COCO's
evaluation through torchmetrics), `plot_worst()` draws the images with the most missed true boxes
and false positives, truth in green and detections in red. `show_boxes_results` draws the truth and
the predictions of one batch (`learn.show_results`).
"""
from __future__ import annotations

import torch
from torchvision.ops import box_iou

from ...data import DatasetType
from ...figures import finish_figure, subplots
from ...loop import eval_grad_mode
from ..image import Image
from .items import ImageBBox
from .metrics import UNIT_HW, coco_map
from .model import boxes_to_targets, detections_to_boxes

__all__ = ["ObjectDetectionInterpretation", "show_boxes_results"]


def _run(learn, dl):
    """`(images uint8, targets, detections)` of every batch of `dl`, on the CPU, in order."""
    data, images, targets, dets = learn.data, [], [], []
    learn.model.eval()
    with eval_grad_mode(learn.model):
        for x, (boxes, labels) in dl:
            out = learn.model(x).detections.float().cpu()
            images.append((data.denorm(x).clamp(0, 1) * 255).round().to(torch.uint8).cpu())
            targets += [(b[lbl > 0].cpu(), lbl[lbl > 0].cpu()) for b, lbl in zip(boxes, labels)]
            dets += list(out)
    return torch.cat(images), targets, dets


class ObjectDetectionInterpretation:
    """The detections of `learn` on the `ds_type` set with their truth: `images` (uint8, as the model
    saw them), `targets` (per image `(boxes (b, 4) scaled, labels)`) and `detections` (per image the
    `Detector`'s `(n, 6)` rows)."""

    def __init__(self, learn, images, targets, detections, ds_type: DatasetType = DatasetType.Valid):
        self.learn, self.images, self.targets, self.detections = learn, images, targets, detections
        self.ds_type, self.classes = ds_type, list(learn.data.classes)

    @classmethod
    def from_learner(cls, learn, ds_type: DatasetType = DatasetType.Valid) -> ObjectDetectionInterpretation:
        """One pass of `learn` over the `ds_type` items, in order."""
        dl = learn.data.dl(ds_type).new(shuffle=False, drop_last=False)
        return cls(learn, *_run(learn, dl), ds_type=ds_type)

    def _coco(self, iou: float | None):
        metric = coco_map(iou, class_metrics=True)
        dets = torch.stack(self.detections) if self.detections else torch.zeros(0, 0, 6)
        boxes = [t[0] for t in self.targets]
        n = max([len(b) for b in boxes] + [1])
        padded_b, padded_l = torch.zeros(len(boxes), n, 4), torch.zeros(len(boxes), n, dtype=torch.long)
        for i, (b, lbl) in enumerate(self.targets):
            padded_b[i, :len(b)], padded_l[i, :len(lbl)] = b, lbl
        metric.update(detections_to_boxes(dets, UNIT_HW), boxes_to_targets(padded_b, padded_l, UNIT_HW))
        return metric.compute()

    def ap_table(self):
        """A DataFrame of the AP of each class with true boxes in the set (rows) at IoU 0.5 and over
        0.5:0.95, with its number of true boxes; the last row is the mean (mAP)."""
        import pandas as pd
        res50, res = self._coco(0.5), self._coco(None)
        counts = torch.bincount(torch.cat([t[1] for t in self.targets] + [torch.zeros(0, dtype=torch.long)]),
                                minlength=len(self.classes))
        ids = res["classes"].reshape(-1).tolist()
        ap50, ap = res50["map_per_class"].reshape(-1).tolist(), res["map_per_class"].reshape(-1).tolist()
        rows = [{"class": self.classes[c], "n_true": int(counts[c]), "AP@0.5": a50, "AP@0.5:0.95": a}
                for c, a50, a in zip(ids, ap50, ap) if 0 < c < len(self.classes)]
        rows.append({"class": "mean (mAP)", "n_true": int(counts[1:].sum()), "AP@0.5": float(res50["map"]),
                     "AP@0.5:0.95": float(res["map"])})
        return pd.DataFrame(rows)

    def mistakes(self, thresh: float = 0.5, iou: float = 0.5) -> list[tuple[int, int]]:
        """Per image `(missed, false_positives)`: true boxes no detection of their class scoring at
        least `thresh` overlaps by IoU `iou`, and such detections that overlap no true box of their
        class (each true box matched once, best scores first)."""
        out = []
        for (boxes, labels), d in zip(self.targets, self.detections):
            d = d[d[:, 4] >= max(thresh, 1e-12)]
            d = d[d[:, 4].argsort(descending=True)]
            ious = box_iou(d[:, :4], boxes) if len(d) and len(boxes) else torch.zeros(len(d), len(boxes))
            matched, fp = torch.zeros(len(boxes), dtype=torch.bool), 0
            for k in range(len(d)):
                ok = (ious[k] >= iou) & (labels == d[k, 5].long()) & ~matched
                if ok.any():
                    matched[torch.nonzero(ok)[0, 0]] = True
                else:
                    fp += 1
            out.append((int((~matched).sum()), fp))
        return out

    def plot_worst(self, k: int = 9, thresh: float = 0.5, iou: float = 0.5, figsize=None,
                   return_fig: bool | None = None, save_to=None):
        """The `k` images with the most mistakes (`mistakes`: missed plus false positives), truth in
        green and detections scoring at least `thresh` in red, titled 'missed / false positives'."""
        errs = self.mistakes(thresh, iou)
        order = sorted(range(len(errs)), key=lambda i: -sum(errs[i]))[:k]
        cols = max(1, min(3, len(order)))
        rows = max(1, -(-len(order) // cols))
        fig, axes = subplots(rows, cols, figsize=figsize or (3 * cols, 3 * rows), squeeze=False)
        for ax in axes.flat:
            ax.axis("off")
        for ax, i in zip(axes.flat, order):
            img = self.images[i]
            hw = tuple(img.shape[-2:])
            Image(img.float() / 255).show(ax=ax, y=ImageBBox(*self.targets[i], hw, self.classes), color="lime")
            d = self.detections[i]
            d = d[d[:, 4] >= max(thresh, 1e-12)]
            ImageBBox(d[:, :4], d[:, 5].long(), hw, self.classes, scores=d[:, 4]).draw(ax, color="red")
            ax.set_title(f"{errs[i][0]} missed / {errs[i][1]} false pos.")
        fig.tight_layout()
        return finish_figure(fig, return_fig, save_to)


def show_boxes_results(learn, ds_type: DatasetType = DatasetType.Valid, rows: int = 3, figsize=None,
                       thresh: float = 0.5, return_fig: bool | None = None, save_to=None):
    """Images of the first `ds_type` batch in two columns: the true boxes, and `learn`'s detections
    scoring at least `thresh`, as fastai v1 draws results (target, prediction)."""
    x, (boxes, labels) = learn.data.one_batch(ds_type, detach=False, cpu=False)
    learn.model.eval()
    with eval_grad_mode(learn.model):
        dets = learn.model(x).detections.float().cpu()
    x, classes = learn.data.denorm(x).clamp(0, 1).cpu(), list(learn.data.classes)
    n = min(len(x), rows)
    fig, axes = subplots(n, 2, figsize=figsize or (6, 3 * n), squeeze=False)
    for row, img, b, lbl, d in zip(axes, x, boxes.cpu(), labels.cpu(), dets):
        hw = tuple(img.shape[-2:])
        Image(img).show(ax=row[0], y=ImageBBox(b[lbl > 0], lbl[lbl > 0], hw, classes), color="lime")
        d = d[d[:, 4] >= max(thresh, 1e-12)]
        Image(img).show(ax=row[1], y=ImageBBox(d[:, :4], d[:, 5].long(), hw, classes, scores=d[:, 4]))
    axes[0, 0].set_title("target")
    axes[0, 1].set_title("prediction")
    fig.tight_layout()
    return finish_figure(fig, return_fig, save_to)
