"""Layer 2: single items that know how to show themselves: a class (`Category`), several classes
(`MultiCategory`) and a number (`FloatItem`). `ds[i]`, `predict` and `show_batch` speak in them; the
batch path keeps plain tensors (`data`), so none of these ever reaches the training loop.
"""
from __future__ import annotations

import torch

__all__ = ["Category", "EmptyLabel", "FloatItem", "ItemBase", "MultiCategory", "prediction_item"]


class ItemBase:
    """One item: `obj` is what a person reads (a class name, a list of names, a number), `data` what a
    model reads (a tensor). Items compare equal to their `obj`, so `pred == 'cat'` reads naturally."""

    def __init__(self, data, obj=None):
        self.data = data
        self.obj = data if obj is None else obj

    def __str__(self):
        return str(self.obj)

    def __repr__(self):
        return f"{type(self).__name__} {self}"

    def __eq__(self, other):
        return self.obj == (other.obj if isinstance(other, ItemBase) else other)

    def __hash__(self):
        return hash(str(self.obj))

    def show(self, ax, **kwargs):
        """Write the item as the title of the matplotlib axes `ax`."""
        ax.set_title(str(self), **kwargs)

    def text(self) -> str:
        """The item as a short title for a grid of items."""
        return str(self)


class Category(ItemBase):
    """One class: `obj` its name, `data` its index (int64 tensor) in the classes."""

    def __int__(self):
        return int(self.data)


class MultiCategory(ItemBase):
    """Several classes: `obj` the list of names, `data` a float multi-hot vector over the classes;
    `raw` the indices of the classes present."""

    def __init__(self, data, obj, raw=None):
        super().__init__(data, list(obj))
        self.raw = raw

    def __str__(self):
        return ";".join(str(o) for o in self.obj)


class FloatItem(ItemBase):
    """A number or a vector of numbers, for regression: `data` a float tensor."""

    def __init__(self, obj):
        data = torch.as_tensor(obj, dtype=torch.float32)
        super().__init__(data, obj)

    def __str__(self):
        values = self.data.flatten().tolist()
        return ", ".join(f"{v:.4g}" for v in values) if len(values) != 1 else f"{values[0]:.4g}"


class EmptyLabel(ItemBase):
    """The label of an unlabelled (test) item: shows as nothing."""

    def __init__(self):
        super().__init__(torch.tensor(0), "")


def prediction_item(out: torch.Tensor, classes=None, multi_label: bool = False, thresh: float = 0.5,
                    regression: bool = False):
    """`(item, decoded tensor)` of one prediction `out` (after the loss's activation): a Category and
    its index, a MultiCategory and its multi-hot vector (classes above `thresh`), or, for
    `regression`, a FloatItem and the values; for per-pixel probabilities `(c, H, W)`, the `(H, W)` map of
    class indexes (as an item and as the decoded tensor). The one rule for turning a prediction into
    labels: `DataBunch.decode_prediction` (`Learner.predict`) and `DataBunch.decode_preds`
    (`predict_folder`, `fastbase predict`) use it; a task whose item is a map wraps the map itself."""
    if regression:
        return FloatItem(out.reshape(-1)[0] if out.numel() == 1 else out), out
    if out.dim() > 1 and not multi_label:  # segmentation: one class per pixel, the map is the item
        idx = out.argmax(0)
        return idx, idx
    if multi_label:
        hot = (out > thresh).float()
        found = hot.nonzero().view(-1).tolist()
        return MultiCategory(hot, [classes[i] if classes is not None else i for i in found], found), hot
    idx = out.argmax()
    return Category(idx, classes[int(idx)] if classes is not None else int(idx)), idx
