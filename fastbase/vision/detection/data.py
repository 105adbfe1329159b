"""Layer 6: detection data: the dataset that loads an image with its boxes placed the same way
(`ObjectDataset`), and the ends of a detection chain, as fastai v1's documentation writes it:

    images, lbl_bbox = get_annotations(coco/'train.json')
    img2bbox = dict(zip(images, lbl_bbox))
    data = (ObjectItemList.from_folder(coco).split_by_rand_pct()
            .label_from_func(lambda o: img2bbox[o.name])
            .transform(get_transforms(), tfm_y=True).databunch(bs=16, collate_fn=bb_pad_collate))

Batches are `(x, (boxes (bs, b, 4) scaled, labels (bs, b)))`, padded with class 0 (`bb_pad_collate`);
the batch resample moves the boxes' corners with the image, clips them and drops those it pushes
out (`fastbase.vision.coords.BoxTargets`).
"""
from __future__ import annotations

import functools

import torch
from torch.utils.data.dataloader import default_collate

from ...data import DataError, DatasetType, LabelError
from ..coords import BoxTargets, place_points, unplace_points
from ..data import ImageDataBunch, ImageList
from ..dataset import ImageDataset
from ..image import Image, item_hw
from .interpret import show_boxes_results
from .items import ImageBBox, ObjectCategoryList, bb_pad_collate
from .show import show_boxes_batch

__all__ = ["ObjectDataBunch", "ObjectDataset", "ObjectItemList"]


class ObjectDataset(ImageDataset):
    """Image files and their boxes `y` (a list of `(boxes (b, 4) pixels, labels (b,))`; None for
    unlabelled images) with `classes` ('background' first): `raw_item` gives `(x uint8, (boxes scaled
    on x, labels), src_hw)`. Images decode at full size and are not kept in the item cache (their boxes
    depend on the image's size). `ds[i]` is `(Image, ImageBBox)`."""
    exact_decode = True

    def __init__(self, items, y=None, classes=None, **kwargs):
        kwargs.pop("multi_label", None)
        kwargs["cache"] = False
        if classes is None:
            raise LabelError("An object detection dataset needs its classes ('background' first).")
        super().__init__(items, y=None, classes=classes, **kwargs)
        self.labelled = y is not None
        self.targets = list(y) if y is not None else [(torch.zeros(0, 4), torch.zeros(0, dtype=torch.long))] * len(self)
        if len(self.targets) != len(self.items):
            raise LabelError(f"{len(self.items)} images but {len(self.targets)} box labels.")

    def _init_args(self) -> dict:
        args = super()._init_args()
        del args["multi_label"]
        return {**args, "y": self.targets if self.labelled else None}

    def subset(self, indices) -> ObjectDataset:
        indices = list(indices)
        return self.new(items=[self.items[i] for i in indices],
                        y=[self.targets[i] for i in indices] if self.labelled else None)

    @property
    def c(self) -> int:
        return len(self.classes)

    @property
    def y(self) -> ObjectCategoryList:
        if self._labels is None:
            labels = ObjectCategoryList([], self.classes)
            labels.targets = self.targets
            self._labels = labels
        return self._labels

    def _stored(self, i: int, x: torch.Tensor, full_hw, canvas: bool):
        x, src_hw = self.place(x, full_hw, canvas)
        boxes, labels = self.targets[i]
        corners = place_points(boxes.reshape(-1, 2, 2), full_hw, self.size, self.resize_method, canvas)
        placed = corners.reshape(-1, 4).clamp(-1, 1)  # a crop cuts boxes; one it leaves no area of is dropped
        keep = (placed[:, 2] > placed[:, 0]) & (placed[:, 3] > placed[:, 1])
        return (x, (placed[keep], labels[keep])), src_hw

    def _unpack(self, i: int, stored):
        return stored

    def _label_item(self, i: int, y):
        return y

    def __getitem__(self, i: int):
        if self.item_tfm is None:
            x, (boxes, labels), _ = self.raw_item(i, canvas=False)
            return Image(x.float().div_(255)), ImageBBox(boxes, labels, x.shape[-2:], self.classes)
        x, y, src_hw = bb_pad_collate([self.raw_item(i)])
        x, (boxes, labels) = self.item_tfm((x, y, src_hw))
        keep = labels[0] > 0
        return Image(x[0]), ImageBBox(boxes[0][keep], labels[0][keep], x.shape[-2:], self.classes)

    def label_text(self, y) -> str:
        return ""


class ObjectDataBunch(ImageDataBunch):
    """An ImageDataBunch whose targets are labelled boxes, moved with their images (`BoxTargets`) and
    padded per batch (`bb_pad_collate`, whatever `collate_fn` says: boxes cannot be stacked).

    The model takes the boxes too and computes its own loss (`targets_to_model`, `DetectionLoss`);
    `learn.predict(img, thresh)` gives an `ImageBBox` on `img` in its pixels, with scores, and
    `fastbase serve` answers the boxes in the pixels of the upload."""
    tfm_y = BoxTargets()
    targets_to_model = True
    serves_own_answer = True
    exact_decode = True

    def decode_prediction(self, probs: torch.Tensor, thresh: float = 0.5, regression: bool = False):
        """`(ImageBBox on the model's input, its rows)` of one image's detections `(n, 6)` (`Detector`'s
        rows `[top, left, bottom, right (scaled), score, label]`): those scoring at least `thresh`."""
        rows = probs[(probs[:, 4] >= thresh) & (probs[:, 4] > 0)]
        hw = self.size if self.size is not None else (2, 2)
        return ImageBBox(rows[:, :4], rows[:, 5].long(), hw, self.classes, scores=rows[:, 4]), rows

    def item_prediction(self, item, label: ImageBBox) -> ImageBBox:
        """The predicted boxes on `item` itself, in its pixels: the input's placement undone, clipped."""
        return self._on_image(label, item_hw(item))

    def _on_image(self, label: ImageBBox, full_hw) -> ImageBBox:
        boxes = label.boxes
        if self.size is not None:
            boxes = unplace_points(boxes.reshape(-1, 2, 2), full_hw, self.size, self.resize_method).reshape(-1, 4)
        return ImageBBox(boxes.clamp(-1, 1), label.labels, full_hw, self.classes, scores=label.scores)

    def serve_answer(self, row: torch.Tensor, item_hw, thresh: float = 0.5) -> dict:
        """`fastbase serve`'s answer: each box scoring at least `thresh` as `[top, left, bottom, right]`
        pixels of the upload, with its class and score, and the upload's (h, w)."""
        label = self._on_image(self.decode_prediction(row.cpu(), thresh)[0], tuple(item_hw))
        boxes = [{"box": [round(v, 2) for v in b], "label": name, "score": round(s, 4)}
                 for b, name, s in zip(label.pixels.tolist(), label.names(), label.scores.tolist())]
        return {"boxes": boxes, "size": list(label.size)}

    def decode_preds(self, probs: torch.Tensor, thresh: float = 0.5) -> list:
        """Each image's boxes scoring at least `thresh`: `[top, left, bottom, right]` pixels on the
        model's input, class name and score."""
        out = []
        for p in probs:
            label, _ = self.decode_prediction(p, thresh)
            out.append([[*b, name, s] for b, name, s in zip(label.pixels.tolist(), label.names(),
                                                            label.scores.tolist())])
        return out

    @classmethod
    def create_from_ll(cls, lls, collate_fn=None, **kwargs) -> ObjectDataBunch:
        collate = bb_pad_collate if collate_fn in (None, default_collate) else collate_fn
        return super().create_from_ll(lls, collate_fn=collate, **kwargs)

    @classmethod
    def _check_labels(cls, lls, tfm_y: bool, resizes: bool) -> None:
        if not isinstance(lls.train.y, ObjectCategoryList):
            raise DataError(f"An ObjectDataBunch needs box labels (ObjectCategoryList); these are a "
                            f"{type(lls.train.y).__name__}. Start the chain with ObjectItemList.")

    @classmethod
    def _datasets(cls, lls, common: dict, canvas: bool):
        make = functools.partial(ObjectDataset, **common)
        train_ds = make(lls.train.x.items, lls.train.y.targets, canvas=canvas)
        return train_ds, make(lls.valid.x.items, lls.valid.y.targets), make

    def show_batch(self, rows: int = 3, figsize=None, ds_type: DatasetType = DatasetType.Train,
                   return_fig: bool | None = None, save_to=None, **kwargs):
        """Up to `rows` x `rows` images of one batch with their labelled boxes."""
        return show_boxes_batch(self, rows, figsize, ds_type, return_fig, save_to, **kwargs)

    def show_results(self, learn, ds_type: DatasetType = DatasetType.Valid, rows: int = 3, figsize=None, **kwargs):
        """The true boxes and `learn`'s detections (scoring at least `thresh`, default 0.5) on images of
        one `ds_type` batch, side by side."""
        return show_boxes_results(learn, ds_type, rows, figsize, **kwargs)


class ObjectItemList(ImageList):
    """Image files whose labels are boxes: `label_from_func(func)` with `func(file)` giving
    `[boxes, names]` makes an `ObjectCategoryList`; the chain ends in an `ObjectDataBunch`."""
    _label_cls = ObjectCategoryList
    _bunch = ObjectDataBunch
