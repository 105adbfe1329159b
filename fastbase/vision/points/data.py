"""Layer 6: points data: the dataset that loads an image with its points placed the same way
(`PointsDataset`), and the ends of a points chain, `PointsItemList` and `PointsDataBunch`, as the
course's head-pose lesson writes them:

    PointsItemList.from_folder(path).split_by_valid_func(lambda o: o.parent.name == '13')
        .label_from_func(get_ctr).transform(get_transforms(), tfm_y=True, size=(120, 160))
        .databunch().normalize(imagenet_stats)

The workers place each image (cover, squish or pad) and its points by the same geometry; the one
batch resample moves the points by the inverse of its map (`fastbase.vision.coords`), so the targets
are where the augmented image shows them. Points stay on the batch whatever happens to them: one
that leaves the image keeps its coordinates past +-1.
"""
from __future__ import annotations

import functools
import warnings

import torch

from ...data import DataError, DatasetType, LabelError
from ..augments import Dihedral, Flip
from ..coords import FlowField, PointTargets, place_points, unplace_points, unscale_points
from ..data import ImageDataBunch, ImageList
from ..dataset import ImageDataset
from ..image import item_hw
from .items import ImagePoints, PointsLabelList
from .show import show_points_batch, show_points_results

__all__ = ["PointsDataBunch", "PointsDataset", "PointsItemList"]


class PointsDataset(ImageDataset):
    """Image files and their points `y` (float `(n, k, 2)`, `(y, x)` pixels of each image; None for
    unlabelled images, with `n_points` saying `k`): `raw_item` gives `(x uint8, points (k, 2) scaled
    on x, src_hw)`. Images decode at full size, so the points line up to the pixel; items are not
    kept in the item cache (their points depend on the image's size). `ds[i]` is `(Image, ImagePoints)`."""
    exact_decode = True

    def __init__(self, items, y=None, n_points: int | None = None, **kwargs):
        kwargs.pop("multi_label", None)
        kwargs.pop("classes", None)
        kwargs["cache"] = False
        if y is not None:
            y = torch.as_tensor(y, dtype=torch.float32)
            n_points = y.shape[1]
        if n_points is None:
            raise LabelError("A points dataset needs its points, or n_points for unlabelled images.")
        self.n_points = int(n_points)
        super().__init__(items, y=y, classes=None, multi_label=False, **kwargs)

    def _init_args(self) -> dict:
        return {**super()._init_args(), "n_points": self.n_points}

    @property
    def c(self) -> int:
        return 2 * self.n_points

    @property
    def y(self) -> PointsLabelList:
        if self._labels is None:
            labels = PointsLabelList([], size=self.size)
            labels.targets = self.targets if self.labelled else torch.zeros(len(self), self.n_points, 2)
            self._labels = labels
        return self._labels

    def _stored(self, i: int, x: torch.Tensor, full_hw, canvas: bool):
        x, src_hw = self.place(x, full_hw, canvas)
        if not self.labelled:
            return (x, torch.zeros(self.n_points, 2)), src_hw
        return (x, place_points(self.targets[i], full_hw, self.size, self.resize_method, canvas)), src_hw

    def _unpack(self, i: int, stored):
        return stored

    def _label_item(self, i: int, y: torch.Tensor):
        return y

    def __getitem__(self, i: int):
        img, y = super().__getitem__(i)
        return img, ImagePoints(FlowField(img.size, y), scale=False)

    def label_text(self, y: torch.Tensor) -> str:
        return ""


class PointsDataBunch(ImageDataBunch):
    """An ImageDataBunch whose targets are points: float `(bs, k, 2)` scaled `(y, x)`, moved with their
    images (the transforms' coordinate hook, `PointTargets`). The model gives `c = 2 * k` numbers and
    learns with `MSELossFlat`. `learn.predict(img)` gives an `ImagePoints` on `img`, in its pixels."""
    tfm_y = PointTargets()
    exact_decode = True

    @classmethod
    def _check_labels(cls, lls, tfm_y: bool, resizes: bool) -> None:
        if not isinstance(lls.train.y, PointsLabelList):
            raise DataError(f"A PointsDataBunch needs points labels (PointsLabelList); these are a "
                            f"{type(lls.train.y).__name__}. Start the chain with PointsItemList.")

    @classmethod
    def _augmentation(cls, lls, train_tfms: list) -> tuple[list, PointTargets]:
        """Mirroring transforms renumber ordered points by the labels' `flip_idx`; without one, several
        points are not mirrored at all (a warning says so): a flip moves point k to the other side of
        the face without renaming it, which teaches the model that both sides are the same point."""
        flip_idx, k = lls.train.y.flip_idx, lls.train.y.targets.shape[1]
        mirrors = [t for t in train_tfms if isinstance(t, (Flip, Dihedral))]
        if mirrors and flip_idx is None and k > 1:
            warnings.warn(f"{', '.join(type(t).__name__ for t in mirrors)} left out of the training transforms: "
                          f"the {k} points are ordered, and a mirrored image would put each on the other side "
                          "under its old number. Pass flip_idx= to label_from_func (the permutation that "
                          "renumbers them on a mirrored image) to mirror them, or do_flip=False to say so.",
                          stacklevel=3)
            train_tfms = [t for t in train_tfms if not isinstance(t, (Flip, Dihedral))]
        return train_tfms, PointTargets(flip_idx if k > 1 else None)

    @classmethod
    def _datasets(cls, lls, common: dict, canvas: bool):
        make = functools.partial(PointsDataset, n_points=lls.train.y.targets.shape[1], **common)
        train_ds = make(lls.train.x.items, lls.train.y.targets, canvas=canvas)
        return train_ds, make(lls.valid.x.items, lls.valid.y.targets), make

    def decode_prediction(self, probs: torch.Tensor, thresh: float = 0.5, regression: bool = False):
        """`(ImagePoints on the model's input, (k, 2) scaled points)` of one prediction `(2k,)`."""
        pts = probs.reshape(-1, 2)
        return ImagePoints(FlowField(self.size, pts), scale=False), pts

    def item_prediction(self, item, label: ImagePoints) -> ImagePoints:
        """The predicted points on `item` itself, in its pixels: the input's placement (crop, pad or
        squish to `size`) undone."""
        return label if self.size is None else self._on_image(label, item_hw(item))

    def _on_image(self, label: ImagePoints, full_hw) -> ImagePoints:
        """Points predicted on the model's input, moved onto the image of `full_hw` it was made from."""
        pts = unplace_points(label.data, full_hw, self.size, self.resize_method)
        return ImagePoints(FlowField(full_hw, pts), scale=False)

    def serve_answer(self, row: torch.Tensor, item_hw) -> dict:
        """`fastbase serve`'s answer: the points as `(y, x)` pixels of the upload, and its (h, w)."""
        label, _ = self.decode_prediction(row.cpu())
        pts = label if self.size is None else self._on_image(label, tuple(item_hw))
        return {"points": [[round(v, 2) for v in p] for p in pts.pixels.tolist()], "size": list(pts.size)}

    def decode_preds(self, probs: torch.Tensor, thresh: float = 0.5) -> list:
        """Each prediction's points, `(y, x)` pixels on the model's input, as lists."""
        return [unscale_points(p.reshape(-1, 2), self.size).tolist() for p in probs]

    def show_batch(self, rows: int = 3, figsize=None, ds_type: DatasetType = DatasetType.Train,
                   return_fig: bool | None = None, save_to=None, **kwargs):
        """Up to `rows` x `rows` images of one batch with their points drawn."""
        return show_points_batch(self, rows, figsize, ds_type, return_fig, save_to, **kwargs)

    def show_results(self, learn, ds_type: DatasetType = DatasetType.Valid, rows: int = 3, figsize=None, **kwargs):
        """The true points (green) and the predicted ones (red) on images of one `ds_type` batch."""
        return show_points_results(learn, ds_type, rows, figsize, **kwargs)

    def export_state(self) -> dict:
        return {**super().export_state(), "n_points": (self.c or 0) // 2}


class PointsItemList(ImageList):
    """Image files whose labels are points: `label_from_func(func)` with `func(file)` giving `(y, x)`
    pixels (`(2,)` or `(k, 2)`) makes a `PointsLabelList`; the chain ends in a `PointsDataBunch`."""
    _label_cls = PointsLabelList
    _bunch = PointsDataBunch
