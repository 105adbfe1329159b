"""Layer 6: the processors of a table (fastai v1's `FillMissing`, `Categorify`, `Normalize`) and
`TabularProcessor`, which runs them in order and turns a pandas DataFrame into the two tensors a
tabular model reads: category codes `(n, n_cat)` int64 and continuous values `(n, n_cont)` float32.

Each processor learns its state from the training rows only (`fit`) and applies it to any rows
(`apply`): the validation and test sets, or one row at `predict` time. The state is plain data
(`state()`), so `Learner.export` keeps it without pickling a class. Nothing changes the caller's
DataFrame: the processors work on a copy of the columns they need.
"""
from __future__ import annotations

import math
from enum import Enum

import numpy as np
import torch

from ..core import import_ref, object_ref
from ..data import DataError, format_list
from ..data.categories import NA_CATEGORY, category_codes, category_names, require_pandas

__all__ = [
    "NA_CATEGORY",
    "Categorify",
    "FillMissing",
    "FillStrategy",
    "Normalize",
    "TabularError",
    "TabularProc",
    "TabularProcessor",
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

    def apply(self, df) -> None:
        for name in self.cat_names:
            expected, found = self.kinds.get(name), _kind(df[name])
            if expected and found and found != expected:
                bad = df[name].dropna().unique()[:3].tolist()
                raise TabularError(f"Column {name!r} is categorical with {expected} values in the training data, "
                                   f"but holds {found} values here (e.g. {bad}). Convert it to the training type.")
            df[name] = category_codes(df[name], self.categories[name])

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

    def apply(self, df) -> None:
        for name in self.cont_names:
            df[name] = (df[name].astype("float64") - self.means[name]) / self.stds[name]

    def state(self) -> dict:
        return {"means": dict(self.means), "stds": dict(self.stds)}


class TabularProcessor:
    """The processors of one table, in order, and the column lists they end with: `fit(train_df)`
    learns every processor's state, `tensors(df)` gives `(cats int64 (n, n_cat), conts float32
    (n, n_cont))` for any rows with those columns. `state()`/`from_state()` are plain data."""

    def __init__(self, cat_names, cont_names, procs=None):
        self.cat_names, self.cont_names = list(cat_names or []), list(cont_names or [])
        overlap = set(self.cat_names) & set(self.cont_names)
        if overlap:
            raise TabularError(f"Column(s) {sorted(overlap)} are both in cat_names and cont_names; pick one.")
        self.in_cat, self.in_cont = list(self.cat_names), list(self.cont_names)  # the columns a table must have
        self.proc_specs = list(procs or [])
        self.procs = []
        self.fitted = False

    def frame(self, df, what: str = "table"):
        """A copy of the model's input columns of `df`, checked: every column is there, and continuous
        columns hold numbers (a clear TabularError naming the column otherwise)."""
        pd = require_pandas()
        if isinstance(df, dict):
            df = pd.DataFrame([df])
        elif isinstance(df, pd.Series):
            df = df.to_frame().T.infer_objects()
        if not isinstance(df, pd.DataFrame):
            raise TabularError(f"Expected a pandas DataFrame, a row (Series) or a dict of column values; got "
                               f"{type(df).__name__}.")
        needed = self.in_cat + self.in_cont
        missing = [c for c in needed if c not in df.columns]
        if missing:
            kinds = ["categorical" if c in self.in_cat else "continuous" for c in missing]
            raise TabularError(f"The {what} has no column {missing[0]!r} ({kinds[0]} input of this model"
                               f"{'; also missing: ' + format_list(missing[1:]) if len(missing) > 1 else ''}); "
                               f"its columns: {format_list(list(df.columns), 20)}.")
        out = df[needed].copy()
        for name in self.in_cont:
            col = out[name]
            if pd.api.types.is_bool_dtype(col) or not pd.api.types.is_numeric_dtype(col):
                numbers = pd.to_numeric(col, errors="coerce")
                bad = col[numbers.isna() & col.notna()]
                if len(bad):
                    raise TabularError(f"Column {name!r} is continuous, so it must hold numbers; it holds "
                                       f"{format_list(bad.unique()[:5].tolist())} ({col.dtype}). Convert it, or "
                                       "list it in cat_names.")
                out[name] = numbers.astype("float64")
            infinite = np.isinf(out[name].to_numpy(dtype="float64", na_value=np.nan))
            if infinite.any():  # mean and std would be inf or NaN, and so would every prediction
                rows = format_list(out.index[infinite][:5].tolist())
                raise TabularError(f"Column {name!r} of the {what} holds infinite values (rows {rows}); replace them "
                                   "(e.g. df[col].replace([np.inf, -np.inf], np.nan) to treat them as missing).")
        return out

    def fit(self, df) -> TabularProcessor:
        """Build and fit the processors in order, each on the columns and rows the previous one left
        (FillMissing's `_na` columns reach Categorify), on the training rows `df`."""
        frame = self.frame(df, "training table")
        self.cat_names = list(self.in_cat)
        self.cont_names = list(self.in_cont)
        self.procs = []
        for spec in self.proc_specs:
            proc = self._make(spec)
            proc.fit(frame)
            proc.apply(frame)
            self._add(proc)
        self.fitted = True
        return self

    def _make(self, spec) -> TabularProc:
        if isinstance(spec, TabularProc):
            spec.cat_names, spec.cont_names = list(self.cat_names), list(self.cont_names)
            return spec
        proc = spec(self.cat_names, self.cont_names) if callable(spec) else spec
        if not isinstance(proc, TabularProc):
            raise TabularError(f"{spec!r} is not a tabular processor (FillMissing, Categorify, Normalize or a "
                               "TabularProc subclass).")
        return proc

    def _add(self, proc: TabularProc) -> None:
        self.procs.append(proc)
        self.cat_names, self.cont_names = list(proc.cat_names), list(proc.cont_names)

    def process(self, df, what: str = "table"):
        """The processed copy of `df`'s input columns (codes and normalised values)."""
        if not self.fitted:
            raise TabularError("The processors have not learnt from training rows yet (call fit first).")
        frame = self.frame(df, what)
        for proc in self.procs:
            proc.apply(frame)
        return frame

    def tensors(self, df, what: str = "table") -> tuple[torch.Tensor, torch.Tensor]:
        """`(cats, conts)`: int64 `(n, n_cat)` codes and float32 `(n, n_cont)` values of `df`'s rows."""
        frame = self.process(df, what)
        cats, conts = self.encode(frame)
        return cats, conts

    def encode(self, frame) -> tuple[torch.Tensor, torch.Tensor]:
        """The tensors of an already processed frame."""
        n = len(frame)
        if self.cat_names:
            # a copy: pandas may hand out a read-only view (copy-on-write), which torch warns about
            cats = torch.from_numpy(np.array(frame[self.cat_names].to_numpy(dtype=np.int64), copy=True))
            if not self.categorify:  # no Categorify: the columns must already be codes
                _check_codes(cats, self.cat_names)
        else:
            cats = torch.zeros(n, 0, dtype=torch.long)
        conts = torch.from_numpy(np.array(frame[self.cont_names].to_numpy(dtype=np.float32), copy=True)) \
            if self.cont_names else torch.zeros(n, 0)
        return cats, conts

    @property
    def categorify(self) -> Categorify | None:
        return next((p for p in self.procs if isinstance(p, Categorify)), None)

    @property
    def normalize(self) -> Normalize | None:
        return next((p for p in self.procs if isinstance(p, Normalize)), None)

    @property
    def classes(self) -> dict:
        """{categorical column: [names of its codes]}; `#na#` is code 0."""
        proc = self.categorify
        return {} if proc is None else proc.classes

    def cardinalities(self) -> list[int]:
        """Number of codes (with `#na#`) of each categorical column, for the embeddings."""
        classes = self.classes
        if set(classes) != set(self.cat_names):
            raise TabularError("Categorical columns need the Categorify processor (procs=[FillMissing, Categorify, "
                               "Normalize]) so that their codes and sizes are known.")
        return [len(classes[n]) for n in self.cat_names]

    def decode(self, cats: torch.Tensor, conts: torch.Tensor):
        """A DataFrame of rows as a person reads them: category names and un-normalised numbers."""
        pd = require_pandas()
        classes, norm = self.classes, self.normalize
        out = {}
        for j, name in enumerate(self.cat_names):
            codes = cats[:, j].tolist()
            names = classes.get(name)
            out[name] = [names[c] if names is not None and 0 <= c < len(names) else c for c in codes]
        for j, name in enumerate(self.cont_names):
            values = conts[:, j].double()
            if norm is not None and name in norm.means:
                values = values * norm.stds[name] + norm.means[name]
            out[name] = values.tolist()
        return pd.DataFrame(out, columns=[*self.cat_names, *self.cont_names])

    # --- plain-data state, for export --------------------------------------------------------
    def state(self) -> dict:
        return {"cat_names": self.in_cat, "cont_names": self.in_cont,
                "procs": [{"ref": object_ref(type(p)), "state": p.state(), **_settings(p)} for p in self.procs]}

    @classmethod
    def from_state(cls, state: dict) -> TabularProcessor:
        """The fitted processors that `state()` described, without the training rows."""
        self = cls(state["cat_names"], state["cont_names"])
        for entry in state["procs"]:
            proc = import_ref(entry["ref"])(self.cat_names, self.cont_names, **entry.get("settings", {}))
            proc.load_state(entry["state"])
            self._add(proc)
        self.fitted = True
        return self

    def __repr__(self):
        return f"TabularProcessor(cat_names={self.cat_names}, cont_names={self.cont_names}, procs={self.procs})"


def _settings(proc: TabularProc) -> dict:
    if isinstance(proc, FillMissing):
        return {"settings": {"fill_strategy": proc.fill_strategy.value, "add_col": proc.add_col,
                             "fill_val": proc.fill_val}}
    return {}


def _check_codes(cats: torch.Tensor, names) -> None:
    if len(cats) and int(cats.min()) < 0:
        col = names[int((cats < 0).any(0).nonzero()[0])]
        raise TabularError(f"Column {col!r} has negative codes; without Categorify, categorical columns must hold "
                           "codes 0..n-1.")
