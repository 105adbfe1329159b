"""Layer 6: collaborative-filtering data: ratings of items by users, from a pandas DataFrame.

User and item names become integer codes once, when the DataBunch is built (`encode`: code 0 is
'#na#', anything unknown), and the codes and ratings are held in tensors. A batch is gathered by
one tensor index per batch (`RatingsDataset.__getitems__`), so no Python runs per row while
training. pandas is imported by the functions that need it, not by this module.
"""
from __future__ import annotations

import warnings

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from ..core import ifnone, to_device
from ..data import DataBunch, DataError, DatasetType, format_list
from ..data.categories import NA_CATEGORY, category_codes, category_names, require_pandas
from ..data.splits import random_stream

__all__ = ["UNKNOWN", "CollabDataBunch", "RatingsDataset", "UnknownNameWarning", "encode", "require_pandas"]

UNKNOWN = NA_CATEGORY  # class 0 of users and of items: a name the training data did not have, or a missing one


class UnknownNameWarning(UserWarning):
    """A user or item that the training data did not have: it gets code 0 ('#na#')."""


def encode(values, classes: list | None = None) -> tuple[torch.Tensor, list]:
    """(codes, classes) of a column of names (users or items): `codes` (int64, one per value) are
    positions in `classes`, whose entry 0 is '#na#' for a missing value or a name not in `classes`.
    With `classes=None` they are learnt from `values`: '#na#', then the distinct values sorted."""
    if classes is None:
        classes = [UNKNOWN, *category_names(values)]
    return torch.from_numpy(category_codes(values, classes[1:])), classes


class RatingsDataset(Dataset):
    """Users and items as codes (a (2, n) int64 tensor) and their ratings (n float32 values).
    Indexing with a list of positions gives a whole batch `((users, items), ratings)`."""
    c = 1  # one output per row: the predicted rating

    def __init__(self, codes: torch.Tensor, ratings: torch.Tensor):
        self.codes, self.ratings = codes, ratings

    def __len__(self):
        return self.ratings.shape[0]

    def __getitem__(self, i):
        (users, items), ratings = self.__getitems__([i])
        return (users[0], items[0]), ratings[0]

    def __getitems__(self, positions):
        idx = torch.as_tensor(positions, dtype=torch.long)
        users, items = self.codes.index_select(1, idx).unbind(0)  # index_select: a quarter of `[:, idx]`'s time
        return (users, items), self.ratings.index_select(0, idx)


def batch_as_is(batch):
    """The `collate_fn` of ratings loaders: `RatingsDataset.__getitems__` already made the batch."""
    return batch


class CollabDataBunch(DataBunch):
    """Loaders of `((users, items), ratings)` batches, users and items as codes. `classes` is
    {user column: user names, item column: item names}, each list starting with '#na#'."""

    @classmethod
    def from_df(cls, ratings, valid_pct: float = 0.2, seed: int | None = None, user_name: str | None = None,
                item_name: str | None = None, rating_name: str | None = None, test=None, path=".", bs: int = 64,
                val_bs: int | None = None, num_workers: int | None = 0, device=None, **kwargs) -> CollabDataBunch:
        """Split `ratings` (a DataFrame) at random, `valid_pct` of the rows for validation (the same
        rows for the same `seed`), and encode users and items with the names of the training rows
        (a name only the validation or `test` rows have gets code 0). Columns default to the first
        three: user, item, rating. `num_workers=0`: the batches are gathered from memory, which worker
        processes would only slow down."""
        names = _column_names(ratings, user_name, item_name, rating_name)
        user_name, item_name, rating_name = names
        values = _ratings_column(ratings, rating_name)
        if not 0 <= valid_pct < 1:
            raise DataError(f"valid_pct must be in [0, 1), got {valid_pct}.")
        order = random_stream(seed).permutation(len(ratings))
        cut = int(valid_pct * len(ratings))
        train_idx, valid_idx = np.sort(order[cut:]), np.sort(order[:cut])
        users, user_classes = encode(ratings[user_name].to_numpy()[train_idx])
        items, item_classes = encode(ratings[item_name].to_numpy()[train_idx])
        classes = {user_name: user_classes, item_name: item_classes}
        train_ds = RatingsDataset(torch.stack([users, items]), values[train_idx])
        valid_ds = _dataset(ratings.iloc[valid_idx], names, classes)
        test_ds = None if test is None else _dataset(test, names, classes, labelled=False)
        data = cls.create(train_ds, valid_ds, test_ds, path=path, bs=bs, val_bs=val_bs, num_workers=num_workers,
                          device=device, collate_fn=batch_as_is, seed=seed, **kwargs)
        data.names, data._classes = list(names), classes
        return data

    @property
    def user_name(self) -> str:
        return self.names[0]

    @property
    def item_name(self) -> str:
        return self.names[1]

    @property
    def classes(self) -> dict:
        """{user column: ['#na#', user names...], item column: ['#na#', item names...]}."""
        return self._classes

    @property
    def loss_func(self) -> nn.Module:
        """The loss `Learner` uses unless given one: the mean squared error of the ratings."""
        return nn.MSELoss()

    def encode_rows(self, users, items, warn: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """Codes of `users` and `items` (sequences of names); with `warn`, an `UnknownNameWarning`
        names those the training data did not have (they get code 0)."""
        codes = [encode(np.asarray(values), self.classes[name])[0] for values, name in zip((users, items), self.names)]
        if warn:
            for values, code, name in zip((users, items), codes, self.names):
                unknown = [v for v, c in zip(np.asarray(values).tolist(), code.tolist()) if c == 0]
                if unknown:
                    warnings.warn(f"{name} {format_list(unknown)} not in the training data: code 0 ('{UNKNOWN}'), "
                                  "whose factors and bias are zero, so the prediction rests on the other side's "
                                  "bias.", UnknownNameWarning, stacklevel=4)
        return codes[0], codes[1]

    def one_item(self, item):
        """A batch of one row for `predict`: `item` is a row with the user and item columns (a pandas
        Series or a dict) or a `(user, item)` pair. Unknown names get code 0, with a warning."""
        if isinstance(item, (tuple, list)) and len(item) == 2:
            user, thing = item
        else:
            try:
                user, thing = item[self.user_name], item[self.item_name]
            except (KeyError, TypeError, IndexError) as e:
                raise DataError(f"predict needs a row with columns {self.user_name!r} and {self.item_name!r} "
                                f"(a Series or a dict) or a (user, item) pair; got {item!r}.") from e
        users, items = self.encode_rows([user], [thing])
        x = to_device((users, items), self.device)
        return x, torch.zeros(1, device=self.device)

    def decode_preds(self, probs: torch.Tensor, thresh: float = 0.5) -> list:
        """The predicted ratings as floats."""
        return probs.reshape(-1).tolist()

    def show_batch(self, rows: int = 5, ds_type: DatasetType = DatasetType.Train, **kwargs):
        """The first `rows` rows of a batch as a DataFrame (user and item names, rating): a notebook
        shows it as a table."""
        pd = require_pandas()
        (users, items), ratings = self.one_batch(ds_type)
        user_classes, item_classes = self.classes[self.user_name], self.classes[self.item_name]
        return pd.DataFrame({self.user_name: [user_classes[i] for i in users[:rows].tolist()],
                             self.item_name: [item_classes[i] for i in items[:rows].tolist()],
                             "target": ratings[:rows].tolist()})

    def export_state(self) -> dict:
        """The generic state plus the column names and the user and item names (plain data)."""
        state = super().export_state()
        state["classes"] = None  # the generic field is a list of class names; these are in `collab`
        state["collab"] = {"names": list(self.names), "classes": [[_plain(v) for v in self.classes[n]]
                                                                  for n in self.names[:2]]}
        return state

    @classmethod
    def load_export_state(cls, state: dict, device=None) -> CollabDataBunch:
        self = super().load_export_state(state, device)
        self.names = list(state["collab"]["names"])
        self._classes = dict(zip(self.names[:2], state["collab"]["classes"]))
        return self

    def __repr__(self):
        sizes = ", ".join(f"{len(v) - 1} {k}" for k, v in self.classes.items())
        if self.inference_only:
            return f"{type(self).__name__}(inference only, {sizes}; device={self.device})"
        parts = [f"{name}: {len(dl.dataset)} ratings" for name, dl in
                 (("train", self.train_dl), ("valid", self.valid_dl), ("test", self.test_dl)) if dl is not None]
        return f"{type(self).__name__}({', '.join(parts)}; {sizes}; device={self.device}; path={self.path})"


def _column_names(df, user_name, item_name, rating_name) -> list[str]:
    pd = require_pandas()
    if not isinstance(df, pd.DataFrame):
        raise DataError(f"CollabDataBunch.from_df needs a pandas DataFrame of ratings, got {type(df).__name__}.")
    columns = list(df.columns)
    if len(columns) < 3 and None in (user_name, item_name, rating_name):
        raise DataError(f"The ratings have columns {columns}: name the user, item and rating columns "
                        "(user_name=, item_name=, rating_name=) or give at least three columns.")
    names = [ifnone(user_name, columns[0]), ifnone(item_name, columns[1]), ifnone(rating_name, columns[2])]
    missing = [n for n in names if n not in columns]
    if missing:
        raise DataError(f"Column {format_list([repr(m) for m in missing])} is not in the ratings; its columns are "
                        f"{format_list(columns, 20)}.")
    if len(df) == 0:
        raise DataError("The ratings DataFrame has no rows.")
    return names


def _ratings_column(df, name) -> torch.Tensor:
    pd = require_pandas()
    values = pd.to_numeric(df[name], errors="coerce").to_numpy(dtype=np.float32, na_value=np.nan)
    bad = np.flatnonzero(np.isnan(values))
    if len(bad):
        shown = [f"{df.index[i]!r}: {df[name].iloc[i]!r}" for i in bad[:5]]
        raise DataError(f"Column {name!r} must hold numbers; {len(bad)} rows do not (index: value) "
                        f"{format_list(shown)}. Drop or fill them first.")
    return torch.from_numpy(values)


def _dataset(df, names, classes, labelled: bool = True) -> RatingsDataset:
    """Rows of `df` encoded with the training names; without ratings (a test set) the targets are zeros."""
    user_name, item_name, rating_name = names
    for name in (user_name, item_name):
        if name not in df.columns:
            raise DataError(f"Column {name!r} is not in the test rows; their columns are "
                            f"{format_list(list(df.columns), 20)}.")
    users = encode(df[user_name].to_numpy(), classes[user_name])[0]
    items = encode(df[item_name].to_numpy(), classes[item_name])[0]
    has_ratings = labelled or rating_name in df.columns
    ratings = _ratings_column(df, rating_name) if has_ratings else torch.zeros(len(df))
    return RatingsDataset(torch.stack([users, items]), ratings)


def _plain(value):
    """A name as plain data for the export: str, int, float and bool stay, anything else becomes str."""
    return value if isinstance(value, (str, int, float, bool)) else str(value)
