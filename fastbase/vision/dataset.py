"""Layer 6: a labelled list of image files as a torch Dataset, and the check of its files that names
the unreadable ones (classes, targets and splits come from the data block API in `fastbase.data`).

Labels are carried as plain tensors: an int64 class index per item, or a float multi-hot vector
when an item may have several labels (`multi_label`). Class names live on the dataset, not on tensors.
"""
from __future__ import annotations

import math
import warnings

import numpy as np
import torch
from torch.utils.data import Dataset

from ..core import Path
from ..data import BadFilesError, DataError, LabelError, format_list
from ..data.labels import EmptyLabelList, label_list_from_targets
from .image import (
    PADDING_MODES,
    Image,
    ResizeMethod,
    cover_image,
    load_image,
    resize_image,
    verify_images,
)
from .item_cache import ItemCache, cache_nbytes

__all__ = ["CANVAS_SCALE", "ImageDataset", "check_files", "format_list", "size_hw"]

# training canvases for CROP are this much larger than `size` (see ImageDataset): 4/3 holds the whole
# long side of a 4:3 photo, so a crop window can reach its edges as the validation centre crop cannot
CANVAS_SCALE = 4 / 3


class ImageDataset(Dataset):
    """Image files and their labels: fastai v1's ImageList, with plain tensors.

    `ds[i]` is `(x, y)` as items: x an `Image` (float `3 x H x W` in [0, 1], resized to `size` by a
    deterministic centre crop, pad or squish), y a `Category`, a `MultiCategory` when `multi_label`, a
    `FloatItem` for regression targets (float, no classes) or an `EmptyLabel` for unlabelled (test)
    items. `targets` holds them all as one tensor (int64 class indices, float multi-hot `(n, c)` or
    float values `(n, k)`), and `y` as a label list (`y[i]` an item, `y.classes`). DataLoaders fetch whole batches through `__getitems__` instead, which
    gives `(x uint8, y, src_hw)` per item: uint8 is 4x cheaper to collate and to move to the device,
    and `src_hw` (the extent of the picture, see `transforms.crop_matrices`) lets the batch transforms
    place the crop window. With `canvas=True` (training with augmentation) items keep more than the
    window, in a canvas of one size, so the single batch resample can take the window from anywhere in
    it. For CROP the image is resized exactly as validation images are (so that it just covers `size`),
    its long side kept up to `CANVAS_SCALE` times `size` and the rest of the canvas padded: a window is
    then sampled at one output pixel per canvas pixel, and training and validation images have the
    same sharpness (a resample that shrinks or enlarges would blur or alias them, and shift what
    BatchNorm learns). For PAD and SQUISH the whole image is squished into a `size` canvas.

    None of this is random, so with `cache=True` (and a `size`) each item is decoded and resized once
    and kept in memory that the loader's worker processes share (`item_cache.ItemCache`).
    """

    def __init__(self, items, y: torch.Tensor | None = None, classes=None, multi_label: bool = False, size=None,
                 resize_method: ResizeMethod = ResizeMethod.CROP, padding_mode: str = "reflection",
                 canvas: bool = False, cache: bool = False):
        if padding_mode not in PADDING_MODES:
            raise DataError(f"padding_mode must be one of {PADDING_MODES}, got {padding_mode!r}.")
        self.items = [Path(o) for o in items]
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
        return (3, *(self.canvas_hw if self.canvas else self.size))

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
    def x(self) -> list:
        """The image files, as fastai's `ds.x.items`."""
        return _Files(self.items)

    def __len__(self):
        return len(self.items)

    def new(self, **changes) -> ImageDataset:
        """A copy with some settings changed (e.g. `canvas=False` for the Fix loader), sharing the items."""
        args = {"items": self.items, "y": self.targets if self.labelled else None, "classes": self.classes,
                "multi_label": self.multi_label, "size": self.size, "resize_method": self.resize_method,
                "padding_mode": self.padding_mode, "canvas": self.canvas, "cache": self.cache is not None}
        return type(self)(**{**args, **changes})

    @property
    def canvas_hw(self) -> tuple[int, int] | None:
        """Size of the training canvas (see the class docstring); None when images keep their size."""
        if self.size is None:
            return None
        scale = CANVAS_SCALE if self.resize_method == ResizeMethod.CROP else 1.0
        return math.ceil(self.size[0] * scale), math.ceil(self.size[1] * scale)

    def raw_item(self, i: int, canvas: bool | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """`(x uint8 3 x h x w, y, src_hw int64 (2,))` as the loaders collate it; `canvas` (default:
        the dataset's setting) asks for the training canvas. Served from `cache` when it has the item."""
        fn, canvas = self.items[i], self.canvas if canvas is None else canvas
        cache = self.cache if canvas == self.canvas else None
        hit = None if cache is None else cache.get(i)
        if hit is not None:
            return hit[0], self.targets[i], torch.tensor(hit[1])
        try:
            if canvas and self.size is not None and self.resize_method == ResizeMethod.CROP:
                x, _ = load_image(fn, self.size, ResizeMethod.CROP)
                x, src_hw = cover_image(x, self.size, self.canvas_hw, self.padding_mode)
            elif canvas:
                x, src_hw = load_image(fn, self.canvas_hw, ResizeMethod.SQUISH)
                x = x if self.size is None else resize_image(x, self.canvas_hw, ResizeMethod.SQUISH)
            else:
                x, _ = load_image(fn, self.size, self.resize_method)
                x = x if self.size is None else resize_image(x, self.size, self.resize_method, self.padding_mode)
        except (OSError, SyntaxError, ValueError, RuntimeError) as e:
            raise DataError(f"Cannot read image {fn}: {type(e).__name__}: {e}. Create the DataBunch with "
                            "check_images=True to find every unreadable file up front, and skip_bad=True to "
                            "leave them out.", options={"check_images": True, "skip_bad": True}) from e
        # src_hw (see `transforms.crop_matrices`): for CROP the picture's extent inside x (the canvas
        # region, or all of x when already cropped, so the batch augmentation never crops an item
        # twice); for PAD and SQUISH canvases the whole image's (H, W), which x holds squished
        src_hw = tuple(src_hw) if canvas else tuple(x.shape[-2:])
        if cache is not None:
            cache.put(i, x, src_hw)
        return x, self.targets[i], torch.tensor(src_hw)

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
        """`(Image, label item)` of item `i`, resized as validation images are."""
        x, _, _ = self.raw_item(i, canvas=False)
        return Image(x.float().div_(255)), self.y.get(i)

    def label_text(self, y: torch.Tensor) -> str:
        """A target as text: the class name, or the names of a multi-hot vector joined by ';'."""
        return "" if not self.labelled else str(self.y.reconstruct(y))

    def __repr__(self):
        kind = "multi-label " if self.multi_label else ""
        classes = "" if self.classes is None else f", {len(self.classes)} {kind}classes"
        cached = "" if self.cache is None else f", cached {self.cache.n_filled}/{len(self)}"
        return f"{type(self).__name__}({len(self)} items{classes}, size={self.size}{cached})"


class _Files(list):
    """The files of an ImageDataset as fastai's `ds.x`: a list with `items`."""

    @property
    def items(self):
        return list(self)


def size_hw(size) -> tuple[int, int] | None:
    """`size` (int, (h, w) or None) as (h, w) or None."""
    if size is None:
        return None
    h, w = (size, size) if isinstance(size, (int, np.integer)) else tuple(size)
    if int(h) < 1 or int(w) < 1:
        raise DataError(f"size must be a positive int or (height, width), got {size!r}.")
    return int(h), int(w)


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
