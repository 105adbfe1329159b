"""Layer 6: looking at a trained segmentation model: IoU per class, confusion between classes over
pixels, and the images with the largest losses drawn with their true and predicted masks.

`SegmentationInterpretation.from_learner(learn)` runs `learn.get_preds(with_loss=True)` once and
keeps class maps (n, H, W), the target masks and one loss per image (the mean of the per-pixel
losses); the probabilities are dropped after the arg-max, so a set costs one byte-sized map per
image instead of one float per class per pixel. It is a `ClassificationInterpretation` whose items
are pixels for the counts (`confusion_matrix`, `most_confused`, `plot_confusion_matrix`) and
images for the losses (`top_losses`, `plot_top_losses`).
"""
from __future__ import annotations

import torch

from ...core import ifnone
from ...data import DatasetType
from ...figures import finish_figure, subplots
from ...interpret import ClassificationInterpretation, InterpretationError, as_ds_type
from .metrics import iou_per_class, pixel_confusion
from .show import show_mask

__all__ = ["SegmentationInterpretation"]

TOP_LOSSES_TITLE = "image / true mask / predicted mask (loss, pixel accuracy)"


class SegmentationInterpretation(ClassificationInterpretation):
    """Predictions of a segmentation model on one data set, and views of its mistakes.

    Attributes: `pred_class` (n, H, W) predicted class maps, `y_true` (n, H, W) target masks,
    `losses` (n,) one loss per image, `classes` (names, or indexes when the data have none),
    `void_code` (a target value left out of the counts, e.g. CamVid's 'Void'), `learn`, `data`,
    `ds_type`. `preds` may be given as probabilities (n, c, H, W) or as class maps (n, H, W), as
    `learn.get_preds()` or its arg-max give them."""

    def __init__(self, learn, preds: torch.Tensor, y_true: torch.Tensor, losses: torch.Tensor,
                 ds_type: DatasetType = DatasetType.Valid, void_code: int | None = None):
        if y_true.dim() == 4 and y_true.shape[1] == 1:
            y_true = y_true[:, 0]  # masks as (n, 1, H, W)
        classes = learn.data.classes
        if preds.dim() == 4 and preds.shape[0] == y_true.shape[0]:
            n_classes, pred_class = preds.shape[1], preds.argmax(dim=1)
        elif preds.dim() == 3 and classes is not None:
            n_classes, pred_class = len(classes), preds.long()
        else:
            raise InterpretationError(
                f"SegmentationInterpretation needs predictions (n, classes, H, W), or class maps (n, H, W) with "
                f"classes on the data, and target masks (n, H, W); got predictions {tuple(preds.shape)} and "
                f"targets {tuple(y_true.shape)}.")
        if y_true.dim() != 3 or pred_class.shape != y_true.shape:
            raise InterpretationError(f"The target masks {tuple(y_true.shape)} do not match the predicted class maps "
                                      f"{tuple(pred_class.shape)}: both should be (n, H, W).")
        self.learn, self.data, self.ds_type = learn, learn.data, as_ds_type(ds_type)
        self.preds = None  # the probabilities are not kept: see the module docstring
        self.pred_class, self.y_true = pred_class.to(torch.uint8 if n_classes <= 256 else torch.long), y_true.long()
        self.losses = losses.float().reshape(len(y_true), -1).mean(1)
        self.classes = list(classes) if classes is not None else list(range(n_classes))
        if len(self.classes) != n_classes:
            raise InterpretationError(f"The model gives {n_classes} class scores per pixel but the data have "
                                      f"{len(self.classes)} classes.")
        if void_code is not None and not 0 <= void_code < n_classes:
            raise InterpretationError(f"void_code={void_code} is not a class index (0..{n_classes - 1}); pass the "
                                      "index of the void class in the codes, e.g. codes.index('Void').")
        self.void_code = void_code

    @classmethod
    def from_learner(cls, learn, ds_type=DatasetType.Valid, void_code: int | None = None
                     ) -> SegmentationInterpretation:
        """Predictions of `learn` on `ds_type` ('valid', 'train', 'test' or a DatasetType) with one
        loss per image; `void_code` (e.g. `codes.index('Void')`) leaves those pixels out of the counts."""
        ds_type = as_ds_type(ds_type)
        read_as = DatasetType.Fix if ds_type == DatasetType.Train else ds_type
        preds, y_true, losses = learn.get_preds(read_as, with_loss=True)
        if y_true is None:
            raise InterpretationError(f"The {ds_type.name} set has no masks, so there are no losses or mistakes to "
                                      "show. Interpret the validation set (the default) or the training set.")
        return cls(learn, preds, y_true, losses, ds_type, void_code)

    # --- numbers (pixels) ---------------------------------------------------------------------------
    def confusion_matrix(self):
        """(c, c) int array of pixel counts over the set: row = actual class, column = predicted
        class; pixels whose target is `void_code` (or not a class index) are left out."""
        return pixel_confusion(self.pred_class, self.y_true, len(self.classes), self.void_code).numpy()

    def per_class_iou(self):
        """IoU of each class over the whole set with its pixel counts: a pandas DataFrame when pandas
        is installed (else a list of dicts), one row per class with columns `class`, `iou` (NaN for
        a class neither present nor predicted, and for the void class), `pixels` (actual) and
        `predicted`, in class order."""
        counts = torch.from_numpy(self.confusion_matrix())
        iou = iou_per_class(counts, self.void_code)
        rows = [{"class": name, "iou": float(iou[i]), "pixels": int(counts[i].sum()),
                 "predicted": int(counts[:, i].sum())} for i, name in enumerate(self.classes)]
        try:
            import pandas as pd
        except ImportError:
            return rows
        return pd.DataFrame(rows, columns=["class", "iou", "pixels", "predicted"])

    def mean_iou(self) -> float:
        """Mean of the per-class IoUs over the classes present or predicted (`MeanIoU` over the set)."""
        return float(iou_per_class(torch.from_numpy(self.confusion_matrix()), self.void_code).nanmean())

    def pixel_accuracy(self) -> torch.Tensor:
        """(n,) share of each image's labelled pixels (target not `void_code`) predicted right."""
        labelled = torch.ones_like(self.y_true, dtype=torch.bool) if self.void_code is None \
            else self.y_true != self.void_code
        right = ((self.pred_class.long() == self.y_true) & labelled).flatten(1).sum(1)
        return right.float() / labelled.flatten(1).sum(1).clamp_min(1).float()

    # --- plots ------------------------------------------------------------------------------------
    def plot_top_losses(self, k: int = 4, largest: bool = True, figsize=None, alpha: float = 0.5, cmap="tab20",
                        legend: bool = False, return_fig: bool | None = None, save_to=None):
        """The `k` images with the largest (or smallest) losses, one row each: the image as the model
        saw it (denormalised), then the true and the predicted mask over it (`show_mask`, one colour
        per class in both). The row's title gives the image's index, loss and pixel accuracy;
        `legend` names the classes in each mask. Returns the Figure."""
        losses, idxs = self.top_losses(k, largest)
        if len(idxs) == 0:
            raise InterpretationError("No images to show: k must be at least 1 and the data set not empty.")
        x = self.model_inputs(idxs.tolist())
        if x.dim() != 4 or x.shape[1] not in (1, 3):
            raise InterpretationError(f"plot_top_losses draws images, so the inputs must be (n, 1 or 3, H, W); this "
                                      f"data gives {tuple(x.shape)}. top_losses() gives the losses and indexes.")
        images = self.data.denorm(x).detach().float().clamp(0, 1).cpu()
        if images.shape[1] == 1:
            images = images.expand(-1, 3, -1, -1)
        accuracy = self.pixel_accuracy()
        fig, axes = subplots(len(idxs), 3, figsize=ifnone(figsize, (9, 3 * len(idxs) + 0.4)), squeeze=False)
        fig.suptitle(TOP_LOSSES_TITLE)
        for row, (i, loss) in enumerate(zip(idxs.tolist(), losses.tolist())):
            image = images[row]
            axes[row, 0].imshow(image.permute(1, 2, 0).numpy())
            axes[row, 0].axis("off")
            axes[row, 0].set_title(f"#{i}: loss {loss:.3f}, accuracy {float(accuracy[i]):.3f}")
            masks = ((axes[row, 1], self.y_true[i], "true"), (axes[row, 2], self.pred_class[i], "predicted"))
            for ax, mask, name in masks:
                show_mask(mask, ax=ax, image=image, alpha=alpha, cmap=cmap, classes=self.classes, legend=legend,
                          title=name)
        fig.tight_layout()
        return finish_figure(fig, return_fig, save_to)

    def __repr__(self):
        return (f"SegmentationInterpretation({len(self)} images of the {self.ds_type.name} set, "
                f"{len(self.classes)} classes, mean IoU {self.mean_iou():.4f})")
