"""Layer 6: the items of object detection: `ImageBBox` (labelled boxes on an image, which draw
themselves), COCO annotations (`get_annotations`), the labels of a detection chain
(`ObjectCategoryList`) and `bb_pad_collate`, which pads a batch's boxes to one count.

A box is `(top, left, bottom, right)` in pixels, as fastai v1 writes it; on a batch it is scaled to
`[-1, 1]` over the image (`fastbase.vision.coords`). Class 0 is 'background', the padding of a batch
with fewer boxes on some images; an image without boxes is a valid, empty target.
"""
from __future__ import annotations

import json

import numpy as np
import torch

from ...core import Path
from ...data import DataError, LabelError, format_list
from ...data.labels import LabelItemList, sorted_classes
from ..coords import CoordItem, scale_points, unscale_points
from .model import DetectionLoss

__all__ = ["ImageBBox", "ObjectCategoryList", "bb_pad_collate", "get_annotations"]

BACKGROUND = "background"


class ImageBBox(CoordItem):
    """Labelled boxes on an image of `size` (h, w): `data` is `(boxes (b, 4) scaled, labels (b,) int64)`,
    `pixels` the boxes in pixels, `classes` the names of the labels (index 0 'background')."""
    noun = "boxes"

    def __init__(self, boxes: torch.Tensor, labels: torch.Tensor, size, classes=None, scores=None):
        self.boxes = torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4)
        self.labels = torch.as_tensor(labels, dtype=torch.long).reshape(-1)
        self.size, self.classes = tuple(size), None if classes is None else list(classes)
        self.scores = None if scores is None else torch.as_tensor(scores, dtype=torch.float32).reshape(-1)

    @classmethod
    def create(cls, h: int, w: int, bboxes, labels=None, classes=None, pad_idx: int = 0, scale: bool = True):
        """Boxes `bboxes` ((b, 4) top-left-bottom-right, in pixels unless `scale=False`) on an `h x w`
        image, with `labels` (indexes into `classes`, or names found in them); fastai v1's signature."""
        boxes = torch.as_tensor(np.asarray(bboxes, dtype=np.float32)).reshape(-1, 4)
        if labels is None:
            idx = torch.zeros(len(boxes), dtype=torch.long)
        else:
            names = list(labels)
            if classes is not None and names and isinstance(names[0], str):
                idx = torch.tensor([list(classes).index(n) for n in names], dtype=torch.long)
            else:
                idx = torch.as_tensor(np.asarray(names, dtype=np.int64)).reshape(-1)
        keep = idx != pad_idx if labels is not None and pad_idx is not None and classes is not None else slice(None)
        boxes = _scale_boxes(boxes, (h, w)) if scale else boxes
        return cls(boxes[keep], idx[keep], (h, w), classes)

    @property
    def data(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.boxes, self.labels

    @property
    def pixels(self) -> torch.Tensor:
        return _unscale_boxes(self.boxes, self.size)

    def __len__(self):
        return len(self.boxes)

    def names(self) -> list[str]:
        return [self.classes[i] if self.classes is not None else str(i) for i in self.labels.tolist()]

    def draw(self, ax, color="white", text_size: int = 8, **kwargs) -> None:
        """Draw the boxes and their class names on `ax` (`show(ax)` calls it); `color=None`: one per class."""
        import matplotlib.pyplot as plt
        from matplotlib import patches
        colors = plt.get_cmap("tab10")
        for k, ((t, lft, b, r), lbl, name) in enumerate(zip(self.pixels.tolist(), self.labels.tolist(), self.names())):
            edge = colors(lbl % 10) if color is None else color
            ax.add_patch(patches.Rectangle((lft - 0.5, t - 0.5), r - lft, b - t, fill=False, edgecolor=edge, lw=1.5))
            score = "" if self.scores is None else f" {self.scores[k]:.2f}"
            ax.text(lft - 0.5, t - 0.5, f"{name}{score}", color=edge, fontsize=text_size, va="bottom", **kwargs)


def _scale_boxes(boxes: torch.Tensor, hw) -> torch.Tensor:
    return scale_points(boxes.reshape(-1, 2, 2), hw).reshape(-1, 4)


def _unscale_boxes(boxes: torch.Tensor, hw) -> torch.Tensor:
    return unscale_points(boxes.reshape(-1, 2, 2), hw).reshape(-1, 4)


def get_annotations(fname, prefix: str | None = None) -> tuple[list[str], list[list]]:
    """`(image file names, [[boxes, labels], ...])` from a COCO-format JSON file: each image's boxes as
    `[top, left, bottom, right]` pixels and their category names, as fastai v1's `get_annotations`
    (`prefix` is put before each file name). Images without boxes come with empty lists. An
    annotation of an image the file does not list, of an unknown category, or a box of zero or
    negative size is a DataError naming the file."""
    fname = Path(fname)
    try:
        data = json.loads(fname.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise DataError(f"Cannot read the COCO annotations {fname}: {e}.") from e
    missing = [k for k in ("images", "annotations", "categories") if k not in data]
    if missing:
        raise DataError(f"{fname} is not COCO-format JSON: it lacks {missing}.")
    names = {c["id"]: c["name"] for c in data["categories"]}
    files = {img["id"]: img["file_name"] for img in data["images"]}
    boxes: dict = {i: [[], []] for i in files}
    unknown_img, unknown_cat, empty = set(), set(), []
    for a in data["annotations"]:
        if a["image_id"] not in files:
            unknown_img.add(a["image_id"])
            continue
        if a["category_id"] not in names:
            unknown_cat.add(a["category_id"])
            continue
        x, y, w, h = a["bbox"]
        if w <= 0 or h <= 0:
            empty.append(f"{files[a['image_id']]} {a['bbox']}")
            continue
        boxes[a["image_id"]][0].append([y, x, y + h, x + w])
        boxes[a["image_id"]][1].append(names[a["category_id"]])
    if unknown_img:
        raise DataError(f"{fname}: annotations name image id(s) {format_list(sorted(unknown_img))} that its 'images' "
                        "does not list.")
    if unknown_cat:
        raise DataError(f"{fname}: annotations name category id(s) {format_list(sorted(unknown_cat))} that its "
                        f"'categories' does not list (known: {format_list(sorted(names))}).")
    if empty:
        raise DataError(f"{fname}: {len(empty)} box(es) have zero or negative width or height: {format_list(empty)}.")
    prefix = prefix or ""
    return [prefix + files[i] for i in files], [boxes[i] for i in files]


class ObjectCategoryList(LabelItemList):
    """The boxes of image items: each raw label is `[boxes, names]` (`boxes` `(b, 4)` top-left-bottom-
    right pixels, `names` their classes; empty lists for an image without objects). `classes` are
    'background' then the names sorted (or `classes=` given, 'background' put first). `targets` is a
    list of `(boxes float (b, 4), labels int64 (b,))`. A box of zero or negative area, or a label of
    another shape, is a LabelError naming the item's file."""
    item_cls = ImageBBox

    @property
    def loss_func(self):
        return DetectionLoss()

    def process(self, train=None, names=None):
        files = [str(o) for o in names] if names is not None else [f"item {i}" for i in range(len(self.items))]
        parsed = [_parse(lbl, fn) for lbl, fn in zip(self.items, files)]
        if train is not None:
            self.classes = train.classes
        else:
            given = self.given_classes
            found = sorted_classes({n for _, ns in parsed for n in ns})
            self.classes = [BACKGROUND, *[c for c in (given if given is not None else found) if c != BACKGROUND]]
        index = {c: i for i, c in enumerate(self.classes)}
        unknown = [f"{fn} ({n})" for (_, ns), fn in zip(parsed, files) for n in ns if n not in index]
        if unknown:
            raise LabelError(f"{len(unknown)} box label(s) are not among the classes {format_list(self.classes)}: "
                             f"{format_list(unknown)}.")
        self.targets = [(b, torch.tensor([index[n] for n in ns], dtype=torch.long)) for b, ns in parsed]
        return self

    def get(self, i: int):
        boxes, labels = self.targets[i]
        return boxes, [self.classes[k] for k in labels.tolist()]

    def reconstruct(self, t, size=None) -> ImageBBox:
        boxes, labels = t
        keep = labels > 0
        return ImageBBox(boxes[keep], labels[keep], size or (2, 2), self.classes)

    def __getitem__(self, idx):
        if isinstance(idx, (int, np.integer)):
            return super().__getitem__(idx)
        picked = np.arange(len(self))[idx if isinstance(idx, slice) else np.asarray(idx)].tolist()
        new = self.new([self.items[i] for i in picked])
        new.classes = self.classes
        new.targets = None if self.targets is None else [self.targets[i] for i in picked]
        return new


def _parse(label, fn: str) -> tuple[torch.Tensor, list]:
    """`(boxes (b, 4), names)` of one raw label `[boxes, names]`, checked."""
    if not isinstance(label, (list, tuple)) or len(label) != 2:
        raise LabelError(f"{fn}: a boxes label is [boxes, labels] (as get_annotations gives), got {label!r:.80}.")
    boxes = np.asarray(label[0], dtype=np.float32).reshape(-1, 4) if len(label[0]) else np.zeros((0, 4), np.float32)
    names = list(label[1])
    if np.asarray(label[0], dtype=np.float32).size != 4 * len(names):
        raise LabelError(f"{fn}: {len(names)} labels for boxes of shape {np.asarray(label[0]).shape}; each box is "
                         "[top, left, bottom, right] with one label.")
    flat = (boxes[:, 2] <= boxes[:, 0]) | (boxes[:, 3] <= boxes[:, 1])
    if flat.any():
        raise LabelError(f"{fn}: {int(flat.sum())} box(es) have zero or negative area, e.g. "
                         f"{boxes[flat][0].tolist()} (boxes are [top, left, bottom, right] in pixels).")
    return torch.from_numpy(boxes), names


def bb_pad_collate(samples, pad_idx: int = 0):
    """Collate `(x, (boxes, labels), *rest)` items whose numbers of boxes differ: boxes padded with
    zeros to the batch's largest count, labels with `pad_idx` (the background), as fastai v1's."""
    n_max = max([len(s[1][1]) for s in samples] + [1])
    boxes = torch.zeros(len(samples), n_max, 4)
    labels = torch.full((len(samples), n_max), pad_idx, dtype=torch.long)
    for i, s in enumerate(samples):
        b, lbl = s[1]
        boxes[i, :len(lbl)], labels[i, :len(lbl)] = b, lbl
    x = torch.stack([s[0] for s in samples])
    rest = [torch.stack([torch.as_tensor(s[k]) for s in samples]) for k in range(2, len(samples[0]))]
    return (x, (boxes, labels), *rest)
