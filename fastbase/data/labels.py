"""Layer 2: lists of labels: `CategoryList` (one class per item), `MultiCategoryList` (several, as a
multi-hot vector), `FloatList` (numbers, for regression) and `EmptyLabelList` (unlabelled items).

Each holds the raw labels (`items`) and, once `process`ed against the training labels, `classes` and
`targets`: one plain tensor for all items, which datasets index on the batch path. `ll[i]` is an
item (`Category`, `MultiCategory`, `FloatItem`) for people.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..core import is_listy
from .base import DataError, LabelError, format_list
from .items import Category, EmptyLabel, FloatItem, MultiCategory

__all__ = ["CategoryList", "EmptyLabelList", "FloatList", "LabelItemList", "MultiCategoryList", "choose_label_cls",
           "label_list_from_targets", "sorted_classes"]


def sorted_classes(labels) -> list:
    """The unique labels sorted (by their text when they are of mixed types), as fastai's classes."""
    unique = set(labels)
    try:
        return sorted(unique)
    except TypeError:
        return sorted(unique, key=str)


class LabelItemList:
    """Raw labels of some items, turned into one tensor of `targets` by `process`."""
    item_cls = Category
    loss_func = None  # None: the Learner picks the loss from `c` and `multi_label`
    multi_label = False

    def __init__(self, items, classes=None, **kwargs):
        self.items = list(items)
        self.given_classes = None if classes is None else list(classes)
        self.classes = self.given_classes
        self.targets: torch.Tensor | None = None
        self.kwargs = kwargs

    def new(self, items, **changes) -> LabelItemList:
        """An unprocessed list of the same kind and settings over other raw labels."""
        return type(self)(items, **{"classes": self.given_classes, **self.kwargs, **changes})

    def __len__(self):
        return len(self.items)

    @property
    def c(self) -> int | None:
        return None if self.classes is None else len(self.classes)

    def process(self, train: LabelItemList | None = None, names=None) -> LabelItemList:
        """Set `classes` (from `train`, which is already processed, or from these labels) and `targets`.
        `names` (the items, e.g. file names) make errors say which items carry a bad label."""
        raise NotImplementedError

    def get(self, i: int):
        return self.reconstruct(self.targets[i])

    def reconstruct(self, t: torch.Tensor):
        """The item of one target tensor (one row of `targets`, or of a batch, or a prediction)."""
        return self.item_cls(t, self.classes[int(t)])

    def __getitem__(self, idx):
        if isinstance(idx, (int, np.integer)):
            if self.targets is None:
                raise DataError("These labels are not processed yet: label the items of a split (ItemLists) to "
                                "get classes and targets.")
            return self.get(int(idx))
        idx = _indices(idx, len(self))
        new = self.new([self.items[i] for i in idx])
        new.classes = self.classes
        new.targets = None if self.targets is None else self.targets[idx]
        return new

    def __iter__(self):
        return (self[i] for i in range(len(self)))

    def __repr__(self):
        shown = ", ".join(str(self[i]) if self.targets is not None else str(self.items[i])
                          for i in range(min(5, len(self))))
        more = ", ..." if len(self) > 5 else ""
        return f"{type(self).__name__} ({len(self)} items)\n{shown}{more}"


class CategoryList(LabelItemList):
    """One class per item; `targets` int64 `(n,)` indices into `classes`."""

    def process(self, train=None, names=None):
        self.classes = _classes(self, train, self.items)
        index = {c: i for i, c in enumerate(self.classes)}
        _check_known(self.items, index, names, train is not None)
        self.targets = torch.tensor([index[o] for o in self.items], dtype=torch.long)
        return self


class MultiCategoryList(LabelItemList):
    """Several classes per item: raw labels are lists, or strings split at `label_delim`; `targets`
    float `(n, c)` multi-hot."""
    item_cls = MultiCategory
    multi_label = True

    def __init__(self, items, classes=None, label_delim: str | None = None, **kwargs):
        super().__init__(items, classes, label_delim=label_delim, **kwargs)
        self.items = [_split(o, label_delim) for o in self.items]

    def process(self, train=None, names=None):
        self.classes = _classes(self, train, [lbl for item in self.items for lbl in item])
        index = {c: i for i, c in enumerate(self.classes)}
        _check_known(self.items, index, names, train is not None, multi=True)
        self.targets = torch.zeros(len(self.items), len(self.classes))
        for row, item in enumerate(self.items):
            self.targets[row, [index[lbl] for lbl in item]] = 1.0
        return self

    def reconstruct(self, t):
        found = torch.nonzero(t > 0.5).flatten().tolist()
        return MultiCategory(t, [self.classes[k] for k in found], found)


class FloatList(LabelItemList):
    """Numbers (one or several per item) for regression; `targets` float `(n, k)`, `c` = k. `log=True`
    trains on their logarithm. The Learner then uses the mean squared error."""
    item_cls = FloatItem

    def __init__(self, items, classes=None, log: bool = False, **kwargs):
        super().__init__(items, None, log=log, **kwargs)

    @property
    def loss_func(self):
        return nn.MSELoss()

    @property
    def c(self):
        return None if self.targets is None else self.targets.shape[1]

    def process(self, train=None, names=None):
        try:
            values = torch.tensor(np.asarray(self.items, dtype=np.float32)).view(len(self.items), -1)
        except (TypeError, ValueError) as e:
            raise LabelError(f"FloatList needs numbers, got {format_list(self.items)}: {e}.") from e
        if self.kwargs.get("log"):
            if (values <= 0).any():
                bad = [self.items[i] for i in torch.nonzero((values <= 0).any(1)).flatten().tolist()]
                raise LabelError(f"log=True needs positive numbers, got {format_list(bad)}.")
            values = values.log()
        self.targets = values
        return self

    def reconstruct(self, t):
        return FloatItem(t.reshape(-1)[0] if t.numel() == 1 else t)


class EmptyLabelList(LabelItemList):
    """Labels of unlabelled items (a test set, or `label_empty`): all the same, shown as nothing."""
    item_cls = EmptyLabel

    def process(self, train=None, names=None):
        self.classes = None if train is None else train.classes
        self.targets = torch.zeros(len(self.items), dtype=torch.long)
        return self

    def reconstruct(self, t):
        return EmptyLabel()


def choose_label_cls(labels, label_cls=None, label_delim=None):
    """The label list class for raw `labels`: `label_cls` when given, MultiCategoryList with a
    `label_delim` or lists, FloatList for floats, CategoryList otherwise (as fastai v1 chooses)."""
    if label_cls is not None:
        return label_cls
    if label_delim is not None:
        return MultiCategoryList
    first = labels[0] if len(labels) else None
    if isinstance(first, (float, np.floating)) or (isinstance(first, np.ndarray) and first.dtype.kind == "f"):
        return FloatList
    if is_listy(first) or isinstance(first, np.ndarray):
        return MultiCategoryList
    return CategoryList


def label_list_from_targets(targets: torch.Tensor, classes, multi_label: bool) -> LabelItemList:
    """A processed label list over already encoded `targets` (what a dataset built from tensors holds)."""
    if classes is None:
        labels = FloatList(targets.tolist()) if targets.is_floating_point() else EmptyLabelList([0] * len(targets))
        labels.targets = targets if labels.targets is None else labels.targets
        if isinstance(labels, EmptyLabelList):
            labels.process()
        return labels
    if multi_label:
        labels = MultiCategoryList([[classes[k] for k in torch.nonzero(row > 0.5).flatten().tolist()]
                                    for row in targets], classes)
    else:
        labels = CategoryList([classes[int(k)] for k in targets], classes)
    labels.classes, labels.targets = list(classes), targets
    return labels


def _classes(labels: LabelItemList, train: LabelItemList | None, flat) -> list:
    if train is not None:
        return train.classes
    return labels.given_classes if labels.given_classes is not None else sorted_classes(flat)


def _check_known(items, index, names, is_valid: bool, multi: bool = False) -> None:
    unknown = {}
    for k, item in enumerate(items):
        for lbl in (item if multi else [item]):
            if lbl not in index:
                unknown.setdefault(lbl, names[k] if names is not None else f"item {k}")
    if not unknown:
        return
    labels = sorted_classes(unknown)
    examples = format_list(unknown[lbl] for lbl in labels)
    if is_valid:
        raise LabelError(f"The validation set has class(es) {format_list(labels)} that the training set lacks "
                         f"(e.g. {examples}). A model cannot learn them: add training items of them, drop them "
                         "from the validation set, use another seed/valid_pct for a random split, or name "
                         "every class with `classes=`.")
    raise LabelError(f"Label(s) {format_list(labels)} are not among the classes {format_list(list(index), 10)} "
                     f"(e.g. {examples}). Add them to `classes`, or remove those items.")


def _split(label, delim):
    if is_listy(label) or isinstance(label, np.ndarray):
        return list(label)
    if label is None or (isinstance(label, float) and np.isnan(label)) or label == "":
        return []
    return str(label).split(delim)


def _indices(idx, n: int) -> list[int]:
    """Positions from a slice, a boolean mask or a list of ints."""
    if isinstance(idx, slice):
        return list(range(n))[idx]
    arr = np.asarray(idx)
    if arr.dtype == bool:
        if len(arr) != n:
            raise DataError(f"A boolean mask of {len(arr)} values for {n} items.")
        return np.nonzero(arr)[0].tolist()
    return [int(i) for i in arr.reshape(-1)]

