"""Layer 6: segmentation data: `open_mask` and the `ImageSegment` item (a map of class codes that
shows itself as a coloured overlay), the labels of a segmentation chain (`SegmentationLabelList`:
one mask file per image), the dataset that loads an image and its mask placed the same way
(`SegmentationDataset`), so one batch resample moves both (`BatchAugment(tfm_y=True)`), and the
chain's ends: `SegmentationItemList` and `SegmentationDataBunch`, as lesson 3's CamVid notebook
writes them:

    SegmentationItemList.from_folder(path/'images').split_by_rand_pct(0.2)
        .label_from_func(get_y_fn, classes=codes).transform(get_transforms(), size=128, tfm_y=True)
        .databunch(bs=8).normalize(imagenet_stats)

Masks stay uint8 `1 x H x W` through the workers and the collate (codes below 256, as the PNG masks
of CamVid hold them) and become int64 `(bs, 1, H, W)` on the batch, as fastai v1's targets.
"""
from __future__ import annotations

import functools

import numpy as np
import PIL.Image
import torch

from ...core import Path
from ...data import DataError, DatasetType, LabelError, format_list
from ...data.labels import LabelItemList
from ...losses import CrossEntropyFlat
from ..data import ImageDataBunch, ImageList
from ..dataset import ImageDataset
from ..image import Image, augment_one, check_image
from .show import show_mask, show_segment_results

__all__ = ["ImageSegment", "SegmentationDataBunch", "SegmentationDataset", "SegmentationItemList",
           "SegmentationLabelList", "load_mask", "open_mask"]


def load_mask(fn, convert_mode: str = "L", div: bool = False) -> torch.Tensor:
    """The mask file `fn` as uint8 `1 x H x W` of class codes (PIL's `convert_mode`, 'L' by default, as
    fastai's `open_mask`; `div=True` divides by 255, for masks saved as 0/255)."""
    reason = check_image(fn)
    if reason is not None:
        raise DataError(f"Cannot open the mask {fn}: it {reason}.")
    with PIL.Image.open(fn) as img:
        img = img if img.mode == convert_mode else img.convert(convert_mode)
        a = np.array(img)
    if a.ndim != 2:
        raise DataError(f"The mask {fn} has {a.shape[-1]} channels after convert_mode={convert_mode!r}: a mask holds "
                        "one class code per pixel (use convert_mode='L' or 'P').")
    m = torch.from_numpy(a // 255 if div else a).to(torch.uint8)
    return m[None]


def open_mask(fn, div: bool = False, convert_mode: str = "L") -> ImageSegment:
    """Open the mask file `fn` as an `ImageSegment` (int64 `1 x H x W` class codes), as fastai v1."""
    return ImageSegment(load_mask(fn, convert_mode, div).long())


class ImageSegment(Image):
    """A segmentation mask: `data` int64 `1 x H x W`, one class code per pixel; `classes` (optional) the
    names of the codes. `show` draws it alone, or over the image already on `ax` (semi-transparent)."""

    def __init__(self, data: torch.Tensor, classes=None):
        data = torch.as_tensor(data)
        super().__init__(data if data.dim() == 3 else data.reshape(1, *data.shape[-2:]))
        self.classes = None if classes is None else list(classes)

    @property
    def obj(self) -> torch.Tensor:
        return self.data

    def show(self, ax=None, figsize=(3, 3), title: str | None = None, hide_axis: bool = True, cmap: str = "tab20",
             alpha: float | None = None, vmax: int | None = None, **kwargs):
        """Draw the codes with `show_mask` on `ax` (a new figure when None): alpha 0.5 over an image
        already drawn on `ax` (an overlay), 1 alone. The colours span codes 0..`vmax` (default: the
        number of classes less one, when known), so masks of one set match."""
        return show_mask(self.data, ax=ax, alpha=alpha, cmap=cmap, classes=self.classes,
                         n_classes=None if vmax is None else vmax + 1, figsize=figsize, hide_axis=hide_axis,
                         title=title, **kwargs)

    def apply_tfms(self, tfms, size=None, resize_method=None, padding_mode: str = "reflection", **kwargs):
        """A new ImageSegment moved by the geometric transforms of `tfms` (nearest-neighbour; lighting
        does not apply to codes), at `size`, as `Image.apply_tfms`."""
        m = self.data.to(torch.uint8)
        _, moved = augment_one(m, tfms, size, resize_method, padding_mode, mask=m)
        return ImageSegment(moved, self.classes)

    def text(self) -> str:
        return ""

    def __str__(self):
        return f"ImageSegment {tuple(self.data.shape)}"


class SegmentationLabelList(LabelItemList):
    """The masks of segmentation items: `items` are mask files, `classes` the codes (required, as the
    course's `label_from_func(get_y_fn, classes=codes)` gives them); `ll[i]` opens an `ImageSegment`.
    The loss is cross-entropy per pixel, `c` the number of codes."""
    item_cls = ImageSegment

    @property
    def loss_func(self):
        return CrossEntropyFlat(axis=1)

    def process(self, train=None, names=None):
        self.classes = train.classes if train is not None else self.given_classes
        if self.classes is None:
            raise LabelError("Segmentation labels need their codes: label_from_func(get_y_fn, classes=codes), "
                             "with codes the class names in the order of the mask values (e.g. read from codes.txt).")
        self.items = [Path(o) for o in self.items]
        self.targets = torch.zeros(len(self.items), dtype=torch.long)  # the masks are files, opened per item
        return self

    def get(self, i: int) -> ImageSegment:
        return ImageSegment(load_mask(self.items[i]).long(), self.classes)

    def reconstruct(self, t: torch.Tensor) -> ImageSegment:
        return ImageSegment(t, self.classes)


def check_masks(lls) -> None:
    """Every training and validation mask file exists: a LabelError names the missing ones, with images."""
    missing = [(m, fn) for ll in (lls.train, lls.valid) for fn, m in zip(ll.x.items, ll.y.items)
               if not Path(m).is_file()]
    if missing:
        listing = format_list(f"{m} (for {Path(fn).name})" for m, fn in missing)
        raise LabelError(f"{len(missing)} mask file(s) do not exist: {listing}. Check the label function (get_y_fn): "
                         "it should return the mask's path for an image's path.")


class SegmentationDataset(ImageDataset):
    """Image files and their mask files (`masks`; None for unlabelled test images): `raw_item` gives
    `(x uint8 C x h x w, mask uint8 1 x h x w, src_hw)`, the mask resized and placed as the image is
    (nearest-neighbour). Images decode at full size, so a mask lines up with its image to the pixel.
    A mask of another size than its image, with codes outside `classes`, or missing, is a DataError
    naming the file. `ds[i]` is `(Image, ImageSegment)`."""
    extra_channels = 1  # the mask is cached with its image
    exact_decode = True

    def __init__(self, items, masks=None, classes=None, **kwargs):
        kwargs.pop("y", None)
        kwargs.pop("multi_label", None)
        super().__init__(items, y=None, classes=classes, **kwargs)
        self.masks = None if masks is None else [Path(o) for o in masks]
        self.labelled = self.masks is not None
        if self.masks is not None and len(self.masks) != len(self.items):
            raise LabelError(f"{len(self.items)} images but {len(self.masks)} masks.")

    def _init_args(self) -> dict:
        args = super()._init_args()
        del args["y"], args["multi_label"]
        return {**args, "masks": self.masks}

    def subset(self, indices) -> SegmentationDataset:
        indices = list(indices)
        return self.new(items=[self.items[i] for i in indices],
                        masks=None if self.masks is None else [self.masks[i] for i in indices])

    def unlabelled(self, items) -> SegmentationDataset:
        """Other image files with these settings and no masks (a test set)."""
        return self.new(items=list(items), masks=None)

    @property
    def c(self) -> int | None:
        return None if self.classes is None else len(self.classes)

    @property
    def y(self) -> SegmentationLabelList:
        if self._labels is None:
            self._labels = SegmentationLabelList(self.masks or [], self.classes)
            if self.masks is not None:
                self._labels.process()
        return self._labels

    def _stored(self, i: int, x: torch.Tensor, full_hw, canvas: bool):
        x, src_hw = self.place(x, full_hw, canvas)
        if self.masks is None:
            return torch.cat([x, torch.zeros(1, *x.shape[-2:], dtype=torch.uint8)]), src_hw
        fn = self.masks[i]
        if not fn.is_file():
            raise DataError(f"The mask {fn} of image {self.items[i]} does not exist: check the label function "
                            "(get_y_fn) and the mask folder.")
        m = load_mask(fn)
        if tuple(m.shape[-2:]) != tuple(full_hw):
            raise DataError(f"The mask {fn} is {m.shape[2]}x{m.shape[1]} pixels but its image {self.items[i]} is "
                            f"{full_hw[1]}x{full_hw[0]}: a mask must have its image's size.")
        if self.classes is not None and int(m.max()) >= len(self.classes):
            bad = sorted(v for v in torch.unique(m).tolist() if v >= len(self.classes))
            raise DataError(f"The mask {fn} holds code(s) {format_list(bad)} but there are {len(self.classes)} "
                            f"classes (codes 0..{len(self.classes) - 1}): pass every class in `classes=`, or fix "
                            "the mask (div=True masks store 0/255).")
        m, _ = self.place(m, full_hw, canvas, mode="nearest")
        return torch.cat([x, m]), src_hw

    def _unpack(self, i: int, stored: torch.Tensor):
        return stored[:-1], stored[-1:]

    def _label_item(self, i: int, y: torch.Tensor) -> ImageSegment:
        return ImageSegment(y.long(), self.classes)

    def label_text(self, y: torch.Tensor) -> str:
        return ""


class SegmentationDataBunch(ImageDataBunch):
    """An ImageDataBunch whose targets are masks: int64 `(n, 1, *size)` class codes, moved with their
    images (`tfm_y`). What differs from classification is here, as the task contract's methods: the
    datasets (`SegmentationDataset`), `predict`'s item (an `ImageSegment`) and `show_results`."""
    tfm_y = True

    @classmethod
    def _check_labels(cls, lls, tfm_y: bool, resizes: bool) -> None:
        super()._check_labels(lls, tfm_y, resizes)
        check_masks(lls)

    @classmethod
    def _datasets(cls, lls, common: dict, canvas: bool):
        make = functools.partial(SegmentationDataset, **common)
        train_ds = make(lls.train.x.items, lls.train.y.items, canvas=canvas)
        return train_ds, make(lls.valid.x.items, lls.valid.y.items), make

    def decode_prediction(self, probs: torch.Tensor, thresh: float = 0.5, regression: bool = False):
        """`(ImageSegment, (1, H, W) class map)` of per-pixel probabilities `(c, H, W)`, as fastai v1."""
        codes = probs.argmax(0)[None]
        return ImageSegment(codes, self.classes), codes

    def show_results(self, learn, ds_type: DatasetType = DatasetType.Valid, rows: int = 3, figsize=None, **kwargs):
        """The true and the predicted mask over each image of one `ds_type` batch (`show_segment_results`)."""
        return show_segment_results(learn, ds_type, rows, figsize, **kwargs)


class SegmentationItemList(ImageList):
    """Image files whose labels are mask files: `label_from_func(get_y_fn, classes=codes)` makes a
    `SegmentationLabelList` (pass `classes`, the names of the mask codes); the chain ends in a
    `SegmentationDataBunch`."""
    _label_cls = SegmentationLabelList
    _bunch = SegmentationDataBunch
