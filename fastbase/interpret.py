"""Layer 5: looking at a trained classifier: top losses, confusion matrix, most confused pairs.

`ClassificationInterpretation.from_learner(learn)` runs `learn.get_preds(with_loss=True)` once and
keeps the probabilities, targets and per-item losses; everything else is computed from them. The
numbers work for any single-label classifier, whatever the task; how the top losses are drawn is
the task's (`data.plot_top_losses`, the task contract of `fastbase.data.task`): images in a grid
with an optional Grad-CAM heatmap (`fastbase.vision.interpret`), a table's rows as a DataFrame.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Subset

from .core import ifnone
from .data import DatasetType
from .data.task import InterpretationError
from .figures import finish_figure, subplots

__all__ = ["ClassConfusion", "ClassificationInterpretation", "InterpretationError",
           "MultiLabelClassificationInterpretation", "TopLosses", "as_ds_type"]

_NO_LABELS = ("The {} set has no labels, so there are no losses or mistakes to show. Interpret the validation "
              "set (the default) or the training set (ds_type='train').")


class TopLosses(NamedTuple):
    """Like `torch.topk`'s result: `values` (the losses) and `indices` (item indexes in the data set)."""
    values: torch.Tensor
    indices: torch.Tensor


def as_ds_type(ds_type) -> DatasetType:
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
        if learn.data.multi_label or y_true.dim() != 1 or preds.dim() != 2:
            raise InterpretationError(
                f"ClassificationInterpretation needs single-label classification (predictions (n, classes) and "
                f"one class index per item); got predictions {tuple(preds.shape)} and targets "
                f"{tuple(y_true.shape)}{' from multi-label data' if learn.data.multi_label else ''}. For multi-label "
                "data, threshold learn.get_preds() yourself.")
        self.learn = learn
        self.data = learn.data
        self.ds_type = as_ds_type(ds_type)
        self.preds = preds.float()
        self.y_true = y_true.long()
        self.losses = losses.float().reshape(-1)
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
        ds_type = as_ds_type(ds_type)
        if learn.data.multi_label:
            raise InterpretationError("ClassificationInterpretation is for single-label data; this Learner's data "
                                      "are multi-label. Threshold learn.get_preds() yourself.")
        read_as = DatasetType.Fix if ds_type == DatasetType.Train else ds_type
        if not learn.data.has_labels(read_as):
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

    def plot_top_losses(self, k: int = 9, largest: bool = True, **kwargs):
        """The `k` items with the largest (or smallest) losses, as the task's data show them
        (`data.plot_top_losses`): images in a grid titled 'prediction/actual / loss / probability of
        the actual class' (with `heatmap=True`, Grad-CAM over them), a table's rows as a DataFrame."""
        return self.data.plot_top_losses(self, k, largest, **kwargs)

    def plot_tab_top_losses(self, k: int = 9, largest: bool = True):
        """The `k` rows of a table with the largest (or smallest) losses, as a DataFrame: 'Prediction',
        'Actual', 'Loss', 'Probability' (of the actual class), then the row's inputs as a person reads
        them (category names, continuous values before normalisation) and its index in the data set."""
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

    @property
    def read_as(self) -> DatasetType:
        """The loader the items are read from: the Fix loader (in order, no augmentation) for the training set."""
        return DatasetType.Fix if self.ds_type == DatasetType.Train else self.ds_type

    def model_inputs(self, idxs: list[int]) -> torch.Tensor:
        """The model's inputs (normalised, on the device) for these items of the data set, in order."""
        dl = self.data.dl(self.read_as)
        loader = dl.new(dataset=Subset(dl.dataset, idxs), batch_size=len(idxs), shuffle=False, drop_last=False,
                        num_workers=0)
        return next(iter(loader))[0]

    def __repr__(self):
        return (f"ClassificationInterpretation({len(self)} items of the {self.ds_type.name} set, "
                f"{len(self.classes)} classes, accuracy {float((self.pred_class == self.y_true).float().mean()):.4f})")


class MultiLabelClassificationInterpretation(ClassificationInterpretation):
    """Predictions of a multi-label classifier on one data set, and views of its mistakes.

    `preds` (n, c) probabilities (the sigmoid of the outputs; `sigmoid=True` applies it to raw outputs
    given here), `y_true` (n, c) 0/1 targets, `pred_class` (n, c) booleans (`preds > thresh`), `losses`
    (n,) per-item losses (the mean over labels). `top_losses` and `model_inputs` work as for one label;
    `confusion_matrix()` is one 2x2 matrix per label."""

    def __init__(self, learn, preds: torch.Tensor, y_true: torch.Tensor, losses: torch.Tensor,
                 ds_type: DatasetType = DatasetType.Valid, sigmoid: bool = True, thresh: float = 0.3):
        if preds.dim() != 2 or preds.shape != y_true.shape:
            raise InterpretationError(f"MultiLabelClassificationInterpretation needs predictions and 0/1 targets "
                                      f"of the same shape (n, labels); got {tuple(preds.shape)} and "
                                      f"{tuple(y_true.shape)}. For single-label data use "
                                      "ClassificationInterpretation.")
        self.learn, self.data, self.ds_type, self.thresh = learn, learn.data, as_ds_type(ds_type), thresh
        self.preds = preds.float().sigmoid() if sigmoid else preds.float()
        self.y_true = y_true.bool()
        self.losses = losses.float().reshape(len(preds), -1).mean(1)
        self.pred_class = self.preds > thresh
        classes = self.data.classes
        self.classes = list(classes) if classes is not None else list(range(preds.shape[1]))

    @classmethod
    def from_learner(cls, learn, ds_type=DatasetType.Valid, sigmoid: bool = True, thresh: float = 0.3
                     ) -> MultiLabelClassificationInterpretation:
        """Predictions of `learn` on `ds_type` with their losses. `get_preds` has already applied the
        loss's activation (the sigmoid), so `sigmoid` is kept for fastai v1's signature."""
        ds_type = as_ds_type(ds_type)
        read_as = DatasetType.Fix if ds_type == DatasetType.Train else ds_type
        if not learn.data.has_labels(read_as):
            raise InterpretationError(_NO_LABELS.format(ds_type.name))
        preds, y_true, losses = learn.get_preds(read_as, with_loss=True)
        return cls(learn, preds, y_true, losses, ds_type, sigmoid=False, thresh=thresh)

    def confusion_matrix(self) -> np.ndarray:
        """(c, 2, 2) int array, one matrix per label as scikit-learn's `multilabel_confusion_matrix`:
        [[true negatives, false positives], [false negatives, true positives]]."""
        truth, pred = self.y_true.long(), self.pred_class.long()
        cells = [((1 - truth) * (1 - pred)), ((1 - truth) * pred), (truth * (1 - pred)), (truth * pred)]
        return torch.stack([c.sum(0) for c in cells], dim=1).reshape(-1, 2, 2).numpy().astype(np.int64)

    def most_confused(self, min_val: int = 1) -> list[tuple]:
        """(label, missed, wrongly predicted) for every label with at least `min_val` mistakes, most first."""
        cm = self.confusion_matrix()
        rows = [(self.classes[i], int(cm[i, 1, 0]), int(cm[i, 0, 1])) for i in range(len(cm))]
        return sorted([r for r in rows if r[1] + r[2] >= min_val], key=lambda r: r[1] + r[2], reverse=True)

    def plot_confusion_matrix(self, *args, **kwargs):
        raise InterpretationError("A multi-label confusion matrix is one 2x2 matrix per label: read "
                                  "interp.confusion_matrix() or interp.most_confused().")

    def labels_of(self, i: int) -> tuple[list, list]:
        """(predicted labels, actual labels) of item `i`."""
        return ([self.classes[j] for j in self.pred_class[i].nonzero().flatten().tolist()],
                [self.classes[j] for j in self.y_true[i].nonzero().flatten().tolist()])

    def plot_multi_top_losses(self, samples: int = 3, figsize=(8, 8), save_misclassified: bool = False, **kwargs):
        """The `samples` items with the largest losses, as the task draws them (images: each titled
        with its predicted and actual labels and its loss). With `save_misclassified`, also returns
        [(index, predicted labels, actual labels, loss)] of those whose predicted labels are wrong."""
        fig = self.data.plot_multi_top_losses(self, samples, figsize=figsize, **kwargs)
        if not save_misclassified:
            return fig
        losses, idxs = self.top_losses(samples)
        wrong = [(int(i), *self.labels_of(int(i)), float(loss)) for loss, i in zip(losses, idxs)
                 if bool((self.pred_class[int(i)] != self.y_true[int(i)]).any())]
        return fig, wrong


class ClassConfusion:
    """The items of chosen confused pairs of classes: for each (actual, predicted) pair, up to
    `cut_off` item indexes, largest loss first, shown as the task shows items (images in a grid, a
    table's rows). `classlist`: class names whose every ordered pair is looked at, or with
    `is_ordered` the (actual, predicted) pairs themselves. `varlist`: the table columns to keep. In a
    notebook the object displays its views; `show()` returns them as {pair: Figure or DataFrame}."""

    def __init__(self, interp: ClassificationInterpretation, classlist, is_ordered: bool = False,
                 cut_off: int = 100, varlist=None, figsize=(8, 8)):
        unknown = [c for c in (np.ravel(classlist).tolist()) if c not in interp.classes]
        if unknown:
            raise InterpretationError(f"ClassConfusion: {unknown} are not classes of this data; its classes are "
                                      f"{interp.classes}.")
        index = {c: i for i, c in enumerate(interp.classes)}
        pairs = [tuple(p) for p in classlist] if is_ordered else \
            [(a, b) for a in classlist for b in classlist if a != b]
        self.interp, self.varlist, self.figsize = interp, varlist, figsize
        order = interp.top_losses().indices
        self.indices = {}
        for actual, predicted in pairs:
            hit = (interp.y_true[order] == index[actual]) & (interp.pred_class[order] == index[predicted])
            self.indices[(actual, predicted)] = order[hit][:cut_off].tolist()

    def show(self) -> dict:
        """{(actual, predicted): the task's view of those items} for every pair with at least one item."""
        return {pair: self.interp.data.show_confused(self.interp, idxs, f"actual {pair[0]} / predicted {pair[1]}",
                                                     figsize=self.figsize, varlist=self.varlist)
                for pair, idxs in self.indices.items() if idxs}

    def _ipython_display_(self):
        from IPython.display import display

        for view in self.show().values():
            display(view)

    def __repr__(self):
        return f"ClassConfusion({ {pair: len(idxs) for pair, idxs in self.indices.items()} })"
