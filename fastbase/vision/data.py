"""Layer 6: ImageDataBunch, labelled image data in one line, with fastai v1's factories.

`from_folder`, `from_name_re`, `from_name_func`, `from_csv`, `from_df` and `from_lists` only find
the files and their labels; `create_from_items` does the rest for all of them: check the files,
pick the classes, build the datasets and loaders, and attach the batch transforms (augmentation on
the training loader, conversion to float on the others; `normalize` adds normalisation after both).
"""
from __future__ import annotations

import csv
import os
import re

import torch
from torch.utils.data.dataloader import default_collate

from ..core import Path, ifnone, is_listy, to_device
from ..data import DataBunch, DataError, DatasetType, DeviceDataLoader, LabelError
from ..figures import finish_figure, subplots
from .dataset import (
    ImageDataset,
    check_files,
    check_not_empty,
    check_valid_classes,
    encode_labels,
    format_list,
    make_classes,
    size_hw,
    split_by_pct,
)
from .image import (
    Image,
    ResizeMethod,
    check_image,
    get_image_files,
    load_image,
    resize_image,
)
from .item_cache import cache_budget
from .transforms import (
    BatchAugment,
    CenterCrop,
    GeometricTransform,
    LightingTransform,
    RandomCrop,
    ToFloat,
    Zoom,
    needs_canvas,
)

__all__ = ["ImageDataBunch"]


class ImageDataBunch(DataBunch):
    """A DataBunch of labelled images. Batches reach the model as float `(n, 3, *size)` in [0, 1]
    (normalised once `normalize` is called) with int64 class indices, or float multi-hot targets."""

    # --- factories: files and labels ------------------------------------------------------------
    @classmethod
    def from_folder(cls, path, train="train", valid="valid", valid_pct: float | None = None, seed: int | None = None,
                    classes=None, **kwargs) -> ImageDataBunch:
        """Images in `path/train/<class>/` and `path/valid/<class>/`, or only the training folder split
        at random with `valid_pct` (reproducible with `seed`)."""
        path = Path(path)
        train_dir = _folder(path, train, "training")
        items = get_image_files(train_dir)
        skip_bad = kwargs.get("skip_bad", False)
        _check_class_folders(train_dir, items, skip_bad)
        if valid_pct is None:
            valid_items = get_image_files(_folder(path, valid, "validation", hint=True))
        else:
            train_idx, valid_idx = split_by_pct(len(items), valid_pct, seed)
            items, valid_items = [items[i] for i in train_idx], [items[i] for i in valid_idx]
        return cls.create_from_items(path, items, [fn.parent.name for fn in items], valid_items,
                                     [fn.parent.name for fn in valid_items], classes=classes, seed=seed, **kwargs)

    @classmethod
    def from_name_re(cls, path, fnames, pat, valid_pct: float = 0.2, seed: int | None = None, **kwargs):
        """Labels from the first group of the regular expression `pat`, searched in each file's path."""
        regex = re.compile(pat)
        if regex.groups < 1:
            raise LabelError(f"The pattern {pat!r} has no group: put the label part in parentheses, "
                             r"e.g. r'/([^/]+)_\d+.jpg$'.")
        fnames = [Path(fn) for fn in fnames]
        found = [regex.search(fn.as_posix()) for fn in fnames]
        missed = [fn for fn, m in zip(fnames, found) if m is None]
        if missed:
            what = "no file name, e.g." if len(missed) == len(fnames) else \
                f"only some file names: {len(missed)} of {len(fnames)} do not match, like"
            raise LabelError(f"The pattern {pat!r} matches {what} {format_list(missed)}. Fix the pattern (it is "
                             "searched in the whole path, with '/'), or leave those files out of `fnames`.")
        return cls.from_lists(path, fnames, [m.group(1) for m in found], valid_pct=valid_pct, seed=seed, **kwargs)

    @classmethod
    def from_name_func(cls, path, fnames, label_func, valid_pct: float = 0.2, seed: int | None = None, **kwargs):
        """Labels from `label_func(fname)`."""
        labels = []
        for fn in fnames:
            try:
                labels.append(label_func(Path(fn)))
            except Exception as e:
                raise LabelError(f"label_func raised {type(e).__name__}: {e} for {fn}.") from e
        return cls.from_lists(path, fnames, labels, valid_pct=valid_pct, seed=seed, **kwargs)

    @classmethod
    def from_csv(cls, path, folder=".", label_delim: str | None = None, csv_labels="labels.csv",
                 valid_pct: float = 0.2, seed: int | None = None, fn_col=0, label_col=1, suffix: str = "",
                 delimiter: str | None = None, header="infer", **kwargs):
        """File names and labels from columns of `path/csv_labels` (read with the csv module: pandas is
        not needed); files are `path/folder/<name><suffix>`. `header='infer'` takes the first row as
        column names, None means there is none. Several labels per cell with `label_delim`."""
        path = Path(path)
        csv_path = path / csv_labels
        if not csv_path.is_file():
            raise DataError(f"No label file {csv_path}; pass csv_labels= with its name inside {path}.")
        with open(csv_path, newline="") as f:
            rows = [r for r in csv.reader(f, delimiter=delimiter or ",") if r]
        skip = 0 if header is None else (1 if header == "infer" else int(header) + 1)
        names = rows[skip - 1] if skip else None
        fn_i, label_i = (_column(c, names, csv_path) for c in (fn_col, label_col))
        short = [k + skip + 1 for k, r in enumerate(rows[skip:]) if len(r) <= max(fn_i, label_i)]
        if short:
            raise LabelError(f"Rows {format_list(short)} of {csv_path} have fewer than {max(fn_i, label_i) + 1} "
                             "columns; check `delimiter`, `fn_col` and `label_col`.")
        table = [(r[fn_i], r[label_i]) for r in rows[skip:]]
        return cls._from_table(path, table, folder, suffix, label_delim, valid_pct, seed, str(csv_path), **kwargs)

    @classmethod
    def from_df(cls, path, df, folder=".", label_delim: str | None = None, valid_pct: float = 0.2,
                seed: int | None = None, fn_col=0, label_col=1, suffix: str = "", **kwargs):
        """As `from_csv`, from a pandas DataFrame; columns by position or name."""
        try:
            import pandas as pd
        except ImportError as e:
            raise DataError("from_df needs pandas (`pip install pandas`); from_csv and from_lists work without "
                            "it.") from e
        if not isinstance(df, pd.DataFrame):
            raise DataError(f"from_df expects a pandas DataFrame, got {type(df).__name__}.")
        cols = [df.columns[c] if isinstance(c, int) and c not in df.columns else c for c in (fn_col, label_col)]
        missing = [c for c in cols if c not in df.columns]
        if missing:
            raise DataError(f"The DataFrame has no column {missing[0]!r}; its columns: {list(df.columns)}.")
        labels = ["" if pd.isna(v) else str(v) for v in df[cols[1]]]
        table = list(zip((str(v) for v in df[cols[0]]), labels))
        return cls._from_table(path, table, folder, suffix, label_delim, valid_pct, seed, "the DataFrame", **kwargs)

    @classmethod
    def _from_table(cls, path, table, folder, suffix, label_delim, valid_pct, seed, source, **kwargs):
        path = Path(path)
        files = [path / folder / f"{name}{suffix}" for name, _ in table]
        missing = [fn for fn in files if not fn.is_file()]
        if missing and not kwargs.get("skip_bad", False):
            raise LabelError(f"{len(missing)} of the {len(files)} files named in {source} do not exist: "
                             f"{format_list(missing)}. Check `folder` and `suffix` (files are "
                             f"path/folder/<name><suffix>), or pass skip_bad=True to leave them out.")
        unlabelled = [name for name, label in table if label == "" and label_delim is None]
        if unlabelled:
            raise LabelError(f"{len(unlabelled)} rows of {source} have no label: {format_list(unlabelled)}.")
        return cls.from_lists(path, files, [label for _, label in table], valid_pct=valid_pct, seed=seed,
                              label_delim=label_delim, **kwargs)

    @classmethod
    def from_lists(cls, path, fnames, labels, valid_pct: float = 0.2, seed: int | None = None, **kwargs):
        """Files and their labels as two lists (a list of labels per file for multi-label data)."""
        path, fnames, labels = Path(path), [_resolve(path, fn) for fn in fnames], list(labels)
        if len(fnames) != len(labels):
            raise LabelError(f"from_lists got {len(fnames)} file names but {len(labels)} labels.")
        train_idx, valid_idx = split_by_pct(len(fnames), valid_pct, seed)
        pick = lambda idx, seq: [seq[i] for i in idx]
        return cls.create_from_items(path, pick(train_idx, fnames), pick(train_idx, labels), pick(valid_idx, fnames),
                                     pick(valid_idx, labels), seed=seed, **kwargs)

    # --- the common path ----------------------------------------------------------------------
    @classmethod
    def create_from_items(cls, path, train_items, train_labels, valid_items, valid_labels, test=None, classes=None,
                          label_delim: str | None = None, ds_tfms=None, size=None, bs: int = 64,
                          val_bs: int | None = None, num_workers: int | None = None,
                          resize_method: ResizeMethod | None = None, padding_mode: str = "reflection", device=None,
                          check_images: bool = True, skip_bad: bool = False, seed: int | None = None, dl_tfms=None,
                          collate_fn=default_collate, cache_items: bool | None = None) -> ImageDataBunch:
        """Check the files, choose the classes, build the datasets, loaders and batch transforms.

        `ds_tfms` is (train, valid) from `get_transforms()`; `size` an int or (h, w); `test` a folder
        (relative to `path`) or a list of files of unlabelled images. Classes are sorted, as fastai's.
        `cache_items`: keep each decoded, resized image in shared memory after its first epoch
        (`item_cache`; the results are the same). None (default) does it when `size` is set and the
        training and validation items fit in an eighth of the machine's memory; `data.train_ds`
        shows it."""
        path = Path(path)
        train_items, train_labels = check_files(train_items, train_labels, "training", check_images, skip_bad)
        check_not_empty(train_items, "training", path)
        valid_items, valid_labels = check_files(valid_items, valid_labels, "validation", check_images, skip_bad)
        multi = label_delim is not None or any(is_listy(lbl) for lbl in train_labels)
        if multi:
            train_labels, valid_labels = (_split_labels(ls, label_delim) for ls in (train_labels, valid_labels))
        check_valid_classes(train_labels, valid_labels, valid_items, multi, classes)
        classes = list(classes) if classes is not None else make_classes(train_labels, multi)
        train_tfms, valid_tfms = _split_tfms(ds_tfms)
        method = ResizeMethod(ifnone(resize_method, ResizeMethod.CROP))
        common = {"classes": classes, "multi_label": multi, "size": size, "resize_method": method,
                  "padding_mode": padding_mode}
        train_ds = ImageDataset(train_items, encode_labels(train_labels, classes, multi, train_items),
                                canvas=needs_canvas(train_tfms), **common)
        valid_ds = ImageDataset(valid_items, encode_labels(valid_labels, classes, multi, valid_items), **common)
        if cache_items is None:
            cache_items = size is not None and train_ds.cache_nbytes + valid_ds.cache_nbytes <= cache_budget()
        if cache_items:
            train_ds, valid_ds = train_ds.new(cache=True), valid_ds.new(cache=True)
            common["cache"] = True  # for the test set
        test_ds = None
        if test is not None:
            test_items = get_image_files(path / test) if isinstance(test, (str, os.PathLike)) else list(test)
            test_items, _ = check_files(test_items, None, "test", check_images, skip_bad)
            test_ds = ImageDataset(test_items, **common)
        generator = None if seed is None else torch.Generator().manual_seed(seed)
        augment = BatchAugment(train_tfms, size_hw(size), method, padding_mode, generator) if train_tfms else ToFloat()
        data = cls.create(train_ds, valid_ds, test_ds, path=path, bs=bs, val_bs=val_bs, num_workers=num_workers,
                          dl_tfms=dl_tfms, device=device, collate_fn=collate_fn, seed=seed,
                          fix_ds=train_ds.new(canvas=False), train_tfms=[augment], valid_tfms=[ToFloat()])
        data.ds_tfms = (train_tfms, valid_tfms)
        data._set_image_settings(size, method, padding_mode)
        return data

    def _set_image_settings(self, size, resize_method, padding_mode) -> None:
        self.size, self.resize_method, self.padding_mode = size_hw(size), ResizeMethod(resize_method), padding_mode

    def add_test(self, items, check_images: bool = True, skip_bad: bool = False) -> ImageDataBunch:
        """Add (or replace) the test set: image files (a list, or a folder to search), or a dataset."""
        if isinstance(items, (str, os.PathLike)):
            items = get_image_files(items)
        if not isinstance(items, ImageDataset):
            items, _ = check_files(list(items), None, "test", check_images, skip_bad)
            items = self.valid_ds.new(items=items, y=None)
        return super().add_test(items)

    def _take(self, ds, indices):
        """Some items of an ImageDataset as an ImageDataset (`subset`), so it still names files and labels."""
        if not isinstance(ds, ImageDataset):
            return super()._take(ds, indices)
        return ds.new(items=[ds.items[i] for i in indices], y=ds.y[list(indices)] if ds.labelled else None)

    def tta_dl(self, ds_type: DatasetType = DatasetType.Valid, scale: float = 1.35) -> DeviceDataLoader:
        """The `ds_type` items in order, through the training augmentation with a zoom of exactly `scale`
        towards a random point and a random crop window, for test-time augmentation (`Learner.TTA`)."""
        loader, (train_tfms, _) = self.dl(ds_type), getattr(self, "ds_tfms", ([], []))
        kept = [t for t in train_tfms if not isinstance(t, (Zoom, RandomCrop))]
        tfms = [RandomCrop(), *kept, Zoom(max_zoom=scale, min_zoom=scale, p=1.0)]
        augment = BatchAugment(tfms, self.size, self.resize_method, self.padding_mode)
        dataset = loader.dataset.new(canvas=True)
        norm = [] if self.norm is None else [self.norm]
        return loader.new(tfms=[augment, *norm], dataset=dataset, shuffle=False, drop_last=False)

    # --- inference ------------------------------------------------------------------------------
    def item_files(self, path) -> list[Path]:
        """The image files under folder `path` (`get_image_files`: what training reads as images)."""
        return get_image_files(path)

    def one_item(self, item) -> torch.Tensor:
        """A normalised batch of one `(1, 3, *size)` on the device from a file name, a PIL image, an
        `Image`, or a tensor (`3 x H x W` or `H x W`, float in [0, 1] or uint8), resized as validation
        images are. Runs in the calling process (no workers)."""
        if isinstance(item, Image):
            item = item.data
        if isinstance(item, torch.Tensor):
            x = item if item.dtype == torch.uint8 else (item.float().clamp(0, 1) * 255).round().to(torch.uint8)
            x = x.expand(3, *x.shape) if x.dim() == 2 else (x.expand(3, *x.shape[1:]) if x.shape[0] == 1 else x)
            if x.dim() != 3 or x.shape[0] != 3:
                raise DataError(f"one_item expects an image tensor 3 x H x W or H x W, got shape {tuple(item.shape)}.")
        else:
            if not hasattr(item, "mode"):  # a file, not a PIL image
                reason = check_image(item)
                if reason is not None:
                    raise DataError(f"Cannot predict on {item}: it {reason}.")
            x, _ = load_image(item, self.size, self.resize_method)
        if self.size is not None:
            x = resize_image(x, self.size, self.resize_method, self.padding_mode)
        x = to_device(x.float().div(255).unsqueeze(0), self.device)
        return x if self.norm is None else self.norm.norm(x)

    def export_state(self) -> dict:
        """The DataBunch's export state plus the image settings `one_item` needs: `size` ([h, w] or None),
        `resize_method` (name) and `padding_mode`."""
        return {**super().export_state(), "size": None if self.size is None else list(self.size),
                "resize_method": self.resize_method.name, "padding_mode": self.padding_mode}

    @classmethod
    def load_export_state(cls, state: dict, device=None) -> ImageDataBunch:
        self = super().load_export_state(state, device)
        self._set_image_settings(state.get("size"), ResizeMethod[state.get("resize_method", "CROP")],
                                 state.get("padding_mode", "reflection"))
        return self

    # --- display --------------------------------------------------------------------------------
    def show_batch(self, rows: int = 3, figsize=None, ds_type: DatasetType = DatasetType.Train,
                   return_fig: bool | None = None, save_to=None, **kwargs):
        """Draw up to `rows` x `rows` images of one batch, denormalised, titled with their labels.
        Returns the matplotlib Figure (`save_to`, `return_fig`: see `fastbase.figures.finish_figure`)."""
        x, y = self.one_batch(ds_type, denorm=True)
        ds = self.dl(ds_type).dataset
        fig, axes = subplots(rows, rows, figsize=figsize or (3 * rows, 3 * rows), squeeze=False)
        for i, ax in enumerate(axes.flat):
            ax.axis("off")
            if i < len(x):
                ax.imshow(x[i].permute(1, 2, 0).clamp(0, 1).numpy())
                ax.set_title(ds.label_text(y[i]), **kwargs)
        fig.tight_layout()
        return finish_figure(fig, return_fig, save_to)


# --- helpers for the factories -------------------------------------------------------------------
def _folder(path: Path, name, what: str, hint: bool = False) -> Path:
    folder = path / name
    if not folder.is_dir():
        subs = sorted(p.name for p in path.iterdir() if p.is_dir()) if path.is_dir() else []
        tip = f" Pass {'valid' if what == 'validation' else 'train'}='<folder>'" + (
            ", or valid_pct=0.2 to split the training folder at random" if hint else "") + "."
        where = f"{path} holds: {', '.join(subs) or 'no folders'}" if path.is_dir() else f"{path} does not exist"
        raise DataError(f"No {what} folder {folder} ({where}).{tip}")
    return folder


def _check_class_folders(train_dir: Path, items, skip_bad: bool) -> None:
    """Class folders without images, and images outside any class folder, are mistakes worth naming."""
    loose = [fn for fn in items if fn.parent == train_dir]
    if loose:
        raise LabelError(f"{len(loose)} image(s) lie directly in {train_dir} ({format_list(loose)}), outside any "
                         "class folder: move them into a folder named after their class.")
    used = {fn.parent.name for fn in items}
    empty = sorted(p.name for p in train_dir.iterdir() if p.is_dir() and not p.name.startswith(".") and p.name not in used)
    if empty and not skip_bad:
        raise DataError(f"Class folder(s) {format_list(empty)} in {train_dir} hold no images: add images or "
                        "remove the folder(s) (skip_bad=True leaves them out).")


def _column(col, names, where) -> int:
    if isinstance(col, int):
        return col
    if names is None or col not in names:
        raise DataError(f"No column {col!r} in {where}" + (f"; its columns: {names}." if names else
                                                          " (it has no header row; give the column's number)."))
    return names.index(col)


def _split_labels(labels, delim):
    return [list(lbl) if is_listy(lbl) else ([] if lbl == "" else str(lbl).split(delim)) for lbl in labels]


def _split_tfms(ds_tfms):
    if ds_tfms is None:
        return [], []
    if not (isinstance(ds_tfms, (tuple, list)) and len(ds_tfms) == 2 and all(is_listy(t) for t in ds_tfms)):
        raise DataError("ds_tfms must be (train transforms, valid transforms), as get_transforms() returns.")
    train, valid = list(ds_tfms[0]), list(ds_tfms[1])
    moving = [t for t in valid if isinstance(t, (GeometricTransform, LightingTransform))]
    if moving:
        raise DataError(f"Validation transforms must be deterministic; {moving} are random. Move them to the "
                        "training list (validation images get the centre crop/pad/squish to `size`).")
    other = [t for t in valid if not isinstance(t, CenterCrop)]
    if other:
        raise DataError(f"Validation transforms {other} are not supported: fastbase resizes validation images "
                        "deterministically in the loader workers.")
    return train, valid


def _resolve(path: Path, fn) -> Path:
    fn = Path(fn)
    return fn if fn.is_absolute() or fn.exists() else Path(path) / fn
