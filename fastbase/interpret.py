"""Layer 7: looking at a trained classifier: top losses, confusion matrix, most confused pairs.

`ClassificationInterpretation.from_learner(learn)` runs `learn.get_preds(with_loss=True)` once and
keeps the probabilities, targets and per-item losses; everything else is computed from them. The
numbers work for any single-label classifier; `plot_top_losses` draws images (an ImageDataBunch),
and with `heatmap=True` overlays a Grad-CAM map (`grad_cam`); for a table it gives the rows as a
DataFrame (`plot_tab_top_losses`).
"""
from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Subset

from .core import FastbaseError, ifnone
from .data import DatasetType
from .figures import finish_figure, subplots
from .hooks import hook_output
from .vision.data import ImageDataBunch
from .vision.timm_models import TimmBody

__all__ = ["ClassificationInterpretation", "InterpretationError", "TopLosses", "cam_layer", "grad_cam"]

TOP_LOSSES_TITLE = "prediction/actual/loss/probability"
_NO_LABELS = ("The {} set has no labels, so there are no losses or mistakes to show. Interpret the validation "
              "set (the default) or the training set (ds_type='train').")


class InterpretationError(FastbaseError, ValueError):
    """The Learner or its data cannot be interpreted this way; the message says what would work."""


class TopLosses(NamedTuple):
    """Like `torch.topk`'s result: `values` (the losses) and `indices` (item indexes in the data set)."""
    values: torch.Tensor
    indices: torch.Tensor


def _as_ds_type(ds_type) -> DatasetType:
    if isinstance(ds_type, str):
        try:
            return DatasetType[ds_type.capitalize()]
        except KeyError:
            raise InterpretationError(f"Unknown ds_type {ds_type!r}; use one of "
                                      f"{[t.name.lower() for t in DatasetType]}.") from None
    return DatasetType(ds_type)


class ClassificationInterpretation:
    """Predictions of a single-label classifier on one data set, and views of its mistakes.

    Attributes: `preds` (n, c) probabilities (the loss's activation: softmax for cross-entropy),
    `y_true` (n,) class indexes, `pred_class` (n,) arg-max predictions, `losses` (n,) per-item
    losses, `classes` (names, or indexes when the data have none), `learn`, `data`, `ds_type`.
    `DatasetType.Train` reads the training items in order and without augmentation (the Fix loader),
    so that index i is item i of `data.train_ds`.
    """

    def __init__(self, learn, preds: torch.Tensor, y_true: torch.Tensor, losses: torch.Tensor,
                 ds_type: DatasetType = DatasetType.Valid):
        if getattr(learn.data, "multi_label", False) or y_true.dim() != 1 or preds.dim() != 2:
            raise InterpretationError(
                f"ClassificationInterpretation needs single-label classification (predictions (n, classes) and "
                f"one class index per item); got predictions {tuple(preds.shape)} and targets "
                f"{tuple(y_true.shape)}{' from multi-label data' if learn.data.multi_label else ''}. For multi-label "
                "data, threshold learn.get_preds() yourself.")
        self.learn, self.data, self.ds_type = learn, learn.data, _as_ds_type(ds_type)
        self.preds, self.y_true, self.losses = preds.float(), y_true.long(), losses.float().reshape(-1)
        self.pred_class = self.preds.argmax(dim=1)
        n_classes = self.preds.shape[1]
        classes = self.data.classes
        self.classes = list(classes) if classes is not None else list(range(n_classes))
        if len(self.classes) != n_classes or (len(self.y_true) and int(self.y_true.max()) >= n_classes):
            top = int(self.y_true.max()) if len(self.y_true) else None
            raise InterpretationError(f"The model gives {n_classes} outputs but the data have "
                                      f"{len(self.classes)} classes (targets up to {top}).")

    @classmethod
    def from_learner(cls, learn, ds_type=DatasetType.Valid, tta: bool = False) -> ClassificationInterpretation:
        """Predictions of `learn` on `ds_type` ('valid', 'train', 'test' or a DatasetType) with their
        losses. With `tta`, the probabilities of `learn.TTA` and their cross-entropy (-log p(actual))."""
        ds_type = _as_ds_type(ds_type)
        if learn.data.multi_label:
            raise InterpretationError("ClassificationInterpretation is for single-label data; this Learner's data "
                                      "are multi-label. Threshold learn.get_preds() yourself.")
        read_as = DatasetType.Fix if ds_type == DatasetType.Train else ds_type
        if ds_type == DatasetType.Test and not getattr(learn.data.dl(read_as).dataset, "labelled", False):
            raise InterpretationError(_NO_LABELS.format(ds_type.name))
        if tta:
            preds, y_true = learn.TTA(ds_type=read_as)
            losses = None if y_true is None else F.nll_loss(preds.clamp_min(1e-12).log(), y_true.long(),
                                                            reduction="none")
        else:
            preds, y_true, losses = learn.get_preds(read_as, with_loss=True)
        if y_true is None:
            raise InterpretationError(_NO_LABELS.format(ds_type.name))
        return cls(learn, preds, y_true, losses, ds_type)

    def __len__(self) -> int:
        return len(self.y_true)

    # --- numbers --------------------------------------------------------------------------------
    def top_losses(self, k: int | None = None, largest: bool = True) -> TopLosses:
        """The `k` (default: all) largest (or smallest) losses and their item indexes, like `torch.topk`.
        Equal losses keep the order of the items."""
        k = len(self) if k is None else min(int(k), len(self))
        if k < 0:
            raise InterpretationError(f"k must be >= 0, got {k}.")
        values, indices = torch.sort(self.losses, descending=largest, stable=True)
        return TopLosses(values[:k], indices[:k])

    def confusion_matrix(self) -> np.ndarray:
        """(c, c) int array of counts: row = actual class, column = predicted class."""
        n = len(self.classes)
        flat = (self.y_true * n + self.pred_class).numpy()
        return np.bincount(flat, minlength=n * n).reshape(n, n).astype(np.int64)

    def most_confused(self, min_val: int = 1) -> list[tuple]:
        """(actual, predicted, count) for every pair of different classes seen at least `min_val` times,
        most frequent first; ties keep the order (actual class index, then predicted class index)."""
        cm = self.confusion_matrix()
        pairs = [(self.classes[i], self.classes[j], int(cm[i, j]))
                 for i in range(len(cm)) for j in range(len(cm)) if i != j and cm[i, j] >= min_val]
        return sorted(pairs, key=lambda pair: pair[2], reverse=True)  # sorted is stable, also in reverse

    # --- plots ------------------------------------------------------------------------------------
    def plot_confusion_matrix(self, normalize: bool = False, title: str = "Confusion matrix", cmap="Blues",
                              figsize=None, dpi: int = 60, norm_dec: int = 2, plot_txt: bool = True,
                              return_fig: bool | None = None, save_to=None):
        """The confusion matrix as an image, counts (or with `normalize`, the share of each actual class)
        in the cells, class names on the axes (actual down, predicted across). Returns the Figure."""
        cm = self.confusion_matrix()
        shown = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1) if normalize else cm
        side = max(4.0, 0.45 * len(cm) + 2)
        fig, ax = subplots(figsize=ifnone(figsize, (side, side)), dpi=dpi)
        ax.imshow(shown, interpolation="nearest", cmap=cmap)
        ax.set_title(title)
        ticks = np.arange(len(cm))
        ax.set_xticks(ticks, labels=[str(c) for c in self.classes], rotation=90)
        ax.set_yticks(ticks, labels=[str(c) for c in self.classes])
        if plot_txt:
            threshold = shown.max() / 2.0
            for i in range(len(cm)):
                for j in range(len(cm)):
                    text = f"{shown[i, j]:.{norm_dec}f}" if normalize else f"{shown[i, j]}"
                    ax.text(j, i, text, ha="center", va="center",
                            color="white" if shown[i, j] > threshold else "black")
        ax.set(xlabel="Predicted", ylabel="Actual")
        ax.grid(False)
        fig.tight_layout()
        return finish_figure(fig, return_fig, save_to)

    def plot_top_losses(self, k: int = 9, largest: bool = True, figsize=None, heatmap: bool = False,
                        heatmap_class: str = "predicted", heatmap_layer: nn.Module | None = None, alpha: float = 0.6,
                        return_fig: bool | None = None, save_to=None):
        """The `k` items with the largest (or smallest) losses in a grid, as the model saw them
        (denormalised). Each title reads 'prediction/actual / loss / probability of the actual class'.
        `heatmap` overlays Grad-CAM for the `heatmap_class` ('predicted' or 'actual'): where the model
        looked, as seen by `heatmap_layer` (default: the body's output, see `cam_layer`; an earlier
        layer gives a finer map on small images). Returns the Figure."""
        if hasattr(self.data, "decoded_rows"):  # a table: its rows, not images
            return self.plot_tab_top_losses(k, largest)
        self._check_images()
        if heatmap_class not in ("predicted", "actual"):
            raise InterpretationError(f"heatmap_class must be 'predicted' or 'actual', got {heatmap_class!r}.")
        losses, idxs = self.top_losses(k, largest)
        if len(idxs) == 0:
            raise InterpretationError("No items to show: k must be at least 1 and the data set not empty.")
        x = self._model_inputs(idxs.tolist())
        images = self.data.denorm(x).detach().float().clamp(0, 1).cpu()
        cams = None
        if heatmap:
            targets = (self.pred_class if heatmap_class == "predicted" else self.y_true)[idxs]
            cams = grad_cam(self.learn.model, x, targets.to(x.device), layer=heatmap_layer)
        rows = math.ceil(math.sqrt(len(idxs)))
        cols = math.ceil(len(idxs) / rows)
        fig, axes = subplots(rows, cols, figsize=ifnone(figsize, (3 * cols, 3 * rows + 0.4)), squeeze=False)
        fig.suptitle(TOP_LOSSES_TITLE)
        for n, ax in enumerate(axes.flat):
            ax.axis("off")
            if n >= len(idxs):
                continue
            i = int(idxs[n])
            ax.imshow(images[n].permute(1, 2, 0).numpy())
            if cams is not None:
                ax.imshow(cams[n].numpy(), alpha=alpha, cmap="magma", interpolation="bilinear")
            actual, pred = int(self.y_true[i]), int(self.pred_class[i])
            ax.set_title(f"{self.classes[pred]}/{self.classes[actual]} / {float(losses[n]):.2f} / "
                         f"{float(self.preds[i, actual]):.2f}")
        fig.tight_layout()
        return finish_figure(fig, return_fig, save_to)

    def plot_tab_top_losses(self, k: int = 9, largest: bool = True):
        """The `k` rows of a table with the largest (or smallest) losses, as a DataFrame: 'Prediction',
        'Actual', 'Loss', 'Probability' (of the actual class), then the row's inputs as a person reads
        them (category names, continuous values before normalisation) and its index in the data set."""
        if not hasattr(self.data, "decoded_rows"):
            raise InterpretationError(f"plot_tab_top_losses shows rows of a table, so it needs a TabularDataBunch; this "
                                      f"Learner's data is a {type(self.data).__name__}. Use plot_top_losses.")
        losses, idxs = self.top_losses(k, largest)
        read_as = DatasetType.Fix if self.ds_type == DatasetType.Train else self.ds_type
        rows = self.data.decoded_rows(idxs.tolist(), read_as).drop(columns="target", errors="ignore")
        actual, pred = self.y_true[idxs], self.pred_class[idxs]
        front = {"Prediction": [self.classes[int(i)] for i in pred], "Actual": [self.classes[int(i)] for i in actual],
                 "Loss": losses.tolist(), "Probability": self.preds[idxs, actual].tolist()}
        for n, (name, values) in enumerate(front.items()):
            rows.insert(n, name, values)
        rows.insert(len(rows.columns), "index", idxs.tolist())
        return rows

    def _check_images(self) -> None:
        # imported here, not at the top: fastbase.vision's namespace imports this module

        if not isinstance(self.data, ImageDataBunch):
            raise InterpretationError(f"plot_top_losses draws images, so it needs an ImageDataBunch; this Learner's "
                                      f"data is a {type(self.data).__name__}. top_losses() gives the losses and "
                                      "item indexes (a table's rows: plot_tab_top_losses).")

    def _model_inputs(self, idxs: list[int]) -> torch.Tensor:
        """The model's inputs (normalised, on the device) for these items of the data set, in order."""
        read_as = DatasetType.Fix if self.ds_type == DatasetType.Train else self.ds_type
        dl = self.data.dl(read_as)
        loader = dl.new(dataset=Subset(dl.dataset, idxs), batch_size=len(idxs), shuffle=False, drop_last=False,
                        num_workers=0)
        return next(iter(loader))[0]

    def __repr__(self):
        return (f"ClassificationInterpretation({len(self)} items of the {self.ds_type.name} set, "
                f"{len(self.classes)} classes, accuracy {float((self.pred_class == self.y_true).float().mean()):.4f})")


# --- Grad-CAM ---------------------------------------------------------------------------------------
def cam_layer(model: nn.Module) -> nn.Module:
    """The layer whose output Grad-CAM weighs: the body (`model[0]`) of a cnn_learner model
    (`nn.Sequential(body, head)`), else the last `nn.Conv2d` of the model. A timm body's output is its
    last stage's map; a ViT-like timm body has no map, so it gets an error that says so."""
    if isinstance(model, nn.Sequential) and len(model) >= 2 and isinstance(model[0], TimmBody):
        if not model[0].spatial:
            raise InterpretationError(f"timm's {model[0].name} is a transformer: its body gives pooled tokens, not a "
                                      "spatial feature map, so Grad-CAM does not apply. Use heatmap=False (or pass "
                                      "layer= a module whose output is (n, channels, h, w)).")
        return model[0]
    if isinstance(model, nn.Sequential) and len(model) >= 2 and len(list(model[0].children())) > 0 \
            and any(isinstance(m, nn.Conv2d) for m in model[0].modules()):
        return model[0]
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise InterpretationError(f"{type(model).__name__} has no nn.Conv2d layer, so there is no feature map for a "
                                  "heatmap; use heatmap=False or pass layer= to grad_cam.")
    return convs[-1]


def grad_cam(model: nn.Module, x: torch.Tensor, targets: torch.Tensor, layer: nn.Module | None = None) -> torch.Tensor:
    """Grad-CAM maps (n, H, W) >= 0 for model inputs `x` (n, C, H, W) and class indexes `targets` (n,):
    the feature maps A (n, K, h, w) of `layer` (default `cam_layer(model)`), weighted by the mean
    gradient of each target's score over each map, summed over K, ReLU'd and upsampled to (H, W).

    Runs the model in eval mode; parameters' `.grad` are left untouched (the gradient is taken with
    respect to the feature maps only), and the model's training mode is restored."""
    layer = ifnone(layer, cam_layer(model))
    was_training = model.training
    model.eval()
    try:
        with hook_output(layer, detach=False) as hook, torch.enable_grad():  # stored maps stay in the graph
            out = model(x.detach().requires_grad_(True))  # so the feature maps are in the graph, even when frozen
            if not isinstance(hook.stored, torch.Tensor) or hook.stored.dim() != 4:
                raise InterpretationError(f"Grad-CAM needs a 4-d feature map (n, channels, h, w) from {type(layer).__name__}"
                                          "; pass layer= (a convolutional layer of the model).")
            score = out.gather(1, targets.long().view(-1, 1)).sum()
            grads = torch.autograd.grad(score, hook.stored)[0]
    finally:
        model.train(was_training)
    acts = hook.stored.detach()
    weights = grads.mean(dim=(2, 3), keepdim=True)
    cam = F.relu((weights * acts).sum(dim=1, keepdim=True))
    cam = F.interpolate(cam, size=tuple(x.shape[-2:]), mode="bilinear", align_corners=False).clamp_min(0)
    return cam[:, 0].detach().cpu()
