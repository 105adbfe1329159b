"""Layer 6: ImageDataBunch, labelled image data in one line, with fastai v1's factories.

`ImageList` is the data block chain's list of image files; its chain ends in `create_from_ll`,
which checks the files, builds the datasets and loaders, and attaches the batch transforms
(augmentation on the training loader, conversion to float on the others; `normalize` adds
normalisation after both). The factories `from_folder`, `from_name_re`, `from_name_func`,
`from_csv`, `from_df` and `from_lists` are thin wrappers: they find the files and their labels and
run the equivalent chain (`ImageList...split_by_*...label_from_*`, then `_finish`).
"""
from __future__ import annotations

import functools
import os

import torch
from torch.utils.data import DataLoader
from torch.utils.data.dataloader import default_collate

from ..core import Path, ifnone, to_device
from ..data import (
    DataBunch,
    DataError,
    DatasetType,
    DeviceDataLoader,
    ItemList,
    LabelError,
)
from ..data.item_list import labels_from_re
from .data_checks import (
    check_class_folders,
    check_tfm_y,
    find_folder,
    resolve_file,
    split_tfms,
    without_bad_files,
)
from .dataset import (
    ImageDataset,
    check_files,
    format_list,
    size_hw,
)
from .image import (
    Image,
    ResizeMethod,
    channels_of,
    check_image,
    get_image_files,
    image_extensions,
    load_image,
    open_image,
    resize_image,
)
from .interpret import plot_confused_images, plot_image_multi_top_losses, plot_image_top_losses
from .item_cache import cache_budget
from .label_table import df_table, read_csv_table
from .show import show_image_batch, show_image_results
from .transforms import (
    BatchAugment,
    Crop,
    RandomCrop,
    ToFloat,
    Zoom,
    needs_canvas,
)

__all__ = ["ImageDataBunch"]


class ImageList(ItemList):
    """Image files for the data block chain: `il[i]` opens an `Image`, `from_folder` finds image files,
    `from_df`/`from_csv` make `path/folder/<name><suffix>`, and the chain ends in an ImageDataBunch.
    `convert_mode='L'` loads gray images, one channel from the file to the batch (fastai v1's setting)."""

    def get(self, i: int) -> Image:
        return open_image(self.items[i], convert_mode=self.settings.get("convert_mode", "RGB"))

    @classmethod
    def from_folder(cls, path=".", extensions=None, recurse: bool = True, include=None, presort: bool = False,
                    **kwargs) -> ImageList:
        """The image files under `path` (`extensions`: PIL's image suffixes when None), sorted."""
        exts = image_extensions() if extensions is None else extensions
        return super().from_folder(path, exts, recurse=recurse, include=include, presort=presort, **kwargs)

    @classmethod
    def _df_items(cls, values, path, folder, suffix):
        base = path if folder is None else path / str(folder)
        return [base / f"{v}{suffix}" for v in values]

    _bunch = None  # the DataBunch class the chain ends in (a task's own); None: ImageDataBunch

    @classmethod
    def build_databunch(cls, lls, bunch_cls=None, **kwargs) -> ImageDataBunch:
        return (bunch_cls or cls._bunch or ImageDataBunch).create_from_ll(lls, **kwargs)


class ImageDataBunch(DataBunch):
    """A DataBunch of labelled images. Batches reach the model as float `(n, 3, *size)` in [0, 1]
    (`(n, 1, *size)` for gray images, `convert_mode='L'`; normalised once `normalize` is called) with
    int64 class indices or float multi-hot targets. A task whose targets are images too (segmentation's
    masks) subclasses it: `tfm_y` moves targets with their images, `_datasets` builds its datasets."""
    convert_mode = "RGB"
    tfm_y = False  # targets are labels, not images moved with their inputs
    exact_decode = False  # True: `one_item` decodes files at full size (predictions mapped back to their pixels)
    augment_cls, to_float_cls = BatchAugment, ToFloat  # the batch transforms (image targets have their own)

    # --- factories: files and labels ------------------------------------------------------------
    @classmethod
    def from_folder(cls, path, train="train", valid="valid", valid_pct: float | None = None, seed: int | None = None,
                    classes=None, **kwargs) -> ImageDataBunch:
        """Images in `path/train/<class>/` and `path/valid/<class>/`, or only the training folder split
        at random with `valid_pct` (reproducible with `seed`)."""
        path = Path(path)
        train_dir = find_folder(path, train, "training")
        items = get_image_files(train_dir)
        check_class_folders(train_dir, items, kwargs.get("skip_bad", False))
        if valid_pct is None:  # the files found once: the training ones, then the validation ones
            valid_items = get_image_files(find_folder(path, valid, "validation", hint=True))
            src = ImageList([*items, *valid_items], path=path).split_by_folder(train, valid)
        else:
            src = ImageList(items, path=path).split_by_rand_pct(valid_pct, seed)
        return cls._finish(src.label_from_folder(classes=classes), seed=seed, **kwargs)

    @classmethod
    def from_name_re(cls, path, fnames, pat, valid_pct: float = 0.2, seed: int | None = None, **kwargs):
        """Labels from the first group of the regular expression `pat`, searched in each file's path."""
        fnames = [Path(fn) for fn in fnames]
        labels = labels_from_re(pat, [fn.as_posix() for fn in fnames], "file name", "leave those files out of `fnames`")
        return cls.from_lists(path, fnames, labels, valid_pct=valid_pct, seed=seed, **kwargs)

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
        table = read_csv_table(csv_path, fn_col, label_col, delimiter, header)
        return cls._from_table(path, table, folder, suffix, label_delim, valid_pct, seed, str(csv_path), **kwargs)

    @classmethod
    def from_df(cls, path, df, folder=".", label_delim: str | None = None, valid_pct: float = 0.2,
                seed: int | None = None, fn_col=0, label_col=1, suffix: str = "", **kwargs):
        """As `from_csv`, from a pandas DataFrame; columns by position or name."""
        table = df_table(df, fn_col, label_col)
        return cls._from_table(path, table, folder, suffix, label_delim, valid_pct, seed, "the DataFrame", **kwargs)

    @classmethod
    def _from_table(cls, path, table, folder, suffix, label_delim, valid_pct, seed, source, **kwargs):
        path = Path(path)
        files = [path / folder / f"{name}{suffix}" for name, _ in table]
        missing = [fn for fn in files if not fn.is_file()]
        if missing and not kwargs.get("skip_bad", False):
            raise LabelError(f"{len(missing)} of the {len(files)} files named in {source} do not exist: "
                             f"{format_list(missing)}. Check `folder` and `suffix` (files are "
                             f"path/folder/<name><suffix>), or pass skip_bad=True to leave them out.",
                             options={"skip_bad": True})
        unlabelled = [name for name, label in table if label == "" and label_delim is None]
        if unlabelled:
            raise LabelError(f"{len(unlabelled)} rows of {source} have no label: {format_list(unlabelled)}.")
        return cls.from_lists(path, files, [label for _, label in table], valid_pct=valid_pct, seed=seed,
                              label_delim=label_delim, **kwargs)

    @classmethod
    def from_lists(cls, path, fnames, labels, valid_pct: float = 0.2, seed: int | None = None,
                   label_delim: str | None = None, classes=None, **kwargs):
        """Files and their labels as two lists (a list of labels per file for multi-label data)."""
        path, fnames, labels = Path(path), [resolve_file(path, fn) for fn in fnames], list(labels)
        if len(fnames) != len(labels):
            raise LabelError(f"from_lists got {len(fnames)} file names but {len(labels)} labels.")
        src = ImageList(fnames, path=path).split_by_rand_pct(valid_pct, seed)
        return cls._finish(src.label_from_lists([labels[i] for i in src.train_idx], [labels[i] for i in src.valid_idx],
                                                label_delim=label_delim, classes=classes), seed=seed, **kwargs)

    # --- the common path ----------------------------------------------------------------------
    @classmethod
    def create_from_items(cls, path, train_items, train_labels, valid_items, valid_labels, test=None, classes=None,
                          label_delim: str | None = None, **kwargs) -> ImageDataBunch:
        """Labelled training and validation files as lists, through the data block chain: `ImageList`,
        `split_by_idxs`, `label_from_lists`, then `_finish` (transforms, test set, DataBunch)."""
        items, n = [*train_items, *valid_items], len(train_items)
        src = ImageList(items, path=path).split_by_idxs(range(n), range(n, len(items)))
        return cls._finish(src.label_from_lists(train_labels, valid_labels, label_delim=label_delim, classes=classes),
                           test=test, **kwargs)

    @classmethod
    def _finish(cls, lls, ds_tfms=None, size=None, resize_method: ResizeMethod | None = None,
                padding_mode: str = "reflection", test=None, **kwargs) -> ImageDataBunch:
        """The end of every factory's chain: `.transform(ds_tfms, size=...)`, `add_test(test)` (a folder
        relative to `path`, or a list of files) and `.databunch(**kwargs)` into this class."""
        lls = lls.transform(ds_tfms, size=size, resize_method=resize_method, padding_mode=padding_mode)
        if test is not None:
            lls.add_test(ImageList.from_folder(lls.path / test) if isinstance(test, (str, os.PathLike))
                         else ImageList(list(test), path=lls.path))
        return lls.databunch(bunch_cls=cls, **kwargs)

    @classmethod
    def create_from_ll(cls, lls, path=None, bs: int = 64, val_bs: int | None = None, num_workers: int | None = None,
                       dl_tfms=None, device=None, collate_fn=default_collate, no_check: bool = False,
                       check_images: bool = True, skip_bad: bool = False, seed: int | None = None,
                       cache_items: bool | None = None) -> ImageDataBunch:
        """The DataBunch of labelled lists (`LabelLists.databunch` of an ImageList ends here): check the
        files, build the datasets, loaders and batch transforms.

        The transforms and their settings come from `lls.transform(tfms, size=, resize_method=,
        padding_mode=)`: `tfms` is (train, valid) from `get_transforms()`, `size` an int or (h, w).
        `check_images`: find unreadable files up front (a BadFilesError lists them; `skip_bad` leaves
        them out). `seed`: the shuffling and augmentation draws. `cache_items`: keep each decoded,
        resized image in shared memory after its first epoch (`item_cache`; the results are the same).
        None (default) does it when `size` is set and the training and validation items fit in an
        eighth of the machine's memory; `data.train_ds` shows it."""
        path = Path(ifnone(path, lls.path))
        settings = dict(lls.tfm_kwargs)
        size, padding_mode = settings.pop("size", None), settings.pop("padding_mode", None)
        method = ResizeMethod(ifnone(settings.pop("resize_method", None), ResizeMethod.CROP))
        tfm_y = bool(settings.pop("tfm_y", False))
        if settings:
            raise DataError(f"Unknown transform setting(s) {sorted(settings)}; ImageList takes size, "
                            "resize_method, padding_mode, tfm_y.")
        lls = without_bad_files(lls, check_images, skip_bad)
        train_tfms, valid_tfms = split_tfms(lls.tfms)
        train_tfms, tfm_y_hook = cls._augmentation(lls, train_tfms)
        if size is None:  # fastai's crop(size=...) sets the size when transform(size=) does not
            size = next((t.size for t in [*train_tfms, *valid_tfms] if isinstance(t, Crop) and t.size), None)
        # a transform's own fill (rand_pad(mode='zeros')) unless `transform(padding_mode=)` says
        padding_mode = padding_mode or next((t.padding_mode for t in train_tfms if getattr(t, "padding_mode", None)),
                                            "reflection")
        train_y = lls.train.y
        cls._check_labels(lls, tfm_y, bool(train_tfms) or size is not None)
        common = {"classes": train_y.classes, "size": size, "resize_method": method, "padding_mode": padding_mode,
                  "convert_mode": lls.train.x.settings.get("convert_mode", "RGB")}
        train_ds, valid_ds, make = cls._datasets(lls, common, needs_canvas(train_tfms))
        train_ds.item_list, valid_ds.item_list = lls.train.x, lls.valid.x
        if cache_items is None:
            cache_items = size is not None and train_ds.cache_nbytes + valid_ds.cache_nbytes <= cache_budget()
        if cache_items:
            train_ds, valid_ds = train_ds.new(cache=True), valid_ds.new(cache=True)
        test_ds = None
        if lls.test is not None:
            test_items, _ = check_files(list(lls.test.x.items), None, "test", check_images, skip_bad)
            test_ds = make(test_items, None, cache=bool(cache_items))
        generator = None if seed is None else torch.Generator().manual_seed(seed)
        hw = size_hw(size)
        augment = (cls.augment_cls(train_tfms, hw, method, padding_mode, generator, tfm_y_hook) if train_tfms
                   else cls.to_float_cls())
        fix_ds = train_ds.new(canvas=False)
        if train_tfms:  # `train_ds[i]` augments each item afresh, with the global generator (not the loader's)
            train_ds.item_tfm = cls.augment_cls(train_tfms, hw, method, padding_mode, None, tfm_y_hook)
        data = cls.create(train_ds, valid_ds, test_ds, path=path, bs=bs, val_bs=val_bs, num_workers=num_workers,
                          dl_tfms=dl_tfms, device=device, collate_fn=collate_fn, seed=seed,
                          fix_ds=fix_ds, train_tfms=[augment], valid_tfms=[cls.to_float_cls()])
        data.ds_tfms, data.tfm_y = (train_tfms, valid_tfms), tfm_y_hook
        data.label_lists, data.loss_func = lls, train_y.loss_func
        data._set_image_settings(size, method, padding_mode, common["convert_mode"])
        return data

    @classmethod
    def _augmentation(cls, lls, train_tfms: list) -> tuple[list, object]:
        """(the training transforms, the targets' coordinate hook) for these labels: here as given, and `tfm_y`."""
        return train_tfms, cls.tfm_y

    @classmethod
    def _check_labels(cls, lls, tfm_y: bool, resizes: bool) -> None:
        """Refuse labels this kind of bunch cannot train on (here: `tfm_y` with labels that are not images)."""
        check_tfm_y(cls.tfm_y, tfm_y, lls.train.y, resizes)

    @classmethod
    def _datasets(cls, lls, common: dict, canvas: bool):
        """(train, valid, make): the datasets of the labelled lists, and how to make another (the test set's)."""
        make = functools.partial(ImageDataset, multi_label=lls.train.y.multi_label, **common)
        train_ds = make(lls.train.x.items, lls.train.y.targets, canvas=canvas)
        return train_ds, make(lls.valid.x.items, lls.valid.y.targets), make

    def _set_image_settings(self, size, resize_method, padding_mode, convert_mode: str = "RGB") -> None:
        self.size, self.resize_method, self.padding_mode = size_hw(size), ResizeMethod(resize_method), padding_mode
        self.convert_mode = convert_mode

    def add_test(self, items, check_images: bool = True, skip_bad: bool = False) -> ImageDataBunch:
        """Add (or replace) the test set: image files (a list, an ImageList, or a folder to search), or a
        dataset. Also on a DataBunch loaded for inference (`load_learner(..., test=)`)."""
        items = get_image_files(items) if isinstance(items, (str, os.PathLike)) else getattr(items, "items", items)
        if not isinstance(items, ImageDataset):
            items, _ = check_files(list(items), None, "test", check_images, skip_bad)
            items = ImageDataset(items, classes=self.classes, multi_label=self.multi_label, size=self.size,
                                 resize_method=self.resize_method, padding_mode=self.padding_mode,
                                 convert_mode=self.convert_mode) \
                if self.inference_only else self.valid_ds.unlabelled(items)
        if self.inference_only:  # no validation loader to copy: one in this process, as `one_item` reads
            self.test_dl = DeviceDataLoader(DataLoader(items, batch_size=64), self.device,
                                            [ToFloat(), *([] if self.norm is None else [self.norm])])
            return self
        return super().add_test(items)

    def _take(self, ds, indices):
        """Some items of an ImageDataset as an ImageDataset (`subset`), so it still names files and labels."""
        if not isinstance(ds, ImageDataset):
            return super()._take(ds, indices)
        return ds.subset(indices)

    def tta_dl(self, ds_type: DatasetType = DatasetType.Valid, scale: float = 1.35) -> DeviceDataLoader:
        """The `ds_type` items in order, through the training augmentation with a zoom of exactly `scale`
        towards a random point and a random crop window, for test-time augmentation (`Learner.TTA`)."""
        loader, (train_tfms, _) = self.dl(ds_type), getattr(self, "ds_tfms", ([], []))
        kept = [t for t in train_tfms if not isinstance(t, (Zoom, Crop))]
        tfms = [RandomCrop(), *kept, Zoom(max_zoom=scale, min_zoom=scale, p=1.0)]
        dataset = loader.dataset.new(canvas=True)
        augment = self.augment_cls(tfms, self.size, self.resize_method, self.padding_mode, tfm_y=self.tfm_y)
        norm = [] if self.norm is None else [self.norm]
        return loader.new(tfms=[augment, *norm], dataset=dataset, shuffle=False, drop_last=False)

    # --- inference ------------------------------------------------------------------------------
    def item_files(self, path) -> list[Path]:
        """The image files under folder `path` (`get_image_files`: what training reads as images)."""
        return get_image_files(path)

    def one_item(self, item) -> tuple[torch.Tensor, torch.Tensor]:
        """`(xb, yb)`: a normalised batch of one `(1, 3, *size)` on the device from a file name, the
        bytes of an image file (decoded as the file would be), a PIL image, an `Image`, or a tensor
        (`3 x H x W` or `H x W`, float in [0, 1] or uint8), resized as validation images are, and a
        dummy target. Runs in the calling process (no workers)."""
        if isinstance(item, Image):
            item = item.data
        n = channels_of(self.convert_mode)
        if isinstance(item, torch.Tensor):
            x = item if item.dtype == torch.uint8 else (item.float().clamp(0, 1) * 255).round().to(torch.uint8)
            x = x.expand(n, *x.shape) if x.dim() == 2 else (x.expand(n, *x.shape[1:]) if x.shape[0] == 1 else x)
            if x.dim() != 3 or x.shape[0] != n:
                raise DataError(f"one_item expects an image tensor {n} x H x W or H x W, "
                                f"got shape {tuple(item.shape)}.")
        else:
            if not hasattr(item, "mode"):  # a file or its bytes, not a PIL image
                reason = check_image(item)
                if reason is not None:
                    what = f"the {len(item)} bytes given" if isinstance(item, (bytes, bytearray)) else item
                    raise DataError(f"Cannot predict on {what}: it {reason}.")
                item = bytes(item) if isinstance(item, bytearray) else item
            x, _ = load_image(item, None if self.exact_decode else self.size, self.resize_method, self.convert_mode)
        if self.size is not None:
            x = resize_image(x, self.size, self.resize_method, self.padding_mode)
        x = to_device(x.float().div(255).unsqueeze(0), self.device)
        return (x if self.norm is None else self.norm.norm(x)), torch.zeros(1, dtype=torch.long, device=self.device)

    def input_spec(self) -> dict:
        """The size inputs are resized to ([h, w] or None), the resize method's name and the padding mode."""
        return {"size": None if self.size is None else list(self.size), "resize_method": self.resize_method.name,
                "padding_mode": self.padding_mode}

    def export_state(self) -> dict:
        """The DataBunch's export state plus the image settings `one_item` needs: `size` ([h, w] or None),
        `resize_method` (name) and `padding_mode`."""
        return {**super().export_state(), "size": None if self.size is None else list(self.size),
                "resize_method": self.resize_method.name, "padding_mode": self.padding_mode,
                "convert_mode": self.convert_mode}

    @classmethod
    def load_export_state(cls, state: dict, device=None) -> ImageDataBunch:
        self = super().load_export_state(state, device)
        self._set_image_settings(state.get("size"), ResizeMethod[state.get("resize_method", "CROP")],
                                 state.get("padding_mode", "reflection"), state.get("convert_mode", "RGB"))
        return self

    # --- display --------------------------------------------------------------------------------
    def show_batch(self, rows: int = 3, figsize=None, ds_type: DatasetType = DatasetType.Train,
                   return_fig: bool | None = None, save_to=None, **kwargs):
        """Draw up to `rows` x `rows` images of one batch, denormalised, titled with their labels.
        Returns the matplotlib Figure (`save_to`, `return_fig`: see `fastbase.figures.finish_figure`)."""
        return show_image_batch(self, rows, figsize, ds_type, return_fig, save_to, **kwargs)

    def show_results(self, learn, ds_type: DatasetType = DatasetType.Valid, rows: int = 3, figsize=None,
                     **kwargs):
        """Draw images of one `ds_type` batch titled with `learn`'s prediction and the target."""
        return show_image_results(learn, ds_type, rows, figsize, **kwargs)

    def plot_top_losses(self, interp, k: int = 9, largest: bool = True, **kwargs):
        """The `k` images of `interp` with the largest (or smallest) losses in a grid, with an optional
        Grad-CAM heatmap (`plot_image_top_losses` says how)."""
        return plot_image_top_losses(interp, k, largest, **kwargs)

    def plot_multi_top_losses(self, interp, samples: int = 3, **kwargs):
        """Multi-label top losses as images titled with their labels (`plot_image_multi_top_losses`)."""
        return plot_image_multi_top_losses(interp, samples, **kwargs)

    def show_confused(self, interp, idxs, title: str, figsize=None, varlist=None):
        """`ClassConfusion`'s view: the images of one confused pair in a grid (`plot_confused_images`)."""
        return plot_confused_images(interp, idxs, title, figsize)
