"""Layer 6, beside the batch transforms: coordinates as targets (points, boxes) move with their images.

Conventions (fastai v1's): a point is `(y, x)` in pixels, the image spanning `[0, h] x [0, w]` (the
centre of pixel `(r, c)` is `(r + 0.5, c + 0.5)`); scaled, it is in `[-1, 1]` over the image,
`grid_sample`'s coordinates with `align_corners=False`. A box is `(top, left, bottom, right)`.

Two moves keep them on their image:
- the workers' deterministic placement (`ImageDataset.place`: cover, squish or pad onto the canvas
  or to `size`) is a scale and an offset per axis: `placement` gives them from the same geometry
  (`sizing.cover_geometry`, `sizing.fit_size`) the image is resized with;
- the one batch resample (`transforms.BatchAugment`) samples the canvas at `m @ output`, `m` the
  composed (n, 3, 3) output->input map (perspective allowed): a point of the canvas therefore lands
  at `inverse(m) @ point` in the output. `PointTargets` and `BoxTargets` are the batch transform's
  coordinate hook: `move(y, m)`.

Points that leave the image are kept (their coordinates go past +-1) and flagged by
`outside(points)`: a model's target needs every point. Boxes are clipped to the image, and a box with
nothing left inside is dropped (its label becomes the padding class 0), as fastai v1 does.
"""
from __future__ import annotations

import torch

from .sizing import ResizeMethod, canvas_size, cover_geometry, fit_size

__all__ = ["BoxTargets", "CoordItem", "CoordTargets", "FlowField", "PointTargets", "apply_homography", "outside",
           "place_points", "placement", "scale_flow", "scale_points", "unplace_points", "unscale_points"]


class FlowField:
    """Coordinates on an image of `size` (h, w): `flow` a float `(n, 2)` tensor, as fastai v1's
    FlowField (`ImagePoints` reads it as `(y, x)` pairs unless told otherwise)."""

    def __init__(self, size, flow):
        h, w = (size, size) if isinstance(size, int) else tuple(size)[-2:]
        self.size = (int(h), int(w))
        self.flow = torch.as_tensor(flow, dtype=torch.float32).reshape(-1, 2).clone()

    def __len__(self):
        return len(self.flow)

    def __repr__(self):
        return f"FlowField(size={self.size}, {len(self)} points)"


class CoordItem:
    """What the items made of coordinates (`ImagePoints`, `ImageBBox`) share: their image's `size`
    (h, w), and `show`, which draws them (`draw`) over the image on `ax`, or alone on new axes that
    span the image in pixels."""
    size: tuple[int, int]
    noun = "coordinates"

    def show(self, ax=None, figsize=(3, 3), title: str | None = None, hide_axis: bool = True, **kwargs):
        if ax is None:
            import matplotlib.pyplot as plt
            _, ax = plt.subplots(figsize=figsize)
            ax.set_xlim(0, self.size[1])
            ax.set_ylim(self.size[0], 0)
        self.draw(ax, **kwargs)
        if hide_axis:
            ax.axis("off")
        if title is not None:
            ax.set_title(title)
        return ax

    def draw(self, ax, **kwargs) -> None:
        raise NotImplementedError

    def text(self) -> str:
        return ""

    def __str__(self):
        return f"{type(self).__name__} ({len(self)} {self.noun}) on {self.size[0]}x{self.size[1]}"

    __repr__ = __str__


def scale_points(points: torch.Tensor, hw) -> torch.Tensor:
    """`(..., 2)` `(y, x)` pixel coordinates on an image of `hw` -> `[-1, 1]`."""
    h, w = hw
    return points / points.new_tensor([h / 2, w / 2]) - 1


def unscale_points(points: torch.Tensor, hw) -> torch.Tensor:
    """`(..., 2)` `(y, x)` in `[-1, 1]` -> pixel coordinates on an image of `hw` (inverse of `scale_points`)."""
    h, w = hw
    return (points + 1) * points.new_tensor([h / 2, w / 2])


def scale_flow(flow: FlowField, to_unit: bool = True) -> FlowField:
    """A FlowField of `(y, x)` pairs scaled to `[-1, 1]` (`to_unit`) or back to pixels, in place."""
    flow.flow = scale_points(flow.flow, flow.size) if to_unit else unscale_points(flow.flow, flow.size)
    return flow


def outside(points: torch.Tensor) -> torch.Tensor:
    """Which scaled points `(..., 2)` lie outside the image (bool, `(...)`)."""
    return (points.abs() > 1).any(-1)


def apply_homography(matrices: torch.Tensor, xy: torch.Tensor) -> torch.Tensor:
    """`(n, k, 2)` `(x, y)` points through `(n, 3, 3)` maps (perspective division included)."""
    ones = torch.ones(*xy.shape[:-1], 1, dtype=xy.dtype, device=xy.device)
    out = torch.cat([xy, ones], -1) @ matrices.to(xy.device, xy.dtype).transpose(1, 2)
    return out[..., :2] / out[..., 2:]


def _moved(points_yx: torch.Tensor, matrices: torch.Tensor) -> torch.Tensor:
    """Scaled `(y, x)` points of the sampled canvas `(n, k, 2)` where the output shows them: through
    the inverse of the output->input maps `matrices`."""
    inverse = torch.linalg.inv(matrices.double())
    return apply_homography(inverse, points_yx.flip(-1).double()).flip(-1).to(points_yx.dtype)


class CoordTargets:
    """Targets made of coordinates, which the batch resample moves with their images (the hook of
    `BatchAugment`): `move(y, matrices)` gives `y` as the output shows it."""

    def move(self, y, matrices: torch.Tensor):
        raise NotImplementedError

    def __repr__(self):
        return f"{type(self).__name__}()"


class PointTargets(CoordTargets):
    """Points `(n, k, 2)`, scaled `(y, x)`: moved exactly; those that leave the image are kept.

    `flip_idx`: for ordered points with a left and a right (face landmarks), the permutation that
    renumbers them on a mirrored image: point `j` of a mirrored image is the moved point
    `flip_idx[j]` (the left eye's corner, mirrored, is where the right one's belongs). An image is
    mirrored when its map reverses orientation (a negative determinant: a flip, or a dihedral move
    with one)."""

    def __init__(self, flip_idx=None):
        self.flip_idx = None if flip_idx is None else torch.as_tensor(flip_idx, dtype=torch.long)

    def move(self, y, matrices):
        moved = _moved(y.float(), matrices)
        if self.flip_idx is None:
            return moved
        mirrored = torch.linalg.det(matrices.double()).to(moved.device) < 0
        return torch.where(mirrored[:, None, None], moved[:, self.flip_idx.to(moved.device)], moved)

    def __repr__(self):
        return "PointTargets()" if self.flip_idx is None else f"PointTargets(flip_idx={self.flip_idx.tolist()})"


class BoxTargets(CoordTargets):
    """Boxes `((n, b, 4) top-left-bottom-right scaled, (n, b) labels, 0 = padding)`: each box's four
    corners are moved and the box becomes their bounding box, clipped to the image; a box with no area
    left inside is dropped (zeros, label 0)."""

    def move(self, y, matrices):
        boxes, labels = y
        n, b = boxes.shape[:2]
        t, lft, bot, r = boxes.float().unbind(-1)
        corners = torch.stack([torch.stack(p, -1) for p in ((t, lft), (t, r), (bot, lft), (bot, r))], 2)
        moved = _moved(corners.view(n, b * 4, 2), matrices).view(n, b, 4, 2)
        lo, hi = moved.amin(2).clamp(-1, 1), moved.amax(2).clamp(-1, 1)
        keep = ((hi - lo) > 0).all(-1) & (labels > 0)
        out = torch.where(keep[..., None], torch.cat([lo, hi], -1), torch.zeros(()))
        return out, torch.where(keep, labels, torch.zeros((), dtype=labels.dtype))


def placement(full_hw, size, method: ResizeMethod, canvas: bool, padding_mode: str = "reflection"):
    """How `ImageDataset.place` moves an image of `full_hw`: `((ay, by), (ax, bx), placed_hw)`, pixel
    coordinates `p` of the image landing at `a * p + b` on the placed tensor of `placed_hw`.
    `size`: the dataset's (h, w) or None (images keep their size)."""
    h, w = full_hw
    if size is None:
        return (1.0, 0.0), (1.0, 0.0), (h, w)
    method = ResizeMethod(method)
    if method == ResizeMethod.CROP:
        target = canvas_size(size, method) if canvas else size
        top, left, sh, sw, kh, kw = cover_geometry((h, w), size, target)
        ay, ax = kh / sh, kw / sw
        return (ay, (target[0] - kh) // 2 - top * ay), (ax, (target[1] - kw) // 2 - left * ax), target
    if canvas or method == ResizeMethod.SQUISH:
        target = canvas_size(size, method)
        return (target[0] / h, 0.0), (target[1] / w, 0.0), target
    fh, fw = fit_size((h, w), size)
    return (fh / h, (size[0] - fh) // 2), (fw / w, (size[1] - fw) // 2), tuple(size)


def place_points(points: torch.Tensor, full_hw, size, method, canvas: bool) -> torch.Tensor:
    """`(..., 2)` `(y, x)` pixel points of an image of `full_hw` -> scaled on the placed tensor."""
    (ay, by), (ax, bx), placed = placement(full_hw, size, method, canvas)
    pixels = points * points.new_tensor([ay, ax]) + points.new_tensor([by, bx])
    return scale_points(pixels, placed)


def unplace_points(points: torch.Tensor, full_hw, size, method) -> torch.Tensor:
    """The inverse of `place_points` off the canvas: `(..., 2)` `(y, x)` scaled on the model's input
    (an image of `full_hw` placed at `size`) -> scaled on the image of `full_hw` itself, for
    predictions made on a resized input (points, boxes) given back on the image they were asked about."""
    (ay, by), (ax, bx), placed = placement(full_hw, size, method, canvas=False)
    pixels = (unscale_points(points, placed) - points.new_tensor([by, bx])) / points.new_tensor([ay, ax])
    return scale_points(pixels, full_hw)

