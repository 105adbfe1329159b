"""Layer 6: tables through the data block API (`TabularList`) and their DataBunch (`TabularDataBunch`).

    TabularList.from_df(df, cat_names=, cont_names=, procs=[FillMissing, Categorify, Normalize])
        .split_by_idx(valid_idx).label_from_df(cols=dep_var).add_test(test).databunch(bs=64)

The items of a TabularList are the rows of its DataFrame (`inner_df`). When the chain ends in
`databunch`, the processors learn from the training rows, every set is converted once into tensors
(`TabularDataset`), and batches are index operations on them (`TabularDataLoader`).
"""
from __future__ import annotations

import torch

from ..core import ifnone, listify
from ..data import (
    DataBunch,
    DataError,
    DatasetType,
    DeviceDataLoader,
    EmptyLabelList,
    ItemList,
)
from ..data.categories import plain_value, require_pandas
from ..layers import emb_sz_rule
from .loader import TabularDataLoader, TabularDataset
from .processor import TabularProcessor
from .procs import TabularError

__all__ = ["TabularDataBunch", "TabularLine", "TabularList"]


class TabularLine:
    """One row of a table as the model and a person see it: `cats`/`conts` tensors and the decoded
    values by column name (`values`)."""

    def __init__(self, cats, conts, values: dict):
        self.cats = cats
        self.conts = conts
        self.values = values
        self.data = (cats, conts)

    def __str__(self):
        return "; ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in self.values.items())

    def __repr__(self):
        return f"TabularLine {self}"


class TabularList(ItemList):
    """Rows of a pandas DataFrame with categorical columns `cat_names`, continuous columns `cont_names`
    and the processors `procs` (classes, run in order, e.g. [FillMissing, Categorify, Normalize])."""

    def __init__(self, items, path=".", inner_df=None, label_cls=None, cat_names=None, cont_names=None, procs=None,
                 **settings):
        super().__init__(items, path=path, inner_df=inner_df, label_cls=label_cls, cat_names=listify(cat_names),
                         cont_names=listify(cont_names), procs=listify(procs), **settings)

    @classmethod
    def from_df(cls, df, path=".", cat_names=None, cont_names=None, procs=None, **kwargs) -> TabularList:
        """The rows of `df`; `cont_names` default to every column that is not categorical (nor the
        label, which `label_from_df` names later, so pass `cont_names` when the label is numeric)."""
        _check_frame(df)
        cat_names = listify(cat_names)
        if cont_names is None:
            cont_names = [c for c in df.columns if c not in cat_names]
        missing = [c for c in [*cat_names, *listify(cont_names)] if c not in df.columns]
        if missing:
            raise TabularError(f"The table has no column {missing[0]!r}; its columns: {list(df.columns)}.")
        return cls(range(len(df)), path=path, inner_df=df, cat_names=cat_names, cont_names=cont_names, procs=procs,
                   **kwargs)

    def get(self, i: int):
        """Row `i` of the table (a pandas Series)."""
        return self.inner_df.iloc[i]

    def add(self, other: TabularList) -> TabularList:
        pd = require_pandas()
        return self.new([*self.items, *other.items], inner_df=pd.concat([self.inner_df, other.inner_df]))

    @classmethod
    def build_databunch(cls, lls, path, bs=64, val_bs=None, num_workers=None, dl_tfms=None, device=None,
                        collate_fn=None, no_check=False, seed=None, **kwargs):
        """Fit the processors on the training rows, convert every set to tensors, and load them."""
        if kwargs:
            raise DataError(f"Unknown databunch argument(s) {sorted(kwargs)} for a TabularList.")
        x = lls.train.x
        processor = TabularProcessor(x.settings["cat_names"], x.settings["cont_names"], x.settings["procs"])
        processor.fit(x.inner_df)

        def convert(ll, what):
            cats, conts = processor.tensors(ll.x.inner_df, what)
            return TabularDataset(cats, conts, ll.y, frame=ll.x.inner_df, processor=processor)
        train, valid = convert(lls.train, "training table"), convert(lls.valid, "validation table")
        test = None if lls.test is None else convert(lls.test, "test table")
        if test is not None and not test.labelled and train.targets.is_floating_point():  # placeholder targets
            test.targets = train.targets.new_zeros(len(test), *train.targets.shape[1:])  # shaped as regression's
        data = TabularDataBunch.create(train, valid, test, path=path, bs=bs, val_bs=val_bs, device=device,
                                       dl_tfms=dl_tfms, seed=seed, processor=processor)
        data.label_lists = lls
        data.loss_func = lls.train.y.loss_func
        return data


class TabularDataBunch(DataBunch):
    """Training, validation and test tables as tensors: batches are `((cats, conts), targets)` with
    `cats` int64 `(bs, n_cat)` and `conts` float32 `(bs, n_cont)`. `processor` holds the processors
    fitted on the training rows (and the final `cat_names`/`cont_names`); `export` keeps its state."""

    @classmethod
    def from_df(cls, path, df, dep_var, valid_idx, procs=None, cat_names=None, cont_names=None, classes=None,
                test_df=None, bs: int = 64, val_bs: int | None = None, num_workers: int | None = None, dl_tfms=None,
                device=None, no_check: bool = False, label_cls=None, **kwargs) -> TabularDataBunch:
        """fastai v1's one-call factory: the rows `valid_idx` of `df` for validation, `dep_var` the
        label (a class; floats give regression, or pass `label_cls=FloatList`), `test_df` unlabelled."""
        cat_names = listify(cat_names)
        cont_names = ifnone(cont_names, [c for c in df.columns if c not in cat_names and c not in listify(dep_var)])
        src = TabularList.from_df(df, path=path, cat_names=cat_names, cont_names=cont_names, procs=procs)
        lls = src.split_by_idx(valid_idx).label_from_df(cols=dep_var, classes=classes, label_cls=label_cls, **kwargs)
        if test_df is not None:
            lls.add_test(TabularList.from_df(test_df, path=path, cat_names=cat_names, cont_names=cont_names))
        return lls.databunch(bs=bs, val_bs=val_bs, num_workers=num_workers, dl_tfms=dl_tfms, device=device,
                             no_check=no_check)

    @classmethod
    def create(cls, train_ds, valid_ds, test_ds=None, path=".", bs: int = 64, val_bs: int | None = None,
               device=None, dl_tfms=None, seed: int | None = None, processor=None, **kwargs) -> TabularDataBunch:
        """Loaders that slice the data sets' tensors: training shuffled (by `seed` when given) and
        dropping a last partial batch; the others in order, `val_bs` (default `bs`) at a time."""
        val_bs = ifnone(val_bs, bs)
        generator = torch.Generator().manual_seed(seed) if seed is not None else None
        train_dl = TabularDataLoader(train_ds, batch_size=bs, shuffle=True, drop_last=len(train_ds) > bs,
                                     generator=generator)

        def in_order(ds):
            return None if ds is None else TabularDataLoader(ds, batch_size=val_bs)
        data = cls(train_dl, in_order(valid_ds), in_order(train_ds), in_order(test_ds), device=device,
                   dl_tfms=dl_tfms, path=path, **kwargs)
        data.processor = processor if processor is not None else train_ds.processor
        return data

    # --- what the model and a person read ------------------------------------------------------
    @property
    def cat_names(self) -> list:
        return self.processor.cat_names

    @property
    def cont_names(self) -> list:
        return self.processor.cont_names

    def get_emb_szs(self, sz_dict=None) -> list[tuple[int, int]]:
        """(number of codes, embedding width) per categorical column: `emb_sz_rule`, or `sz_dict[name]`."""
        sz_dict = sz_dict or {}
        return [(n, int(sz_dict.get(name, emb_sz_rule(n))))
                for name, n in zip(self.cat_names, self.processor.cardinalities())]

    def decoded_rows(self, idxs=None, ds_type: DatasetType = DatasetType.Valid):
        """Rows `idxs` (default: all) of a set as a DataFrame of the model's inputs, decoded: category
        names (`#na#` for code 0) and continuous values before normalisation, with the label."""
        ds = self.dl(ds_type).dataset
        idx = torch.arange(len(ds)) if idxs is None else torch.as_tensor(list(idxs), dtype=torch.long)
        frame = self.processor.decode(ds.cats[idx], ds.conts[idx])
        if ds.labelled:
            frame["target"] = [str(ds.y.reconstruct(t)) for t in ds.targets[idx]]
        return frame

    def plot_top_losses(self, interp, k: int = 9, largest: bool = True, **kwargs):
        """A table's top losses are its rows: `interp.plot_tab_top_losses(k, largest)`, a DataFrame."""
        return interp.plot_tab_top_losses(k, largest)

    def one_batch_rows(self, rows: int = 5, ds_type: DatasetType = DatasetType.Train):
        """The first `rows` rows of one batch of `ds_type`, decoded (see `decoded_rows`)."""
        (cats, conts), y = self.one_batch(ds_type, detach=False, cpu=False)
        cats = cats[:rows].cpu()
        conts = conts[:rows].cpu()
        y = y[:rows].cpu()
        frame = self.processor.decode(cats, conts)
        ds = self.dl(ds_type).dataset
        if ds.labelled:
            frame["target"] = [str(ds.y.reconstruct(t)) for t in y]
        return frame

    def show_batch(self, rows: int = 5, ds_type: DatasetType = DatasetType.Train, **kwargs) -> None:
        """Print `rows` rows of a batch as a table: category names, continuous values as in the table
        (before normalisation, after filling), and the target."""
        table = self.one_batch_rows(rows, ds_type)
        print(table.to_string(index=False, max_colwidth=25, float_format=lambda v: f"{v:.6g}"))

    def one_item(self, item):
        """A batch of one row for `Learner.predict`: `item` is a row of a DataFrame (a Series, such as
        `df.iloc[0]`), a one-row DataFrame or a dict; the label column, if there, is ignored. An unseen
        category becomes `#na#`; a missing column or a text value in a continuous column raises a
        TabularError naming the column."""
        pd = require_pandas()
        if isinstance(item, pd.DataFrame) and len(item) != 1:
            raise TabularError(f"predict takes one row; got a DataFrame of {len(item)} rows (use get_preds on a "
                               "test set, or predict row by row).")
        cats, conts = self.processor.tensors(item, "row")
        dummy = torch.zeros(1, dtype=torch.long, device=self.device)
        return (cats.to(self.device), conts.to(self.device)), dummy

    def add_test(self, items, label=None) -> TabularDataBunch:
        """Add (or replace) the unlabelled test set: a DataFrame or a TabularList, whose rows go through
        the training processors (also on a Learner from `load_learner`), then
        `learn.get_preds(DatasetType.Test)`."""
        if isinstance(items, TabularDataset):
            ds = items
        else:
            frame = items.inner_df if isinstance(items, TabularList) else items
            cats, conts = self.processor.tensors(frame, "test table")
            y = EmptyLabelList([label] * len(cats)).process()
            y.classes = self.classes
            ds = TabularDataset(cats, conts, y, frame=frame, processor=self.processor)
        bs = 64 if self.valid_dl is None else self.valid_dl.batch_size
        tfms = [] if self.valid_dl is None else self.valid_dl.tfms
        self.test_dl = DeviceDataLoader(TabularDataLoader(ds, batch_size=bs), self.device, tfms)
        return self

    def save(self, fname="data_save.json"):
        raise DataError("A TabularDataBunch is rebuilt from its DataFrame, not from a saved file: keep the table "
                        "(df.to_csv / df.to_parquet) and run the same data block chain. `learn.export()` keeps the "
                        "fitted processors for inference.")

    # --- export --------------------------------------------------------------------------------
    def export_state(self) -> dict:
        state = super().export_state()
        state["classes"] = None if self.classes is None else [plain_value(c) for c in self.classes]
        state["processor"] = self.processor.state()
        return state

    @classmethod
    def load_export_state(cls, state: dict, device=None) -> TabularDataBunch:
        self = super().load_export_state(state, device=device)
        self.processor = TabularProcessor.from_state(state["processor"])
        return self

    def __repr__(self):
        base = super().__repr__()
        if self.inference_only:
            return base
        return f"{base[:-1]}; cat_names={self.cat_names}, cont_names={self.cont_names})"


def _check_frame(df) -> None:
    pd = require_pandas()
    if not isinstance(df, pd.DataFrame):
        raise TabularError(f"TabularList.from_df needs a pandas DataFrame, got {type(df).__name__}.")

