"""Layer 6: the processors of a table (fastai v1's `FillMissing`, `Categorify`, `Normalize`);
`processor.TabularProcessor` runs them in order and turns a pandas DataFrame into the tensors a
tabular model reads.

Each processor learns its state from the training rows only (`fit`) and applies it to any rows
(`apply`): the validation and test sets, or one row at `predict` time. The state is plain data
(`state()`), so `Learner.export` keeps it without pickling a class. Nothing changes the caller's
DataFrame: the processors work on a copy of the columns they need. Called as fastai v1 calls them,
`proc(df)` learns from `df` and changes it in place, `proc(df, test=True)` only changes it.
"""
from __future__ import annotations

import math
from enum import Enum

from ..data import DataError
from ..data.categories import NA_CATEGORY, category_codes, category_names, require_pandas

__all__ = [
    "NA_CATEGORY",
    "Categorify",
    "FillMissing",
    "FillStrategy",
    "Normalize",
    "TabularError",
    "TabularProc",
    "category_codes",
    "category_names",
    "require_pandas",
]


class TabularError(DataError):
    """A table that does not fit the processors or the model: the message names the column."""


_TEXT = "text"
_NUMBER = "number"
_BOOL = "bool"


def _kind(values) -> str | None:
    """What a column holds, for the wrong-dtype check: 'text', 'number', 'bool', or None (mixed, empty)."""
    pd = require_pandas()
    values = values.dropna()
    if not len(values):
        return None
    inferred = pd.api.types.infer_dtype(values, skipna=True)
    if inferred in ("string", "bytes"):
        return _TEXT
    if inferred in ("integer", "floating", "mixed-integer-float", "decimal"):
        return _NUMBER
    if inferred == "boolean":
        return _BOOL
    return None


class TabularProc:
    """A processor of some columns: `fit(df)` on the training rows, then `apply(df)` on any rows (it
    may change `df`, which is the processor's own copy). `cat_names`/`cont_names` are the lists
    of the table; a processor may add to them (FillMissing's `_na` columns)."""

    def __init__(self, cat_names, cont_names):
        self.cat_names, self.cont_names = list(cat_names), list(cont_names)

    def fit(self, df) -> None:
        raise NotImplementedError

    def apply(self, df) -> None:
        raise NotImplementedError

    def state(self) -> dict:
        """What `apply` needs, as plain data (str, numbers, lists, dicts)."""
        return {}

    def load_state(self, state: dict) -> None:
        for name, value in state.items():
            setattr(self, name, value)

    @property
    def learnt(self) -> bool:
        """True once the processor has learnt from training rows (or loaded what it learnt)."""
        return True

    @property
    def reads(self) -> list:
        """The columns `apply` reads (FillMissing and Normalize: the continuous ones; Categorify: the
        categorical ones)."""
        return self.cont_names

    def __call__(self, df, test: bool = False) -> None:
        """fastai v1's call, in place on the caller's DataFrame: `proc(train_df)` learns from its rows and
        changes them; `proc(test_df, test=True)` changes them with what the training rows taught."""
        if not test:
            self.fit(df)
        elif not self.learnt:
            raise TabularError(f"{type(self).__name__} has not seen training rows yet: call it on the training "
                               "DataFrame first (proc(train_df)), then proc(test_df, test=True).")
        missing = [n for n in self.reads if n not in df.columns]
        if missing:
            raise TabularError(f"{type(self).__name__}: the DataFrame has no column {missing[0]!r}; its columns: "
                               f"{list(df.columns)}.")
        self.apply_in_place(df)

    def apply_in_place(self, df) -> None:
        """What `proc(df)` does to the caller's DataFrame once the state is learnt: `apply` by default."""
        self.apply(df)

    def __repr__(self):
        return f"{type(self).__name__}({self.state()})"


class FillStrategy(Enum):
    """What FillMissing puts in a missing continuous value: the training median, a constant
    (`fill_val`), or the most common training value."""
    MEDIAN = 1
    COMMON = 2
    CONSTANT = 3


class FillMissing(TabularProc):
    """Missing continuous values get the training median (or `fill_strategy`); for each column with
    missing values in the training rows, a categorical column `<col>_na` (True where it was missing)
    is added, so the model can tell a filled value from a real one. A column with no missing training
    value gets no `_na` column but is still filled (with its training median) elsewhere."""

    def __init__(self, cat_names, cont_names, fill_strategy: FillStrategy = FillStrategy.MEDIAN,
                 add_col: bool = True, fill_val: float = 0.0):
        super().__init__(cat_names, cont_names)
        self.fill_strategy = FillStrategy(fill_strategy)
        self.add_col = add_col
        self.fill_val = fill_val
        self.fill_values: dict = {}
        self.na_cols: list = []

    def fit(self, df) -> None:
        for name in self.cont_names:
            col = df[name]
            if self.fill_strategy == FillStrategy.CONSTANT:
                value = self.fill_val
            elif self.fill_strategy == FillStrategy.COMMON:
                modes = col.mode()
                value = modes.iloc[0] if len(modes) else self.fill_val
            else:
                value = col.median()
            self.fill_values[name] = self.fill_val if value is None or math.isnan(value) else float(value)
        self.na_cols = [n for n in self.cont_names if df[n].isna().any()] if self.add_col else []
        self._add_names()

    @property
    def learnt(self) -> bool:
        return set(self.fill_values) >= set(self.cont_names)

    def _add_names(self) -> None:
        self.cat_names += [f"{n}_na" for n in self.na_cols if f"{n}_na" not in self.cat_names]

    def apply(self, df) -> None:
        for name in self.na_cols:
            df[f"{name}_na"] = df[name].isna()
        for name in self.cont_names:
            df[name] = df[name].fillna(self.fill_values[name])

    def state(self) -> dict:
        return {"fill_values": dict(self.fill_values), "na_cols": list(self.na_cols)}

    def load_state(self, state: dict) -> None:
        super().load_state(state)
        self._add_names()


class Categorify(TabularProc):
    """Categorical columns become codes: 1..k for the k values seen in the training rows (sorted),
    0 (`#na#`) for a missing value or one the training rows do not have. `classes[name]` lists the
    names of the codes, `#na#` first, as fastai v1."""

    def __init__(self, cat_names, cont_names):
        super().__init__(cat_names, cont_names)
        self.categories: dict = {}
        self.kinds: dict = {}

    def fit(self, df) -> None:
        for name in self.cat_names:
            self.categories[name] = category_names(df[name])
            self.kinds[name] = _kind(df[name])

    @property
    def classes(self) -> dict:
        return {name: [NA_CATEGORY, *cats] for name, cats in self.categories.items()}

    @property
    def learnt(self) -> bool:
        return set(self.categories) >= set(self.cat_names)

    @property
    def reads(self) -> list:
        return self.cat_names

    def _check_kind(self, df, name: str) -> None:
        expected, found = self.kinds.get(name), _kind(df[name])
        if expected and found and found != expected:
            bad = df[name].dropna().unique()[:3].tolist()
            raise TabularError(f"Column {name!r} is categorical with {expected} values in the training data, "
                               f"but holds {found} values here (e.g. {bad}). Convert it to the training type.")

    def apply(self, df) -> None:
        for name in self.cat_names:
            self._check_kind(df, name)
            df[name] = category_codes(df[name], self.categories[name])

    def apply_in_place(self, df) -> None:
        """As fastai v1: each column becomes a pandas `category` column of the training values
        (`.cat.categories`, `.cat.codes` with -1 for missing or unseen values); the model's codes are
        those plus 1 (`#na#` is 0)."""
        pd = require_pandas()
        for name in self.cat_names:
            self._check_kind(df, name)
            known = df[name].where(df[name].isin(self.categories[name]))  # unseen values become missing
            df[name] = pd.Categorical(known, categories=self.categories[name], ordered=True)

    def state(self) -> dict:
        return {"categories": {k: list(v) for k, v in self.categories.items()}, "kinds": dict(self.kinds)}


class Normalize(TabularProc):
    """Continuous columns become (x - mean) / std with the training rows' mean and std (a std of 0
    counts as 1, so a constant column becomes 0)."""

    def __init__(self, cat_names, cont_names):
        super().__init__(cat_names, cont_names)
        self.means: dict = {}
        self.stds: dict = {}

    def fit(self, df) -> None:
        for name in self.cont_names:
            col = df[name].astype("float64")
            mean, std = col.mean(), col.std(ddof=0)
            self.means[name] = 0.0 if math.isnan(mean) else float(mean)
            self.stds[name] = 1.0 if math.isnan(std) or std < 1e-7 else float(std)

    @property
    def learnt(self) -> bool:
        return set(self.means) >= set(self.cont_names)

    def apply(self, df) -> None:
        for name in self.cont_names:
            df[name] = (df[name].astype("float64") - self.means[name]) / self.stds[name]

    def state(self) -> dict:
        return {"means": dict(self.means), "stds": dict(self.stds)}
