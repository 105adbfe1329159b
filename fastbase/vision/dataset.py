"""Layer 6: a labelled list of image files as a torch Dataset, and the check of its files that names
the unreadable ones (classes, targets and splits come from the data block API in `fastbase.data`).

Labels are carried as plain tensors: an int64 class index per item, or a float multi-hot vector
when an item may have several labels (`multi_label`). Class names live on the dataset, not on tensors.
"""
from __future__ import annotations

import warnings

import torch
from torch.utils.data import Dataset

from ..core import Path
from ..data import BadFilesError, DataError, LabelError, format_list
from ..data.labels import EmptyLabelList, label_list_from_targets
from .image import (
    PADDING_MODES,
    Image,
    ResizeMethod,
    channels_of,
    cover_image,
    load_image,
    open_image,
    resize_image,
    verify_images,
)
from .item_cache import ItemCache, cache_nbytes
from .sizing import CANVAS_SCALE, canvas_size, size_hw

__all__ = ["CANVAS_SCALE", "ImageDataset", "check_files", "format_list", "size_hw"]


class ImageDataset(Dataset):
    """Image files and their labels: fastai v1's ImageList, with plain tensors.

    `ds[i]` is `(x, y)` as items: x an `Image` (float `3 x H x W` in [0, 1], resized to `size` by a
    deterministic centre crop, pad or squish), y a `Category`, a `MultiCategory` when `multi_label`, a
    `FloatItem` for regression targets (float, no classes) or an `EmptyLabel` for unlabelled (test)
    items. `targets` holds them all as one tensor (int64 class indices, float multi-hot `(n, c)` or
    float values `(n, k)`), and `y` as a label list (`y[i]` an item, `y.classes`). DataLoaders fetch
    whole batches through `__getitems__` instead, which gives `(x uint8, y, src_hw)` per item: uint8 is
    4x cheaper to collate and to move to the device, and `src_hw` (the extent of the picture, see
    `transforms.crop_matrices`) lets the batch transforms place the crop window. With `canvas=True`
    (training with augmentation) items keep more than the window, in a canvas of one size, so the
    single batch resample can take the window from anywhere in it.
    For CROP the image is resized exactly as validation images are (so that it just covers `size`),
    its long side kept up to `CANVAS_SCALE` times `size` and the rest of the canvas padded: a window is
    then sampled at one output pixel per canvas pixel, and training and validation images have the
    same sharpness (a resample that shrinks or enlarges would blur or alias them, and shift what
    BatchNorm learns). For PAD and SQUISH the whole image is squished into a `size` canvas.

    None of this is random, so with `cache=True` (and a `size`) each item is decoded and resized once
    and kept in memory that the loader's worker processes share (`item_cache.ItemCache`).
    """

    def __init__(self, items, y: torch.Tensor | None = None, classes=None, multi_label: bool = False, size=None,
                 resize_method: ResizeMethod = ResizeMethod.CROP, padding_mode: str = "reflection",
                 canvas: bool = False, cache: bool = False, convert_mode: str = "RGB", item_list=None,
                 item_tfm=None):
        if padding_mode not in PADDING_MODES:
            raise DataError(f"padding_mode must be one of {PADDING_MODES}, got {padding_mode!r}.")
        self.items = [Path(o) for o in items]
        self.convert_mode, self.channels = convert_mode, channels_of(convert_mode)
        # the ItemList the items came from (`x` gives one of its kind), and the augmentation a training
        # item gets when read one at a time (`ds[i]`, as fastai's); the loaders augment whole batches
        self.item_list, self.item_tfm = item_list, item_tfm
        self.classes = None if classes is None else list(classes)
        self.multi_label, self.canvas = bool(multi_label), bool(canvas)
        self.size = size_hw(size)
        self.resize_method, self.padding_mode = ResizeMethod(resize_method), padding_mode
        if y is None:  # unlabelled: targets of the right shape and type, so batches collate the same way
            n_out = len(self.classes) if (self.multi_label and self.classes) else None
            y = torch.zeros(len(self.items), n_out) if n_out else torch.zeros(len(self.items), dtype=torch.long)
            self.labelled = False
        else:
            self.labelled = True
        if len(y) != len(self.items):
            raise LabelError(f"{len(self.items)} items but {len(y)} labels.")
        self.targets = y
        self._labels = None
        # decoded, resized items shared with the loader's workers (see `item_cache`): fixed-size items only
        self.cache = ItemCache(len(self.items), self.item_shape) if cache and self.size is not None else None

    @property
    def item_shape(self) -> tuple[int, int, int] | None:
        """(3, h, w) of what `raw_item` returns: the canvas or the output size; None without `size`."""
        if self.size is None:
            return None
        return (self.channels + self.extra_channels, *(self.canvas_hw if self.canvas else self.size))

    extra_channels = 0  # channels stored with each cached item besides the image (a mask: 1)

    @property
    def cache_nbytes(self) -> int:
        """Bytes an item cache of this dataset takes when full (0 without `size`: nothing to cache)."""
        return 0 if self.item_shape is None else cache_nbytes(len(self), self.item_shape)

    def fraction_cached(self) -> float | None:
        """Share of the items the item cache holds (None without a cache, or where it is off)."""
        if self.cache is None or not self.cache.enabled or not len(self):
            return None
        return self.cache.n_filled / len(self)

    @property
    def c(self) -> int | None:
        """Number of model outputs: the classes, or the width of float regression targets."""
        if self.classes is None:
            floats = self.labelled and self.targets.is_floating_point()
            return self.targets.view(len(self.targets), -1).shape[1] if floats and len(self.targets) else None
        return len(self.classes)

    @property
    def y(self):
        """The labels as a label list (`y[i]` a `Category`, `MultiCategory` or `FloatItem`)."""
        if self._labels is None:
            self._labels = (label_list_from_targets(self.targets, self.classes, self.multi_label) if self.labelled
                            else EmptyLabelList([0] * len(self)).process())
        return self._labels

    @property
    def x(self):
        """The images as an item list, as fastai's `ds.x`: `ds.x.items` the files, `ds.x[i]` an `Image`."""
        if self.item_list is not None:
            return self.item_list.new(self.items)
        return _Files(self.items, self.convert_mode)

    def __len__(self):
        return len(self.items)

    def _init_args(self) -> dict:
        """The arguments that rebuild this dataset (`new` changes some)."""
        return {"items": self.items, "y": self.targets if self.labelled else None, "classes": self.classes,
                "multi_label": self.multi_label, "size": self.size, "resize_method": self.resize_method,
                "padding_mode": self.padding_mode, "canvas": self.canvas, "cache": self.cache is not None,
                "convert_mode": self.convert_mode, "item_list": self.item_list, "item_tfm": self.item_tfm}

    def new(self, **changes) -> ImageDataset:
        """A copy with some settings changed (e.g. `canvas=False` for the Fix loader), sharing the items."""
        return type(self)(**{**self._init_args(), **changes})

    def subset(self, indices) -> ImageDataset:
        """The items at `indices` (and their labels) as a dataset of this kind and settings."""
        indices = list(indices)
        return self.new(items=[self.items[i] for i in indices], y=self.targets[indices] if self.labelled else None)

    def unlabelled(self, items) -> ImageDataset:
        """Other `items` with these settings and no labels (a test set)."""
        return self.new(items=list(items), y=None)

    @property
    def canvas_hw(self) -> tuple[int, int] | None:
        """Size of the training canvas (see the class docstring); None when images keep their size."""
        return None if self.size is None else canvas_size(self.size, self.resize_method)

    def raw_item(self, i: int, canvas: bool | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """`(x uint8 C x h x w, y, src_hw int64 (2,))` as the loaders collate it; `canvas` (default:
        the dataset's setting) asks for the training canvas. Served from `cache` when it has the item."""
        canvas = self.canvas if canvas is None else canvas
        cache = self.cache if canvas == self.canvas else None
        hit = None if cache is None else cache.get(i)
        if hit is not None:
            return (*self._unpack(i, hit[0]), torch.tensor(hit[1]))
        stored, src_hw = self._load(i, canvas)
        if cache is not None:
            cache.put(i, stored, src_hw)
        return (*self._unpack(i, stored), torch.tensor(src_hw))

    def _load(self, i: int, canvas: bool) -> tuple[torch.Tensor, tuple[int, int]]:
        """What the cache keeps of item `i` (here the uint8 image) and its `src_hw`."""
        fn = self.items[i]
        try:
            # CROP canvases decode at the output's scale (then pad); PAD and SQUISH ones at the canvas's
            target, method = ((self.size, ResizeMethod.CROP) if self.resize_method == ResizeMethod.CROP else
                              (self.canvas_hw, ResizeMethod.SQUISH)) if canvas else (self.size, self.resize_method)
            x, full_hw = load_image(fn, None if self.exact_decode else target, method, self.convert_mode)
            return self._stored(i, x, full_hw, canvas)
        except DataError:
            raise
        except (OSError, SyntaxError, ValueError, RuntimeError) as e:
            raise DataError(f"Cannot read image {fn}: {type(e).__name__}: {e}. Create the DataBunch with "
                            "check_images=True to find every unreadable file up front, and skip_bad=True to "
                            "leave them out.", options={"check_images": True, "skip_bad": True}) from e

    def _stored(self, i: int, x: torch.Tensor, full_hw, canvas: bool):
        """`(what the cache keeps, src_hw)` of item `i` from its decoded image `x`: the image placed."""
        return self.place(x, full_hw, canvas)

    exact_decode = False  # True: decode at full size (no JPEG DCT scaling), so a mask lines up to the pixel

    def _unpack(self, i: int, stored: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """`(x, y)` of item `i` from what `_load` (or the cache) gave."""
        return stored, self.targets[i]

    def place(self, x: torch.Tensor, full_hw, canvas: bool, mode: str = "bilinear"):
        """`(x, src_hw)`: a decoded uint8 `x` of an image whose full size is `full_hw`, resized onto the
        training canvas (`canvas`) or to the output size; `mode='nearest'` for masks.

        src_hw (see `transforms.crop_matrices`): for CROP the picture's extent inside x (the canvas
        region, or all of x when already cropped, so the batch augmentation never crops an item twice);
        for PAD and SQUISH canvases the whole image's (H, W), which x holds squished."""
        if canvas and self.size is not None and self.resize_method == ResizeMethod.CROP:
            x, src_hw = cover_image(x, self.size, self.canvas_hw, self.padding_mode, mode)
            return x, tuple(src_hw)
        if canvas:
            x = x if self.size is None else resize_image(x, self.canvas_hw, ResizeMethod.SQUISH, mode=mode)
            return x, tuple(full_hw)
        x = x if self.size is None else resize_image(x, self.size, self.resize_method, self.padding_mode, mode)
        return x, tuple(x.shape[-2:])

    def __getitems__(self, indices) -> list:
        """The items of one batch for a DataLoader (see the class docstring); all of one size."""
        out = [self.raw_item(i) for i in indices]
        shapes = {tuple(x.shape) for x, _, _ in out}
        if len(shapes) > 1:
            sizes = format_list(f"{self.items[i].name} {tuple(x.shape[1:])}" for i, (x, _, _) in zip(indices, out))
            raise DataError(f"Images of different sizes cannot share a batch ({sizes}): pass `size=` "
                            "(e.g. size=224) to resize them.")
        return out

    def __getitem__(self, i: int):
        """`(Image, label item)` of item `i`: resized as validation images are, or, when the dataset has
        an `item_tfm` (training with augmentation), freshly augmented at every call, as fastai's."""
        if self.item_tfm is None:
            x, y, _ = self.raw_item(i, canvas=False)
            return Image(x.float().div_(255)), self._label_item(i, y)
        x, y, src_hw = self.raw_item(i)
        x, y = self.item_tfm((x[None], y[None], src_hw[None]))
        return Image(x[0]), self._label_item(i, y[0])

    def _label_item(self, i: int, y: torch.Tensor):
        return self.y.get(i)

    def label_text(self, y: torch.Tensor) -> str:
        """A target as text: the class name, or the names of a multi-hot vector joined by ';'."""
        return "" if not self.labelled else str(self.y.reconstruct(y))

    def __repr__(self):
        kind = "multi-label " if self.multi_label else ""
        classes = "" if self.classes is None else f", {len(self.classes)} {kind}classes"
        cached = "" if self.cache is None else f", cached {self.cache.n_filled}/{len(self)}"
        return f"{type(self).__name__}({len(self)} items{classes}, size={self.size}{cached})"


class _Files(list):
    """The files of an ImageDataset as fastai's `ds.x`: `items` the files, `x[i]` an `Image`."""

    def __init__(self, items, convert_mode: str = "RGB"):
        super().__init__(items)
        self.convert_mode = convert_mode

    @property
    def items(self):
        return list.__getitem__(self, slice(None))

    def __getitem__(self, i):
        if isinstance(i, slice):
            return _Files(list.__getitem__(self, i), self.convert_mode)
        return open_image(list.__getitem__(self, i), convert_mode=self.convert_mode)



# --- checking files ---------------------------------------------------------------------------
def check_files(items: list, labels: list | None, what: str, check_images: bool, skip_bad: bool):
    """Drop or report unreadable files among `items` (with their `labels`): a BadFilesError listing them,
    or with `skip_bad`, one warning. Missing files are always looked for (it costs a `stat`)."""
    if check_images:
        bad = verify_images(items)
    else:
        bad = [(Path(fn), "does not exist") for fn in items if not Path(fn).is_file()]
    if not bad:
        return items, labels
    listing = "\n".join(f"  {fn}: {reason}" for fn, reason in bad[:10])
    more = f"\n  ... and {len(bad) - 10} more" if len(bad) > 10 else ""
    if not skip_bad:
        raise BadFilesError(f"{len(bad)} of the {len(items)} {what} files cannot be used:\n{listing}{more}\n"
                            "Delete or replace them, or pass skip_bad=True to leave them out.", bad,
                            options={"skip_bad": True})
    warnings.warn(f"Leaving out {len(bad)} unreadable {what} file(s) (skip_bad=True):\n{listing}{more}",
                  stacklevel=4)
    drop = {str(fn) for fn, _ in bad}
    keep = [i for i, fn in enumerate(items) if str(Path(fn)) not in drop]
    return [items[i] for i in keep], None if labels is None else [labels[i] for i in keep]
