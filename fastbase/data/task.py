"""Layer 2: the task contract: what the engine (Learner, interpretation, export, deploy, serve) asks
of a task's data, as methods with defaults. `DataBunch` inherits them; a task's DataBunch overrides
what differs (images resize their inputs, segmentation decodes a class map, tables show rows), so
the engine never probes the data for attributes. docs/adding-a-task.md walks through it.

The rest of the contract lives on `DataBunch` itself: `one_item` (a raw item to a batch of one),
`decode_preds` (predictions to what a person reads), `item_files`, `export_state` /
`load_export_state`, `show_batch` and `show_results`.
"""
from __future__ import annotations

import torch

from ..core import FastbaseError
from .base import DataError, DatasetType
from .items import prediction_item

__all__ = ["InterpretationError", "TaskData"]


class InterpretationError(FastbaseError, ValueError):
    """The Learner or its data cannot be interpreted this way; the message says what would work."""


class TaskData:
    """The methods with defaults that a task's DataBunch may override (see the module docstring).

    `loss_func`: the loss the task calls for (None: the Learner picks one from the classes).
    `targets_to_model`: whether the model is called with the batch's targets after its inputs
    (`model(*xb, *yb)`, `Loop.model_args`) and computes its own losses, which `loss_func` then reads
    from its output (detection: torchvision's detectors return their training-mode loss dict);
    False: `model(*xb)` and the loss compares the output with the targets."""
    loss_func = None
    targets_to_model = False
    serves_own_answer = False  # True: `fastbase serve` answers with `serve_answer` though the data have classes

    def decode_prediction(self, probs: torch.Tensor, thresh: float = 0.5, regression: bool = False):
        """`(item, decoded tensor)` of one prediction `probs` (after the loss's activation), for
        `Learner.predict`: a Category, a MultiCategory (classes above `thresh`), or a FloatItem for
        `regression`. A task whose prediction is another kind of item (a mask) overrides it."""
        return prediction_item(probs, self.classes, self.multi_label, thresh, regression)

    def item_prediction(self, item, label):
        """`Learner.predict`'s item for the raw `item` it was asked about, from `decode_prediction`'s
        `label`: unchanged by default; a task whose predictions are coordinates on the model's input
        (points) gives them in the pixels of `item` itself."""
        return label

    def serve_answer(self, row: torch.Tensor, item_hw) -> dict:
        """`fastbase serve`'s JSON answer for one prediction `row` (after the loss's activation) of an
        uploaded image of `item_hw` (h, w), for data without classes or with `serves_own_answer`
        (classifiers get the class probabilities, from `serve`). The default refuses: a task answers
        only if it says how (points: their pixels on the upload; detection: its boxes)."""
        raise DataError(f"fastbase serve answers classifiers and tasks that say how to answer; a "
                        f"{type(self).__name__} without classes does not.")

    def serve_input(self) -> str:
        """What one `fastbase serve` request carries for this task: 'image' (an uploaded image file,
        the default) or 'text' (a JSON body `{"text": ...}`, which `one_item` takes as a raw text)."""
        return "image"

    def tta_dl(self, ds_type: DatasetType = DatasetType.Valid, scale: float = 1.35):
        """The loader `Learner.TTA` averages over: the `ds_type` items in order through the training
        loader's batch transforms. `scale` is for tasks that zoom (images); the default ignores it."""
        return self.train_dl.new(dataset=self.dl(ds_type).dataset, shuffle=False, drop_last=False)

    def has_labels(self, ds_type: DatasetType = DatasetType.Valid) -> bool:
        """Whether the `ds_type` items have targets (losses, mistakes): the training and validation
        sets always; a test set when its dataset says `labelled`."""
        ds = self.dl(ds_type).dataset
        return ds_type != DatasetType.Test or bool(getattr(ds, "labelled", False))

    def item_targets(self, ds_type: DatasetType = DatasetType.Train) -> torch.Tensor:
        """The targets of the `ds_type` items, in order (class indexes for single-label data), for
        callbacks that weigh items by class (`OverSamplingCallback`): the dataset's `targets` where it
        keeps them (labelled item lists, image and tabular datasets), else read through its loader."""
        ds = self.dl(ds_type).dataset
        targets = getattr(ds, "targets", None)
        if isinstance(targets, torch.Tensor):
            return targets
        loader = self.dl(ds_type).new(shuffle=False, drop_last=False)
        return torch.cat([batch[-1].cpu() for batch in loader])

    def input_spec(self) -> dict:
        """How a deployed model's input is prepared, as plain data: `size` ([h, w] the inputs are
        resized to, or None), `resize_method` (a name or None) and `padding_mode`. Images set them."""
        return {"size": None, "resize_method": None, "padding_mode": None}

    def decoded_rows(self, idxs=None, ds_type: DatasetType = DatasetType.Valid):
        """The items `idxs` of `ds_type` as rows a person reads (a table's task gives a DataFrame);
        `ClassificationInterpretation.plot_tab_top_losses` shows them."""
        raise InterpretationError(f"plot_tab_top_losses shows rows of a table, so it needs a TabularDataBunch; this "
                                  f"Learner's data is a {type(self).__name__}. Use plot_top_losses.")

    def plot_top_losses(self, interp, k: int = 9, largest: bool = True, **kwargs):
        """Draw the `k` items of `interp` (a `ClassificationInterpretation`) with the largest (or
        smallest) losses, as this task shows its items (images: a grid; a table: its rows)."""
        raise InterpretationError(f"plot_top_losses draws images, so it needs an ImageDataBunch; this Learner's "
                                  f"data is a {type(self).__name__}. top_losses() gives the losses and item indexes "
                                  "(a table's rows: plot_tab_top_losses).")

    def plot_multi_top_losses(self, interp, samples: int = 3, **kwargs):
        """Draw the `samples` items of `interp` (a `MultiLabelClassificationInterpretation`) with the
        largest losses, titled with their predicted and actual labels (images draw them)."""
        raise InterpretationError(f"plot_multi_top_losses draws images, so it needs an ImageDataBunch; this "
                                  f"Learner's data is a {type(self).__name__}. top_losses() and labels_of(i) give "
                                  "the losses and labels.")

    def show_confused(self, interp, idxs, title: str, figsize=None, varlist=None):
        """`ClassConfusion`'s view of items `idxs` of one confused pair: by default the rows of a table
        (`decoded_rows`, only the `varlist` columns when given) as a DataFrame; images draw a grid."""
        ds_type = DatasetType.Fix if interp.ds_type == DatasetType.Train else interp.ds_type
        try:
            rows = self.decoded_rows(list(idxs), ds_type)
        except InterpretationError:
            raise InterpretationError(f"ClassConfusion shows images or a table's rows; this Learner's data is a "
                                      f"{type(self).__name__}. Its .indices give the items of each pair.") from None
        if varlist is not None:
            rows = rows[list(varlist)]
        rows.insert(len(rows.columns), "index", list(idxs))
        rows.attrs["title"] = title
        return rows
