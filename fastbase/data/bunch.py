"""Layer 2: DataBunch, the generic container of training, validation and test loaders.

Knows nothing about images: it moves batches to the device, applies batch transforms (such as
augmentation on the device, then normalisation), and tells the Learner about the classes and
whether labels are multi-label. Datasets handed to it yield `(x, y)` pairs and may carry
`classes` (list of names), `c` (number of outputs) and `multi_label` (bool).
"""
from __future__ import annotations

import copy

import torch
from torch.utils.data import DataLoader, Dataset, Subset
from torch.utils.data.dataloader import default_collate

from ..core import Path, defaults, ifnone, listify, seed_worker, to_device
from .base import DataError, DatasetType, EmptyDatasetError
from .items import ItemBase, prediction_item
from .loader import DeviceDataLoader, Normalizer
from .task import TaskData
from .workers import resolve_num_workers

__all__ = ["DataBunch", "label_attr"]

LABEL_ATTRS = ("classes", "c", "multi_label")


def label_attr(ds: Dataset, name: str):
    """The one optional protocol a DataBunch reads from its training dataset: a Dataset may carry
    `classes` (the class names), `c` (the number of model outputs) and `multi_label` (the item lists'
    `LabelList` does; a plain torch Dataset need not). `name`'s value, None where the dataset has none."""
    if name not in LABEL_ATTRS:
        raise DataError(f"{name!r} is not a label attribute of a dataset; those are {', '.join(LABEL_ATTRS)}.")
    return getattr(ds, name, None)


class DataBunch(TaskData):
    """Training, validation and optional test loaders on one device, with shared batch transforms.

    `classes`, `c` and `multi_label` come from the training dataset. Build one with `create` from
    datasets, or pass DataLoaders directly.
    """

    def __init__(self, train_dl: DataLoader, valid_dl: DataLoader, fix_dl: DataLoader | None = None,
                 test_dl: DataLoader | None = None, device=None, dl_tfms=None, path=".", valid_tfms=None,
                 train_tfms=None):
        """`dl_tfms` run on every loader's batches; `train_tfms` only on the training loader's (e.g. the
        random augmentation), `valid_tfms` only on the validation, fix and test loaders'."""
        self.device = torch.device(ifnone(device, defaults.device))
        self.path = Path(path)
        self.norm: Normalizer | None = None

        def wrap(dl, extra=()):
            return None if dl is None else DeviceDataLoader(dl, self.device, [*listify(dl_tfms), *extra])

        self.train_dl = wrap(train_dl, listify(train_tfms))
        self.valid_dl = wrap(valid_dl, listify(valid_tfms))
        self.fix_dl = wrap(fix_dl, listify(valid_tfms))
        self.test_dl = wrap(test_dl, listify(valid_tfms))
        _check_not_empty(self.train_dl.dataset, "training")
        if len(self.train_dl) == 0:
            raise EmptyDatasetError(f"The training loader has no batch: {len(self.train_ds)} items with batch size "
                                    f"{self.train_dl.batch_size} and drop_last. Use a smaller `bs`.")

    @classmethod
    def create(cls, train_ds: Dataset, valid_ds: Dataset, test_ds: Dataset | None = None, path=".", bs: int = 64,
               val_bs: int | None = None, num_workers: int | None = None, dl_tfms=None, device=None,
               collate_fn=default_collate, seed: int | None = None, fix_ds: Dataset | None = None,
               **kwargs) -> DataBunch:
        """Build the loaders: train shuffled (reproducibly when `seed` is given) and dropping a last
        partial batch when there is more than one batch; valid/test/fix in order, `val_bs` (default `bs`).

        `fix_ds` is the training set as the Fix loader should read it (default `train_ds`), for datasets
        whose training items are prepared for augmentation. Other keyword arguments go to `__init__`
        (`train_tfms`, `valid_tfms`)."""
        _check_not_empty(train_ds, "training")
        device = torch.device(ifnone(device, defaults.device))
        num_workers = resolve_num_workers(num_workers, device)
        val_bs = ifnone(val_bs, bs)
        common = {"num_workers": num_workers, "collate_fn": collate_fn, "pin_memory": device.type == "cuda",
                  "worker_init_fn": seed_worker, "persistent_workers": num_workers > 0}
        generator = torch.Generator().manual_seed(seed) if seed is not None else None
        train_dl = DataLoader(train_ds, batch_size=bs, shuffle=True, drop_last=len(train_ds) > bs,
                              generator=generator, **common)
        valid_dl = DataLoader(valid_ds, batch_size=val_bs, shuffle=False, **common)
        fix_dl = DataLoader(ifnone(fix_ds, train_ds), batch_size=val_bs, shuffle=False, **common)
        test_dl = None if test_ds is None else DataLoader(test_ds, batch_size=val_bs, shuffle=False, **common)
        return cls(train_dl, valid_dl, fix_dl, test_dl, device=device, dl_tfms=dl_tfms, path=path, **kwargs)

    # --- what the Learner asks -------------------------------------------------------------
    @property
    def inference_only(self) -> bool:
        """True for a DataBunch rebuilt by `load_export_state` (no loaders, no items)."""
        return hasattr(self, "_inference_state")

    @property
    def train_ds(self):
        return None if self.train_dl is None else self.train_dl.dataset

    @property
    def valid_ds(self):
        return self.valid_dl.dataset

    @property
    def test_ds(self):
        return None if self.test_dl is None else self.test_dl.dataset

    @property
    def classes(self) -> list | None:
        if self.inference_only:
            return self._inference_state.get("classes")
        return label_attr(self.train_ds, "classes")

    @property
    def c(self) -> int | None:
        """Number of model outputs: the dataset's `c`, else the number of classes. Settable, as in
        fastai v1 (e.g. `data.c = 2` for a custom head)."""
        if getattr(self, "_c", None) is not None:
            return self._c
        c = self._inference_state.get("c") if self.inference_only else label_attr(self.train_ds, "c")
        return c if c is not None else (len(self.classes) if self.classes is not None else None)

    @c.setter
    def c(self, value: int | None) -> None:
        self._c = value

    @property
    def multi_label(self) -> bool:
        if self.inference_only:
            return bool(self._inference_state.get("multi_label", False))
        return bool(label_attr(self.train_ds, "multi_label"))

    @property
    def dls(self) -> list[DeviceDataLoader]:
        return list(self.named_dls.values())

    @property
    def named_dls(self) -> dict[str, DeviceDataLoader]:
        """The loaders by name ('train', 'valid', 'fix', 'test'), without the ones this DataBunch lacks."""
        named = {"train": self.train_dl, "valid": self.valid_dl, "fix": self.fix_dl, "test": self.test_dl}
        return {name: dl for name, dl in named.items() if dl is not None}

    def dl(self, ds_type: DatasetType = DatasetType.Valid) -> DeviceDataLoader:
        """The loader for `ds_type`; a clear error for a test set that was never added."""
        loader = {DatasetType.Train: self.train_dl, DatasetType.Valid: self.valid_dl,
                  DatasetType.Fix: self.fix_dl, DatasetType.Test: self.test_dl}.get(DatasetType(ds_type))
        if self.inference_only and loader is None:
            raise DataError("This DataBunch was loaded for inference (load_learner): it has no data sets. "
                            "Use `predict`, or build a DataBunch from your data to train or validate.")
        if loader is None:
            raise DataError(f"This DataBunch has no {DatasetType(ds_type).name} set; add one with `add_test`.")
        return loader

    def one_batch(self, ds_type: DatasetType = DatasetType.Train, detach: bool = True, denorm: bool = False,
                  cpu: bool = True):
        """The first batch of a loader, after its transforms; `denorm` undoes normalisation of `x`.
        `detach=False, cpu=False` gives the batch as the loader does (what `pred_batch` and
        `show_results` read). A set without a batch (empty, or fewer items than a batch that the loader
        drops) raises `EmptyDatasetError` naming it."""
        dl = self.dl(ds_type)
        batch = next(iter(dl), None)
        if batch is None:
            raise EmptyDatasetError(_no_batch_message(DatasetType(ds_type), dl))
        x, y = batch
        if denorm and self.norm is not None:
            x = self.norm.denorm(x)
        if detach:
            x, y = to_device((x, y), "cpu") if cpu else (x, y)
            x, y = _detach(x), _detach(y)
        elif cpu:
            x, y = to_device((x, y), "cpu")
        return x, y

    def add_test(self, test_ds: Dataset) -> DataBunch:
        """Add (or replace) the test set; it gets the validation loader's settings and transforms."""
        self.test_dl = self.valid_dl.new(dataset=test_ds, shuffle=False, drop_last=False)
        return self

    # --- smaller and plainer copies, for debugging -----------------------------------------
    def subset(self, n: int, seed: int | None = None, valid=None, bs: int | None = None) -> DataBunch:
        """A copy with `n` training items picked at random (the same ones for the same `seed`), for
        quick runs and debugging. `valid`: None keeps the validation set, an int keeps that many of its
        items (picked with `seed`), a list keeps those indices. `bs`: a new training batch size."""
        n_train = len(self.train_ds)
        if not 1 <= n <= n_train:
            raise DataError(f"subset(n={n}) needs 1 <= n <= {n_train}, the number of training items.")
        pick = _picker(seed)
        train_idx, bs = pick(n_train, n), ifnone(bs, self.train_dl.batch_size)
        shuffle_gen = None if seed is None else torch.Generator().manual_seed(seed)
        new = self.copy(train_dl=self.train_dl.new(dataset=self._take(self.train_ds, train_idx), batch_size=bs,
                                                    drop_last=n > bs, generator=shuffle_gen))
        if self.fix_dl is not None:
            new.fix_dl = self.fix_dl.new(dataset=self._take(self.fix_dl.dataset, train_idx))
        if valid is not None:
            n_valid = len(self.valid_ds)
            if isinstance(valid, int) and not 0 <= valid <= n_valid:
                raise DataError(f"subset(valid={valid}) needs 0 <= valid <= {n_valid}, the number of validation items.")
            idx = pick(n_valid, valid) if isinstance(valid, int) else [int(i) for i in valid]
            new.valid_dl = self.valid_dl.new(dataset=self._take(self.valid_ds, idx))
        return new

    def no_augment(self) -> DataBunch:
        """A copy whose training loader reads the training items in a fixed order, without augmentation
        (through the validation-time transforms, as the Fix loader does): every epoch sees the same
        batches, so a loss that does not fall points at the model, the labels or the normalisation."""
        train = self.train_dl
        plain = self.fix_dl if self.fix_dl is not None else train.new(tfms=self.valid_dl.tfms)
        return self.copy(train_dl=plain.new(batch_size=train.batch_size, shuffle=False, generator=None,
                                             drop_last=train.dl.drop_last))

    def copy(self, **loaders) -> DataBunch:
        """A copy with its own loaders (`loaders` replace some) over the same datasets: normalising or
        iterating the copy leaves this DataBunch as it is."""
        new = copy.copy(self)
        for name in ("train_dl", "valid_dl", "fix_dl", "test_dl"):
            dl = getattr(self, name)
            if name in loaders:
                setattr(new, name, loaders[name])
            elif dl is not None:
                setattr(new, name, dl.new(generator=_clone_generator(dl.dl.generator)))
        return new

    def _take(self, ds: Dataset, indices: list[int]) -> Dataset:
        """Items `indices` of `ds`, keeping what the DataBunch reads from it (`classes`, `c`, `multi_label`)."""
        return _ItemSubset(ds, indices)

    # --- normalisation ---------------------------------------------------------------------
    def batch_stats(self, ds_type: DatasetType = DatasetType.Train) -> tuple[torch.Tensor, torch.Tensor]:
        """Channel-wise (dim 1) mean and std of `x` over one batch, before normalisation."""
        x, _ = self.one_batch(ds_type, denorm=True)
        dims = [d for d in range(x.dim()) if d != 1]
        return x.float().mean(dim=dims), x.float().std(dim=dims)

    def normalize(self, stats=None, do_x: bool = True, do_y: bool = False) -> DataBunch:
        """Normalise `x` in every loader with `stats` = (mean, std), or stats computed from a training
        batch when None; `do_y` normalises targets that are images too, `do_x=False` leaves the inputs
        alone (fastai v1's arguments). Normalising twice replaces the previous stats. Returns self."""
        if self.norm is not None:
            for dl in self.dls:
                dl.remove_tfm(self.norm)
            self.norm = None
        mean, std = stats if stats is not None else self.batch_stats()
        self.norm = Normalizer(mean, std, do_x, do_y)
        for dl in self.dls:
            dl.add_tfm(self.norm)
        return self

    @property
    def stats(self):
        """(mean, std) lists used for normalisation, or None."""
        return None if self.norm is None else (self.norm.mean.tolist(), self.norm.std.tolist())

    def denorm(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.norm is None else self.norm.denorm(x)

    def denorm_y(self, y: torch.Tensor) -> torch.Tensor:
        """Targets (or predictions of them) normalised with `do_y` back to their scale."""
        return y if self.norm is None else self.norm.denorm_y(y)

    # --- inference and export --------------------------------------------------------------
    def one_item(self, item) -> tuple[torch.Tensor, torch.Tensor]:
        """`(xb, yb)`: a batch of one input for `Learner.predict`, on the device and normalised, and a
        dummy target, as fastai v1. The generic DataBunch takes a tensor `x` (or an item, by its
        `data`) as its datasets yield it; subclasses open files, resize, etc."""
        x = torch.as_tensor(item.data if isinstance(item, ItemBase) else item)
        x = to_device(x.unsqueeze(0), self.device)
        return (x if self.norm is None else self.norm.norm(x)), torch.zeros(1, dtype=torch.long, device=self.device)

    def decode_preds(self, probs: torch.Tensor, thresh: float = 0.5) -> list:
        """What a person reads of each prediction in `probs` (n, c) (after the loss's activation): the
        class name of the highest probability (its index when the data have no class names); for
        multi-label data, the list of the labels above `thresh`; for per-pixel probabilities
        (n, c, H, W), the (H, W) map of class indexes. `prediction_item` is the rule."""
        items = [prediction_item(row, self.classes, self.multi_label, thresh)[0] for row in probs]
        return [getattr(item, "obj", item) for item in items]

    def item_files(self, path) -> list[Path]:
        """The files of folder `path` (and its subfolders) that are items of this kind of data, sorted;
        hidden files and folders are left out. Subclasses narrow it (`ImageDataBunch`: image files)."""
        path = Path(path)
        return sorted(p for p in path.rglob("*") if p.is_file()
                      and not any(part.startswith(".") for part in p.relative_to(path).parts))

    def export_state(self) -> dict:
        """Plain data (str, numbers, lists, dicts) that rebuilds an inference-only DataBunch of this
        class with `load_export_state`, without the training items; safe for `weights_only` loading."""
        return {"type": f"{type(self).__module__}:{type(self).__qualname__}",
                "classes": None if self.classes is None else [str(c) for c in self.classes],
                "c": self.c, "multi_label": self.multi_label, "stats": self.stats,
                "norm_xy": None if self.norm is None else [self.norm.do_x, self.norm.do_y]}

    @classmethod
    def load_export_state(cls, state: dict, device=None) -> DataBunch:
        """An inference-only DataBunch from `export_state()`: it knows classes and normalisation and
        turns raw items into batches (`one_item`), but has no loaders."""
        self = cls.__new__(cls)
        self.device = torch.device(ifnone(device, defaults.device))
        self.path = Path(".")
        self.train_dl = self.valid_dl = self.fix_dl = self.test_dl = None
        self.norm = None if state.get("stats") is None else Normalizer(*state["stats"], *(state.get("norm_xy") or []))
        self._inference_state = dict(state)
        return self

    def save(self, fname="data_save.json"):
        """Write the labelled lists this DataBunch was built from (by the data block chain or a factory)
        as plain JSON to `path/fname`; `load_data(path, fname)` builds it again."""
        lists = getattr(self, "label_lists", None)
        if lists is None:
            raise DataError(f"This {type(self).__name__} was not built from item lists, so it has nothing to save; "
                            "build it with the data block API (e.g. ImageList.from_folder(...)...databunch()).")
        lists.path = self.path
        return lists.save(fname)

    # --- display ---------------------------------------------------------------------------
    def show_batch(self, rows: int = 5, ds_type: DatasetType = DatasetType.Train, **kwargs):
        """Draw a batch; needs a DataBunch that knows its kind of item (e.g. `ImageDataBunch`)."""
        raise NotImplementedError(f"{type(self).__name__} cannot draw its items; use a DataBunch made for them, "
                                  "such as ImageDataBunch.")

    def show_results(self, learn, ds_type: DatasetType = DatasetType.Valid, rows: int = 5, **kwargs):
        """Draw items with `learn`'s predictions; needs a DataBunch that knows its kind of item."""
        raise NotImplementedError(f"{type(self).__name__} cannot draw its items; use a DataBunch made for them, "
                                  "such as ImageDataBunch.")

    def __repr__(self):
        if self.inference_only:
            return f"{type(self).__name__}(inference only, {self.c} outputs; device={self.device})"
        parts = [f"{name}: {len(dl.dataset)} items" for name, dl in
                 (("train", self.train_dl), ("valid", self.valid_dl), ("test", self.test_dl)) if dl is not None]
        classes = "" if self.classes is None else f", {len(self.classes)} classes"
        return f"{type(self).__name__}({', '.join(parts)}{classes}; device={self.device}; path={self.path})"


class _ItemSubset(Subset):
    """Some items of a dataset, with its label attributes (`label_attr`: `classes`, `c`, `multi_label`)."""

    @property
    def classes(self):
        return label_attr(self.dataset, "classes")

    @property
    def c(self):
        return label_attr(self.dataset, "c")

    @property
    def multi_label(self):
        return label_attr(self.dataset, "multi_label")


def _picker(seed: int | None):
    """`pick(n, k)`: k sorted indices out of range(n), the same for the same seed."""
    gen = torch.Generator()
    if seed is None:
        gen.seed()
    else:
        gen.manual_seed(seed)
    return lambda n, k: sorted(torch.randperm(n, generator=gen)[:k].tolist())


def _clone_generator(gen: torch.Generator | None) -> torch.Generator | None:
    if gen is None:
        return None
    clone = torch.Generator()
    clone.set_state(gen.get_state())
    return clone


def _detach(t):
    return t.detach() if isinstance(t, torch.Tensor) else t


def _check_not_empty(ds, name: str) -> None:
    try:
        n = len(ds)
    except TypeError:
        return
    if n == 0:
        raise EmptyDatasetError(f"The {name} set is empty: check the folder names, the file pattern or the labels.")


def _no_batch_message(ds_type: DatasetType, dl) -> str:
    """Why `dl` (the loader of `ds_type`) gives no batch, and what to do."""
    name, n = ds_type.name.lower(), len(dl.dataset)
    if n:
        return (f"The {name} loader gives no batch: its {n} item(s) are fewer than bs={dl.batch_size} and it drops "
                "the last partial batch. Use a smaller bs or more items.")
    other = "DatasetType.Valid" if ds_type == DatasetType.Train else "DatasetType.Train"
    return (f"The {name} set of this DataBunch is empty (e.g. after split_none()), so it has no batch to show or "
            f"predict: build the data with a {name} set (split_by_rand_pct(0.2)...) or pass ds_type={other}.")
