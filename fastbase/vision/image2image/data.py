"""Layer 6: image-to-image data (lesson 7's super-resolution and GAN generators): images as inputs and
as targets, as the course writes the chain:

    ImageImageList.from_folder(path_lr).split_by_rand_pct(0.1, seed=42)
        .label_from_func(lambda x: path_hr/x.name).transform(get_transforms(max_zoom=2.), size=size, tfm_y=True)
        .databunch(bs=bs).normalize(imagenet_stats, do_y=True)

Each item is an input image and its target image placed on one canvas (the smaller resized to the
larger's size first, so both share the geometry), so the batch augmentation moves both with one
resample (`ImagePairAugment`: the same crop, flip, rotation, zoom, warp and lighting; pixel
transforms such as cutout on the input only). Targets reach the loss as float `(bs, 3, *size)` in
[0, 1], normalised too with `normalize(stats, do_y=True)`, and are denormalised for showing, `predict`
and `pred_batch`.
"""
from __future__ import annotations

import functools

import torch

from ...core import Path
from ...data import DataError, DatasetType, LabelError, format_list
from ...data.labels import LabelItemList
from ...losses import MSELossFlat
from ..data import ImageDataBunch, ImageList
from ..dataset import ImageDataset
from ..image import Image, ResizeMethod, load_image, resize_image
from ..sampling import resample
from ..transforms import BatchAugment, ToFloat
from .show import show_pair_batch, show_pair_results

__all__ = ["ImageImageDataBunch", "ImageImageDataset", "ImageImageList", "ImagePairAugment", "ImageTargetList",
           "PairToFloat"]


class ImageTargetList(LabelItemList):
    """The targets of an image-to-image chain: `items` are image files; `ll[i]` opens an `Image`. The
    loss is `MSELossFlat` (pass another, e.g. a feature loss, to the Learner); `c` is 3 (settable on
    the DataBunch: `data.c = 3`)."""
    item_cls = Image

    @property
    def loss_func(self):
        return MSELossFlat()

    @property
    def c(self) -> int:
        return 3

    def process(self, train=None, names=None):
        self.classes = None
        self.items = [Path(o) for o in self.items]
        self.targets = torch.zeros(len(self.items), dtype=torch.long)  # the targets are files, opened per item
        return self

    def get(self, i: int) -> Image:
        x, _ = load_image(self.items[i])
        return Image(x.float().div_(255))

    def reconstruct(self, t: torch.Tensor) -> Image:
        return Image(t.float().clamp(0, 1))


class ImageImageDataset(ImageDataset):
    """Input image files and their target image files (`targets_files`; None for a test set):
    `raw_item` gives `(x uint8 3 x h x w, y uint8 3 x h x w, src_hw)`, the two placed the same way
    (the smaller decoded image is first resized to the larger's size). `ds[i]` is `(Image, Image)`."""
    extra_channels = 3  # the target is cached with its input
    exact_decode = True  # both at full size, so their geometries match

    def __init__(self, items, targets_files=None, **kwargs):
        kwargs.pop("y", None)
        kwargs.pop("multi_label", None)
        super().__init__(items, y=None, **kwargs)
        self.targets_files = None if targets_files is None else [Path(o) for o in targets_files]
        self.labelled = self.targets_files is not None
        if self.labelled and len(self.targets_files) != len(self.items):
            raise LabelError(f"{len(self.items)} input images but {len(self.targets_files)} target images.")

    def _init_args(self) -> dict:
        args = super()._init_args()
        del args["y"], args["multi_label"]
        return {**args, "targets_files": self.targets_files}

    def subset(self, indices) -> ImageImageDataset:
        indices = list(indices)
        targets = None if self.targets_files is None else [self.targets_files[i] for i in indices]
        return self.new(items=[self.items[i] for i in indices], targets_files=targets)

    def unlabelled(self, items) -> ImageImageDataset:
        """Other input files with these settings and no targets (a test set)."""
        return self.new(items=list(items), targets_files=None)

    @property
    def c(self) -> int:
        return self.channels

    @property
    def y(self) -> ImageTargetList:
        if self._labels is None:
            self._labels = ImageTargetList(self.targets_files or []).process()
        return self._labels

    def _stored(self, i: int, x: torch.Tensor, full_hw, canvas: bool):
        if self.targets_files is None:
            x, src_hw = self.place(x, full_hw, canvas)
            return torch.cat([x, torch.zeros_like(x)]), src_hw
        fn = self.targets_files[i]
        if not fn.is_file():
            raise DataError(f"The target image {fn} of {self.items[i]} does not exist: check the label function "
                            "(e.g. lambda x: path_hr/x.name) and the target folder.")
        y, y_hw = load_image(fn, convert_mode=self.convert_mode)
        if y_hw[0] * y_hw[1] > full_hw[0] * full_hw[1]:  # one geometry: the larger image's size
            x, full_hw = resize_image(x, y_hw, ResizeMethod.SQUISH), y_hw
        elif tuple(y_hw) != tuple(full_hw):
            y = resize_image(y, full_hw, ResizeMethod.SQUISH)
        x, src_hw = self.place(x, full_hw, canvas)
        y, _ = self.place(y, full_hw, canvas)
        return torch.cat([x, y]), src_hw

    def _unpack(self, i: int, stored: torch.Tensor):
        return stored[:self.channels], stored[self.channels:]

    def _label_item(self, i: int, y: torch.Tensor) -> Image:
        return Image(y.float() / 255 if y.dtype == torch.uint8 else y)

    def label_text(self, y: torch.Tensor) -> str:
        return ""


class ImagePairAugment(BatchAugment):
    """`BatchAugment` for image targets: the input and the target (uint8 `(n, 3, H, W)` on the same
    canvas) go through one bilinear resample together (the same crop window, geometry and grid moves
    such as jitter) and take the same lighting (brightness, contrast), as fastai's image targets do:
    a model cannot tell from its input alone how much lighting to undo, so lighting the input only
    would teach it to change the brightness of what it restores (bench/RESULTS.md, superres.py). Pixel
    transforms (cutout...) touch the input only: what they remove is there to restore. The target
    leaves as float in [0, 1]."""
    light_y = True

    def move(self, x, y, m, out_hw, move_grid=None):
        c = x.shape[1]
        both = resample(torch.cat([x, y.to(x.dtype)], dim=1), m, out_hw, self.padding_mode, self._workspace,
                        move_grid=move_grid)
        return both[:, :c], both[:, c:]

    def target(self, y):
        return y.float().div(255)


class PairToFloat(ToFloat):
    """`ToFloat` for image targets: input and target both float in [0, 1]."""

    def __call__(self, batch):
        x, y, *_ = batch
        x, _ = super().__call__((x, None))
        return x, y.float().div(255)


class ImageImageDataBunch(ImageDataBunch):
    """An ImageDataBunch whose targets are images: float `(n, 3, *size)`, moved with their inputs
    (`tfm_y`, `ImagePairAugment`); `normalize(stats, do_y=True)` normalises them too. `predict` gives an
    `Image` (denormalised), `show_batch` inputs beside targets, `show_results` input | prediction |
    target."""
    tfm_y = True
    augment_cls, to_float_cls = ImagePairAugment, PairToFloat

    @classmethod
    def _check_labels(cls, lls, tfm_y: bool, resizes: bool) -> None:
        if resizes and not tfm_y:
            raise DataError("Target images must be resized and moved with their inputs: pass tfm_y=True to "
                            "transform (e.g. .transform(get_transforms(), size=128, tfm_y=True)).")
        missing = [(t, fn) for ll in (lls.train, lls.valid) for fn, t in zip(ll.x.items, ll.y.items)
                   if not Path(t).is_file()]
        if missing:
            listing = format_list(f"{t} (for {Path(fn).name})" for t, fn in missing)
            raise LabelError(f"{len(missing)} target image(s) do not exist: {listing}. Check the label function "
                             "(e.g. lambda x: path_hr/x.name): it should return the target's path for an input's.")

    @classmethod
    def _datasets(cls, lls, common: dict, canvas: bool):
        common = {k: v for k, v in common.items() if k != "classes"}
        make = functools.partial(ImageImageDataset, **common)
        train_ds = make(lls.train.x.items, lls.train.y.items, canvas=canvas)
        return train_ds, make(lls.valid.x.items, lls.valid.y.items), make

    def decode_prediction(self, probs: torch.Tensor, thresh: float = 0.5, regression: bool = False):
        """`(Image, its (3, H, W) pixels in [0, 1])` of one predicted image (denormalised)."""
        pixels = self.denorm_y(probs[None])[0].clamp(0, 1)
        return Image(pixels), pixels

    def show_batch(self, rows: int = 3, figsize=None, ds_type: DatasetType = DatasetType.Train, **kwargs):
        """`rows` inputs beside their targets, denormalised (`imgsize=`: inches per image)."""
        return show_pair_batch(self, rows, figsize, ds_type, **kwargs)

    def show_results(self, learn, ds_type: DatasetType = DatasetType.Valid, rows: int = 3, figsize=None, **kwargs):
        """`rows` lines of input | prediction | target of one `ds_type` batch (`imgsize=` per image)."""
        return show_pair_results(learn, ds_type, rows, figsize, **kwargs)


class ImageImageList(ImageList):
    """Image files whose labels are image files too (`label_from_func(lambda x: path_hr/x.name)`):
    the labels are an `ImageTargetList` and the chain ends in an `ImageImageDataBunch`."""
    _label_cls = ImageTargetList
    _bunch = ImageImageDataBunch
