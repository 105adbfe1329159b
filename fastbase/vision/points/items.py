"""Layer 6: the items of the points task: `ImagePoints` (points on an image, which draw themselves) and
the labels of a points chain (`PointsLabelList`, checked and made a tensor by `PointsProcessor`).

Points are `(y, x)` pairs in pixels, as the course writes them (`label_from_func` returns a tensor of
them, shape `(2,)` for one point or `(k, 2)`); on a batch they are scaled to `[-1, 1]` over the image
(`fastbase.vision.coords`), `(bs, k, 2)`, the targets of a `2 * k`-output model under `MSELossFlat`.
"""
from __future__ import annotations

import numpy as np
import torch

from ...core import Path
from ...data import LabelError, format_list
from ...data.labels import LabelItemList
from ...losses import MSELossFlat
from ..coords import CoordItem, FlowField, outside, scale_points, unscale_points
from ..image import image_hw

__all__ = ["ImagePoints", "PointsLabelList", "PointsProcessor", "check_flip_idx"]

OUTSIDE = ("error", "keep")  # what labels with points outside their image do


class ImagePoints(CoordItem):
    """Points on an image of `flow.size` (h, w), as fastai v1's: `flow.flow` holds `(y, x)` pairs
    (`y_first=False`: `(x, y)`) in pixels, or already in `[-1, 1]` with `scale=False`.

    `data`: `(k, 2)` scaled `(y, x)` (what a model learns); `pixels`: the same in pixels; `flow`: a
    FlowField of the scaled points; `outside`: which points lie off the image (they are kept);
    `resize(size)`: the same points on an image of another size; `show(ax)` draws them."""
    noun = "points"

    def __init__(self, flow: FlowField, scale: bool = True, y_first: bool = True):
        pts = flow.flow if y_first else flow.flow.flip(1)
        self.size = tuple(flow.size)
        self._data = scale_points(pts, self.size) if scale else pts.clone()

    @property
    def data(self) -> torch.Tensor:
        return self._data

    @property
    def flow(self) -> FlowField:
        return FlowField(self.size, self._data)

    @property
    def pixels(self) -> torch.Tensor:
        return unscale_points(self._data, self.size)

    @property
    def outside(self) -> torch.Tensor:
        return outside(self._data)

    def __len__(self):
        return len(self._data)

    def clone(self) -> ImagePoints:
        return ImagePoints(self.flow, scale=False)

    def resize(self, size) -> ImagePoints:
        """The points on the image resized (squished) to `size` (an int, (h, w) or (c, h, w))."""
        hw = (size, size) if isinstance(size, int) else tuple(size)[-2:]
        return ImagePoints(FlowField(hw, self._data), scale=False)

    def draw(self, ax, color="red", size: float = 20, marker: str = "o", **kwargs) -> None:
        """Draw the points on `ax` (`show(ax)` calls it): pixel centres where matplotlib puts them."""
        px = self.pixels.detach().cpu() - 0.5  # matplotlib puts pixel (r, c)'s centre at (c, r)
        ax.scatter(px[:, 1].numpy(), px[:, 0].numpy(), s=size, c=color, marker=marker, **kwargs)


class PointsProcessor:
    """Raw point labels -> one `(n, k, 2)` float tensor of `(y, x)` pixels: every label `(2,)` or
    `(k, 2)` (or `2k` numbers), all with the same `k` (`n_points`, the training set's); a LabelError
    names the items that differ. With `files`, points off their image are an error naming the file
    (`outside='keep'` keeps them: they train as they are, flagged by `ImagePoints.outside`)."""

    def __init__(self, n_points: int | None = None, outside: str = "error"):
        if outside not in OUTSIDE:
            raise LabelError(f"outside must be one of {OUTSIDE}, got {outside!r}.")
        self.n_points, self.outside = n_points, outside

    def __call__(self, labels, files=None) -> torch.Tensor:
        names = [str(f) for f in files] if files is not None else [f"item {i}" for i in range(len(labels))]
        arrays = []
        for lbl, name in zip(labels, names):
            a = np.asarray(lbl.detach().cpu() if isinstance(lbl, torch.Tensor) else lbl, dtype=np.float32)
            if a.ndim > 2 or a.size % 2 or a.size == 0 or (a.ndim == 2 and a.shape[1] != 2):
                raise LabelError(f"{name}: a points label is (y, x) or k (y, x) pairs, shape (2,) or (k, 2); the label "
                                 f"function gave shape {a.shape}.")
            arrays.append(a.reshape(-1, 2))
        k = self.n_points if self.n_points is not None else (len(arrays[0]) if arrays else 0)
        wrong = [f"{name} ({len(a)})" for a, name in zip(arrays, names) if len(a) != k]
        if wrong:
            raise LabelError(f"Every item needs the same number of points ({k}, as the first training item has); "
                             f"{len(wrong)} differ: {format_list(wrong)}.")
        self.n_points = k
        points = torch.from_numpy(np.stack(arrays)) if arrays else torch.zeros(0, k, 2)
        if not torch.isfinite(points).all():
            bad = [names[i] for i in torch.nonzero(~torch.isfinite(points).view(len(points), -1).all(1)).view(-1)]
            raise LabelError(f"Points labels must be numbers; {format_list(bad)} hold NaN or infinity.")
        if files is not None and self.outside == "error":
            self._check_inside(points, files)
        return points

    @staticmethod
    def _check_inside(points: torch.Tensor, files) -> None:
        bad = []
        for pts, fn in zip(points, files):
            h, w = image_hw(fn)
            off = (pts[:, 0] < 0) | (pts[:, 0] > h) | (pts[:, 1] < 0) | (pts[:, 1] > w)
            if bool(off.any()):
                bad.append(f"{fn} ({int(off.sum())} of {len(pts)}, e.g. (y, x) = "
                           f"{tuple(round(v, 1) for v in pts[off][0].tolist())} on {w}x{h})")
        if bad:
            raise LabelError(f"{len(bad)} image(s) have points outside the image: {format_list(bad)}. Points are "
                             "(y, x) pairs in pixels of the image; check their order and the label function, or "
                             "pass outside='keep' to label_from_func to train on them as they are.")


def check_flip_idx(flip_idx, n_points: int) -> None:
    """`flip_idx` is None or a permutation of the `n_points` point numbers (a LabelError says otherwise)."""
    if flip_idx is not None and sorted(int(i) for i in flip_idx) != list(range(n_points)):
        raise LabelError(f"flip_idx renumbers the {n_points} points of a mirrored image: a permutation of "
                         f"0..{n_points - 1}, got {list(flip_idx)}.")


class PointsLabelList(LabelItemList):
    """The points of image items: raw labels (a tensor of `(y, x)` pairs per image, see the module
    docstring) become `targets`, float `(n, k, 2)` in pixels of each image. `c` is `2 * k`, the loss
    `MSELossFlat`. `ll[i]` is an `ImagePoints` on its image (its size read from the file header);
    `reconstruct(t, size)` makes one from scaled points (a batch row or a prediction)."""
    item_cls = ImagePoints

    def __init__(self, items, classes=None, outside: str = "error", size=None, flip_idx=None, **kwargs):
        super().__init__(items, None, outside=outside, flip_idx=flip_idx, **kwargs)
        self.size, self.files = size, None

    @property
    def flip_idx(self) -> list[int] | None:
        """The permutation that renumbers the points on a mirrored image (`label_from_func(f, flip_idx=)`)."""
        return self.kwargs.get("flip_idx")

    @property
    def loss_func(self):
        return MSELossFlat()

    @property
    def c(self) -> int | None:
        return None if self.targets is None else 2 * self.targets.shape[1]

    def process(self, train=None, names=None):
        n_points = None if train is None else train.targets.shape[1]
        self.files = None if names is None else [Path(o) for o in names]
        self.targets = PointsProcessor(n_points, self.kwargs.get("outside", "error"))(self.items, self.files)
        check_flip_idx(self.flip_idx, self.targets.shape[1])
        return self

    def get(self, i: int) -> ImagePoints:
        hw = image_hw(self.files[i]) if self.files is not None else self.size
        return ImagePoints(FlowField(hw, self.targets[i]), scale=True)

    def reconstruct(self, t: torch.Tensor, size=None) -> ImagePoints:
        hw = size if size is not None else self.size
        if hw is None:
            raise LabelError("reconstruct needs the size of the image the points are on: pass size=(h, w).")
        return ImagePoints(FlowField(hw, t.detach().float().cpu().reshape(-1, 2)), scale=False)

    def __getitem__(self, idx):
        if isinstance(idx, (int, np.integer)):
            return super().__getitem__(idx)
        new = super().__getitem__(idx)
        picked = np.arange(len(self))[idx if isinstance(idx, slice) else np.asarray(idx)].tolist()
        new.size, new.files = self.size, None if self.files is None else [self.files[i] for i in picked]
        return new
