"""Layer 2: `ItemList`, the first link of fastai v1's data block chain, for items of any kind:

    ItemList.from_folder(path) -> .split_by_*(...) -> .label_from_*(...) -> .transform(...) -> .databunch()

An ItemList holds `items` (file names, values), the `path` they are relative to and, when it came from a
table, that table (`inner_df`) for `label_from_df` and `split_from_df`. Task packages subclass it
(`fastbase.vision.ImageList`) to say how an item opens (`get`) and which DataBunch the chain ends in
(`build_databunch`). The split methods come from `splits.SplitMixin`.
"""
from __future__ import annotations

import math
import os
import re

import numpy as np

from ..core import Path, is_listy
from .base import DataError, LabelError, format_list
from .bunch import DataBunch
from .label_lists import ItemListBase, LabelList, data_collate
from .labels import EmptyLabelList, MultiCategoryList, _indices, choose_label_cls
from .splits import SplitMixin, _first_folder, random_stream

__all__ = ["ItemList", "get_files", "labels_from_re"]


def get_files(path, extensions=None, recurse: bool = True, include=None) -> list[Path]:
    """Files under `path` (only inside its subfolders `include` when given) whose suffix (lower case,
    with the dot) is in `extensions` (all files when None), sorted. Hidden files and folders (names
    starting with '.', like macOS's `._x.jpg`) are left out."""
    path = Path(path)
    if not path.is_dir():
        raise DataError(f"{path} is not a folder; pass the folder that holds the items.")
    exts = None if extensions is None else {e.lower() if e.startswith(".") else f".{e.lower()}" for e in extensions}
    roots = [path / f for f in (include or [])] or [path]
    missing = [str(r) for r in roots if not r.is_dir()]
    if missing:
        subs = sorted(p.name for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))
        raise DataError(f"No folder {missing[0]}; {path} holds: {', '.join(subs) or 'no subfolders'}.")
    found = []
    for root in roots:
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            found += [Path(dirpath) / f for f in filenames
                      if not f.startswith(".") and (exts is None or Path(f).suffix.lower() in exts)]
            if not recurse:
                break
    return sorted(found)


class ItemList(ItemListBase, SplitMixin):
    """Items of one kind and where they live. `il[i]` is one item (`get`), `il[idxs]` an ItemList of
    some of them; `settings` are the extra arguments that every derived list keeps."""
    _extensions = None  # the file suffixes `from_folder` looks for; None: every file
    _label_cls = None  # the label list its `label_from_*` make when `label_cls` is not given (a task's own)

    def __init__(self, items, path=".", inner_df=None, label_cls=None, **settings):
        self.items = list(items) if not isinstance(items, np.ndarray) else items.tolist()
        self.path = Path(path)
        self.inner_df = inner_df
        self.label_cls = label_cls or self._label_cls
        self.settings = settings

    def new(self, items, inner_df=None, **changes) -> ItemList:
        """An ItemList of the same class and settings over other items."""
        return type(self)(items, path=self.path, inner_df=inner_df, label_cls=self.label_cls,
                          **{**self.settings, **changes})

    def get(self, i: int):
        """The item at `i` as a person sees it; subclasses open files here."""
        return self.items[i]

    def __len__(self):
        return len(self.items)

    def __getitem__(self, idx):
        if isinstance(idx, (int, np.integer)):
            return self.get(int(idx))
        idx = _indices(idx, len(self))
        df = None if self.inner_df is None else self.inner_df.iloc[idx]
        return self.new([self.items[i] for i in idx], inner_df=df)

    def __iter__(self):
        return (self.get(i) for i in range(len(self)))

    def add(self, other: ItemList) -> ItemList:
        """The items of this list, then those of `other` (e.g. two folders of test images)."""
        return self.new([*self.items, *other.items])

    def __repr__(self):
        shown = ", ".join(str(self.items[i]) for i in range(min(5, len(self))))
        more = ", ..." if len(self) > 5 else ""
        return f"{type(self).__name__} ({len(self)} items)\n{shown}{more}\nPath: {self.path}"

    # --- where items come from ---------------------------------------------------------------
    @classmethod
    def from_folder(cls, path=".", extensions=None, recurse: bool = True, include=None, presort: bool = False,
                    **kwargs) -> ItemList:
        """The files under `path` with one of `extensions` (the class's own when None), sorted;
        `include`: only those subfolders."""
        exts = extensions if extensions is not None else cls._extensions
        items = get_files(path, exts, recurse=recurse, include=include)
        return cls(items, path=path, **kwargs)

    @classmethod
    def from_df(cls, df, path=".", cols=0, folder=None, suffix: str = "", **kwargs) -> ItemList:
        """Items from column(s) `cols` (by position or name) of the pandas DataFrame `df`. With `folder`
        or `suffix` (or for a class of files, such as ImageList), an item is `path/folder/<value><suffix>`."""
        values = _df_column(df, cols)
        return cls(cls._df_items(values, Path(path), folder, suffix), path=path, inner_df=df, **kwargs)

    @classmethod
    def _df_items(cls, values, path, folder, suffix):
        if folder is None and not suffix:
            return list(values)
        base = path if folder is None else path / str(folder)
        return [base / f"{v}{suffix}" for v in values]

    @classmethod
    def from_csv(cls, path, csv_name, cols=0, delimiter=None, header="infer", **kwargs) -> ItemList:
        """As `from_df`, from the table `path/csv_name` (read with pandas)."""
        try:
            import pandas as pd
        except ImportError as e:
            raise DataError("from_csv needs pandas (`pip install pandas`).") from e
        file = Path(path) / csv_name
        if not file.is_file():
            raise DataError(f"No table {file}: pass the folder as `path` and the file's name inside it as `csv_name`.")
        df = pd.read_csv(file, delimiter=delimiter or ",", header=header)
        return cls.from_df(df, path=path, cols=cols, **kwargs)

    # --- keeping some of the items ----------------------------------------------------------
    def filter_by_func(self, func) -> ItemList:
        """Keep the items for which `func(item)` is true."""
        return self[[i for i, o in enumerate(self.items) if func(o)]]

    def filter_by_folder(self, include=None, exclude=None) -> ItemList:
        """Keep the items whose first folder under `path` is in `include` and not in `exclude`."""
        include, exclude = (None if f is None else {str(o) for o in f} for f in (include, exclude))

        def keep(o):
            first = _first_folder(o, self.path)
            return (include is None or first in include) and (exclude is None or first not in exclude)
        return self.filter_by_func(keep)

    def filter_by_rand(self, p: float, seed: int | None = None) -> ItemList:
        """Keep each item with probability `p` (reproducible with `seed`, else `np.random`'s state)."""
        if not 0 <= p <= 1:
            raise DataError(f"filter_by_rand needs 0 <= p <= 1, got {p}.")
        draw = random_stream(seed).uniform(size=len(self))
        return self[np.nonzero(draw < p)[0].tolist()]

    def use_partial_data(self, sample_pct: float = 0.01, seed: int | None = None) -> ItemList:
        """A random `sample_pct` of the items (for quick experiments), in their order."""
        if not 0 < sample_pct <= 1:
            raise DataError(f"use_partial_data needs 0 < sample_pct <= 1, got {sample_pct}.")
        n = max(1, int(sample_pct * len(self)))
        return self[sorted(random_stream(seed).permutation(len(self))[:n].tolist())]

    # --- labelling: each returns a LabelList (an ItemLists' returns LabelLists) ----------------
    def label_from_list(self, labels, label_cls=None, process: bool = True, **kwargs) -> LabelList:
        """Label the items with `labels` (one per item); the label list class is chosen from them
        (`choose_label_cls`) unless `label_cls` (or the ItemList's) says."""
        labels = list(labels)
        if len(labels) != len(self):
            raise LabelError(f"{len(labels)} labels for {len(self)} items.")
        cls = choose_label_cls(labels, label_cls or self.label_cls, kwargs.get("label_delim"))
        y = cls(labels, **kwargs)
        if process:
            y.process(names=self.items)
        return LabelList(self, y)

    def label_from_func(self, func, label_cls=None, process: bool = True, **kwargs) -> LabelList:
        labels = []
        for o in self.items:
            try:
                labels.append(func(o))
            except Exception as e:
                raise LabelError(f"The label function raised {type(e).__name__}: {e} for {o}.") from e
        return self.label_from_list(labels, label_cls, process, **kwargs)

    def label_from_folder(self, label_cls=None, process: bool = True, **kwargs) -> LabelList:
        return self.label_from_func(lambda o: Path(o).parent.name, label_cls, process, **kwargs)

    def label_from_re(self, pat: str, full_path: bool = False, label_cls=None, process: bool = True,
                      **kwargs) -> LabelList:
        """The first group of `pat`, searched in each item's path (with '/'; `full_path`: joined to `path`)."""
        texts = [(self.path / o if full_path else Path(o)).as_posix() for o in self.items]
        labels = labels_from_re(pat, texts, "item", "filter those items out first")
        return self.label_from_list(labels, label_cls, process, **kwargs)

    def label_from_df(self, cols=1, label_cls=None, process: bool = True, **kwargs) -> LabelList:
        """Labels from column(s) `cols` of the table the items came from. Several columns: a FloatList
        of their values when they hold floats, else a multi-label list named by the columns set to 1."""
        if self.inner_df is None:
            raise LabelError("label_from_df needs items made by from_df or from_csv (this ItemList has no table); "
                             "use label_from_func or label_from_lists.")
        if is_listy(cols) and len(cols) > 1:
            names = [self.inner_df.columns[c] if isinstance(c, int) else c for c in cols]
            values = _df_column(self.inner_df, names).to_numpy()
            if values.dtype.kind == "f" and label_cls is None:
                return self.label_from_list(list(values), label_cls, process, **kwargs)
            labels = [[n for n, v in zip(names, row) if v] for row in values]
            kwargs.setdefault("classes", names)
            return self.label_from_list(labels, label_cls or MultiCategoryList, process, **kwargs)
        column = _df_column(self.inner_df, cols[0] if is_listy(cols) else cols)
        labels = [v.item() if hasattr(v, "item") else v for v in column]
        empty = [self.items[i] for i, v in enumerate(labels) if v is None or (isinstance(v, float) and math.isnan(v))]
        if empty and kwargs.get("label_delim") is None:
            raise LabelError(f"{len(empty)} rows have no label in column {cols!r}: {format_list(empty)}.")
        return self.label_from_list(labels, label_cls, process, **kwargs)

    def label_const(self, const=0, label_cls=None, process: bool = True, **kwargs) -> LabelList:
        return self.label_from_list([const] * len(self), label_cls, process, **kwargs)

    def label_empty(self, process: bool = True, **kwargs) -> LabelList:
        y = EmptyLabelList([0] * len(self))
        return LabelList(self, y.process() if process else y)

    # --- the end of the chain -------------------------------------------------------------------
    @classmethod
    def build_databunch(cls, lls, path, bs=64, val_bs=None, num_workers=None, dl_tfms=None, device=None,
                        collate_fn=data_collate, no_check=False, seed=None, **kwargs):
        """A generic DataBunch over the LabelLists `lls`: items reach the model as their `data`."""
        if kwargs:
            raise DataError(f"Unknown databunch argument(s) {sorted(kwargs)} for {cls.__name__}.")
        test = lls.test
        data = DataBunch.create(lls.train, lls.valid, test, path=path, bs=bs, val_bs=val_bs,
                                num_workers=num_workers, dl_tfms=dl_tfms, device=device, collate_fn=collate_fn,
                                seed=seed)
        data.label_lists = lls
        data.loss_func = lls.train.y.loss_func
        return data


def _df_column(df, cols):
    try:
        import pandas as pd
    except ImportError as e:
        raise DataError("Items from a DataFrame need pandas (`pip install pandas`).") from e
    if not isinstance(df, pd.DataFrame):
        raise DataError(f"Expected a pandas DataFrame, got {type(df).__name__}.")
    names = [df.columns[c] if isinstance(c, int) and c not in df.columns else c for c in
             (cols if is_listy(cols) else [cols])]
    missing = [c for c in names if c not in df.columns]
    if missing:
        raise DataError(f"The table has no column {missing[0]!r}; its columns: {list(df.columns)}.")
    return df[names] if is_listy(cols) else df[names[0]]


def labels_from_re(pat: str, texts: list, noun: str = "item", fix: str = "filter those items out first") -> list:
    """The first group of `pat` searched in each of `texts`; a LabelError naming the ones it misses
    (`noun`: what a text is, for the message; `fix`: what the user can do besides fixing the pattern)."""
    regex = re.compile(pat)
    if regex.groups < 1:
        raise LabelError(f"The pattern {pat!r} has no group: put the label part in parentheses, "
                         r"e.g. r'/([^/]+)_\d+.jpg$'.")
    found = [regex.search(text) for text in texts]
    missed = [text for text, m in zip(texts, found) if m is None]
    if missed:
        what = f"no {noun}, e.g." if len(missed) == len(texts) else \
            f"only some {noun}s: {len(missed)} of {len(texts)} do not match, like"
        raise LabelError(f"The pattern {pat!r} matches {what} {format_list(missed)}. Fix the pattern (it is "
                         f"searched in the whole path, with '/'), or {fix}.")
    return [m.group(1) for m in found]
