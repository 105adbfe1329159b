"""Layer 6: `TabularProcessor`, which runs a table's processors (`procs`) in order and turns a pandas
DataFrame into the two tensors a tabular model reads: category codes `(n, n_cat)` int64 and continuous
values `(n, n_cont)` float32; its state is plain data, for export.
"""
from __future__ import annotations

import numpy as np
import torch

from ..core import import_ref, object_ref
from ..data import format_list
from ..data.categories import require_pandas
from .procs import Categorify, FillMissing, Normalize, TabularError, TabularProc

__all__ = ["TabularProcessor"]


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
