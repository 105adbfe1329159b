"""Layer 2: the later links of the data block chain: `ItemLists` (a split: train and valid item lists),
`LabelList` (items and their labels, a Dataset yielding `(x item, y item)`) and `LabelLists` (the
labelled split, with `transform`, `add_test` and `databunch`).

Nothing here knows a kind of item: the item list class of the training items builds the DataBunch
(`ItemList.build_databunch`), so `ImageList` ends the chain in an `ImageDataBunch`.
"""
from __future__ import annotations

import torch
from torch.utils.data import Dataset
from torch.utils.data.dataloader import default_collate

from ..core import Path, import_ref, is_listy, object_ref
from ..file_checks import DamagedFileError, file_size, json_with_digest, read_json_state
from ..files import atomic_write
from .base import DataError, EmptyDatasetError
from .items import ItemBase
from .labels import EmptyLabelList, LabelItemList

__all__ = ["ItemListBase", "ItemLists", "LabelList", "LabelLists", "LabelledMixin", "data_collate", "load_data"]


class ItemListBase:
    """The root of the item lists (`ItemList` derives from it), so that the label lists, which
    `item_list` builds on, tell an item list from raw items without importing it."""


def data_collate(batch):
    """`default_collate` of `(x, y)` pairs whose parts may be items: items give their `data`."""
    return default_collate([tuple(o.data if isinstance(o, ItemBase) else o for o in pair) for pair in batch])


class LabelledMixin:
    """`classes`, `c` and `multi_label` of a data set, read from its processed label list `self.y`."""

    @property
    def classes(self):
        return self.y.classes

    @property
    def c(self):
        return self.y.c

    @property
    def multi_label(self) -> bool:
        return self.y.multi_label


class LabelList(LabelledMixin, Dataset):
    """Items `x` (an ItemList) and their labels `y` (a processed label list): `ll[i]` is `(x[i], y[i])`
    as items. `transform` keeps the transforms the DataBunch will apply."""

    def __init__(self, x, y: LabelItemList):
        if len(x) != len(y):
            raise DataError(f"{len(x)} items but {len(y)} labels.")
        self.x, self.y = x, y
        self.tfms, self.tfm_kwargs = None, {}

    @property
    def items(self):
        return self.x.items

    @property
    def path(self):
        return self.x.path

    def __len__(self):
        return len(self.x)

    def __getitem__(self, idx):
        if isinstance(idx, int) or hasattr(idx, "__index__"):
            return self.x.get(int(idx)), self.y.get(int(idx))
        return LabelList(self.x[idx], self.y[idx])

    def transform(self, tfms=None, **kwargs) -> LabelList:
        self.tfms, self.tfm_kwargs = tfms, kwargs
        return self

    def __repr__(self):
        return f"LabelList ({len(self)} items)\nx: {self.x!r}\ny: {self.y!r}\nPath: {self.path}"


class ItemLists:
    """A split: `train` and `valid` item lists (`train_idx`/`valid_idx`: their positions in the list
    that was split). Label it with the same `label_from_*` calls as an ItemList to get LabelLists."""

    def __init__(self, path, train, valid, train_idx=None, valid_idx=None):
        self.path = Path(path)
        self.train = train
        self.valid = valid
        self.train_idx, self.valid_idx = train_idx, valid_idx
        self.test = None
        if not len(train):
            raise EmptyDatasetError(f"The training set is empty ({path}; {len(valid)} items in the validation set): "
                                    "check the folder names, the file pattern, the labels or the split.")

    @property
    def lists(self):
        return [o for o in (self.train, self.valid, self.test) if o is not None]

    def _label(self, method: str, *args, **kwargs) -> LabelLists:
        train = getattr(self.train, method)(*args, process=False, **kwargs)
        valid = getattr(self.valid, method)(*args, process=False, **kwargs)
        return LabelLists(self.path, train, valid)

    def label_from_folder(self, label_cls=None, **kwargs) -> LabelLists:
        """Each item's label is the name of its folder."""
        return self._label("label_from_folder", label_cls=label_cls, **kwargs)

    def label_from_re(self, pat: str, full_path: bool = False, label_cls=None, **kwargs) -> LabelLists:
        """Each item's label is the first group of the regular expression `pat` searched in its path."""
        return self._label("label_from_re", pat, full_path=full_path, label_cls=label_cls, **kwargs)

    def label_from_func(self, func, label_cls=None, **kwargs) -> LabelLists:
        """Each item's label is `func(item)`."""
        return self._label("label_from_func", func, label_cls=label_cls, **kwargs)

    def label_from_df(self, cols=1, label_cls=None, **kwargs) -> LabelLists:
        """Labels from column(s) `cols` of the table the items came from (`from_df`/`from_csv`)."""
        return self._label("label_from_df", cols, label_cls=label_cls, **kwargs)

    def label_const(self, const=0, label_cls=None, **kwargs) -> LabelLists:
        return self._label("label_const", const, label_cls=label_cls, **kwargs)

    def label_empty(self, **kwargs) -> LabelLists:
        return self._label("label_empty", **kwargs)

    def __getattr__(self, name: str):
        """A labelling method of the items' own class (`TextList.label_for_lm`), applied to both lists."""
        train = self.__dict__.get("train")
        if not name.startswith("label_") or train is None or not callable(getattr(type(train), name, None)):
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        return lambda *args, **kwargs: self._label(name, *args, **kwargs)

    def label_from_lists(self, train_labels, valid_labels, label_cls=None, **kwargs) -> LabelLists:
        """Labels given as two lists, one per item of `train` and of `valid`."""
        train = self.train.label_from_list(list(train_labels), label_cls=label_cls, process=False, **kwargs)
        valid = self.valid.label_from_list(list(valid_labels), label_cls=type(train.y), process=False, **kwargs)
        return LabelLists(self.path, train, valid)

    def __repr__(self):
        return f"{type(self).__name__};\n\nTrain: {self.train!r};\n\nValid: {self.valid!r};\n\nTest: {self.test!r}"


class LabelLists(ItemLists):
    """The labelled split: classes come from the training labels, and the validation labels are checked
    against them. `transform`, `add_test` and `databunch` finish the chain."""

    def __init__(self, path, train: LabelList, valid: LabelList, process: bool = True):
        super().__init__(path, train, valid)
        self.tfms, self.tfm_kwargs = None, {}
        if process:
            train.y.process(names=train.x.items)
            valid.y = _valid_labels(train.y, valid.y).process(train.y, names=valid.x.items)

    def transform(self, tfms=None, **kwargs) -> LabelLists:
        """Keep `tfms` ((train transforms, valid transforms), as `get_transforms()` returns) and their
        settings (`size`, `resize_method`, `padding_mode`, `tfm_y`...) for the DataBunch."""
        self.tfms, self.tfm_kwargs = tfms, dict(kwargs)
        pair = is_listy(tfms) and len(tfms) == 2 and all(is_listy(t) for t in tfms)  # else the builder says why
        for i, ll in enumerate((self.train, self.valid)):
            ll.transform(tfms[i] if pair else None, **kwargs)
        return self

    def add_test(self, items, label=None, tfms=None, tfm_y=None) -> LabelLists:
        """Unlabelled test items (an ItemList, or items the training list's class takes), predicted on
        with `get_preds(ds_type=DatasetType.Test)`."""
        x = items if isinstance(items, ItemListBase) else self.train.x.new(list(items))
        y = EmptyLabelList([label] * len(x)).process(self.train.y)
        self.test = LabelList(x, y)
        return self

    def add_test_folder(self, test_folder: str = "test", label=None) -> LabelLists:
        """The items under `path/test_folder`, found as the training items were (e.g. image files)."""
        items = type(self.train.x).from_folder(self.path / test_folder, **self.train.x.settings)
        return self.add_test(items, label=label)

    def databunch(self, path=None, bs: int = 64, val_bs: int | None = None, num_workers: int | None = None,
                  dl_tfms=None, device=None, collate_fn=None, no_check: bool = False, **kwargs):
        """The DataBunch of these lists, of the kind the training items call for (`ImageList`: an
        ImageDataBunch). Other keyword arguments go to that builder (e.g. `seed`, `skip_bad`)."""
        args = {"path": Path(path) if path is not None else self.path, "bs": bs, "val_bs": val_bs,
                "num_workers": num_workers, "dl_tfms": dl_tfms, "device": device, "no_check": no_check, **kwargs}
        if collate_fn is not None:
            args["collate_fn"] = collate_fn
        return self.train.x.build_databunch(self, **args)

    # --- plain-data save and load ----------------------------------------------------------------
    def state(self) -> dict:
        """The lists as plain data (JSON-safe): item and label lists, classes, classes and settings."""
        def one(ll):
            return {"items": [str(o) for o in ll.x.items], "labels": _plain(ll.y.items)}
        return {"x_cls": object_ref(type(self.train.x)), "y_cls": object_ref(type(self.train.y)),
                "path": str(self.path), "x_settings": _plain(self.train.x.settings),
                "y_settings": _plain({**self.train.y.kwargs, "classes": self.train.y.classes}),
                "train": one(self.train), "valid": one(self.valid), "tfms": _tfms_state(self.tfms),
                "tfm_kwargs": _plain(self.tfm_kwargs),
                "test": None if self.test is None else [str(o) for o in self.test.x.items]}

    def save(self, fname="data_save.json") -> Path:
        """Write `state()` as JSON to `path/fname` (plain data: loading it runs no code)."""
        file = self.path / fname
        text = json_with_digest(self.state())
        return atomic_write(file, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"),
                            size=len(text.encode()))

    @classmethod
    def from_state(cls, state: dict, path=None) -> LabelLists:
        x_cls, y_cls = import_ref(state["x_cls"]), import_ref(state["y_cls"])
        path = Path(path) if path is not None else Path(state["path"])

        def one(part):
            x = x_cls(part["items"], path=path, **state["x_settings"])
            return LabelList(x, y_cls(part["labels"], **state["y_settings"]))
        lls = cls(path, one(state["train"]), one(state["valid"]))
        if state.get("test"):
            lls.add_test(x_cls(state["test"], path=path, **state["x_settings"]))
        if state.get("tfms") is not None or state.get("tfm_kwargs"):
            lls.transform(_tfms_from_state(state.get("tfms")), **state.get("tfm_kwargs", {}))
        return lls


def load_data(path, fname="data_save.json", bs: int = 64, val_bs: int | None = None, num_workers: int | None = None,
              device=None, tfms=None, **kwargs):
    """Rebuild the DataBunch of lists that `save` wrote to `path/fname`, with the transforms saved with
    them, or `tfms` and `kwargs` (`size`, ...) as for `transform`; the loader settings as for `databunch`."""
    file = Path(path) / fname
    if not file.is_file():
        raise DataError(f"No saved data {file}: write it with `data.save('{fname}')` (or `label_lists.save`).")
    state = read_json_state(file, what="fastbase data file")
    # a task that saves its lists its own way (text: ids in a NumPy archive)
    if isinstance(state, dict) and state.get("load_with"):
        return import_ref(state["load_with"])(state, Path(path), bs=bs, val_bs=val_bs, num_workers=num_workers,
                                              device=device, **kwargs)
    missing = [k for k in ("x_cls", "y_cls", "train", "valid") if not isinstance(state, dict) or k not in state]
    if missing:
        raise DamagedFileError(f"{file} ({file_size(file)}) is not a fastbase data file: it has no {missing[0]!r} "
                               "entry.")
    lls = LabelLists.from_state(state, path)
    if tfms is not None or kwargs:
        lls.transform(tfms, **kwargs)
    return lls.databunch(bs=bs, val_bs=val_bs, num_workers=num_workers, device=device)


def _valid_labels(train_y: LabelItemList, valid_y: LabelItemList) -> LabelItemList:
    """Validation labels read as the training labels' kind (e.g. numbers that look like classes)."""
    if type(valid_y) is type(train_y) or not len(valid_y):
        return valid_y if type(valid_y) is type(train_y) else train_y.new(valid_y.items)
    return train_y.new(valid_y.items)


def _tfms_state(tfms):
    """(train, valid) transforms as plain data: each one's class reference, `p` and `params`."""
    if tfms is None:
        return None

    def one(t):
        if not hasattr(t, "params"):
            raise DataError(f"Cannot save the transform {t!r} as plain data (it has no `params`); save the lists "
                            "before `transform`, and pass `tfms=` to load_data.")
        return {"ref": object_ref(type(t)), "p": getattr(t, "p", 1.0), "params": _plain(t.params)}
    return [[one(t) for t in part] for part in tfms]


def _tfms_from_state(state):
    if state is None:
        return None
    try:
        return tuple([import_ref(t["ref"])(p=t["p"], **t["params"]) for t in part] for part in state)
    except (TypeError, KeyError) as e:
        raise DataError(f"Cannot rebuild the saved transforms {state}: {e}. Pass `tfms=` to load_data.") from e


def _plain(obj):
    """`obj` with numpy scalars, tuples and paths turned into JSON types."""
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(o) for o in obj]
    if isinstance(obj, torch.Tensor):
        return obj.tolist()
    if hasattr(obj, "item") and not isinstance(obj, (str, bytes)):
        return obj.item()
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    return str(obj)
