"""Layer 6: fastai v1's other geometric transforms, each one (n, 3, 3) output->input map per image, so
they compose into the batch's single resample like rotate and zoom: the perspective family (perspective
warp, skew, tilt; one homography of the image's corners each), squish, the zoom-and-squish of
`rand_resize_crop`, and pad.

Parameters are numbers or `(low, high)` ranges drawn per image (see `tfm_base.draw`). Corner moves are
in [-1, 1] image units: a corner moved by `magnitude` shows the picture's corner there (`invert`: the
output's corner shows what was there).
"""
from __future__ import annotations

import torch

from ..data import DataError
from .sizing import PADDING_MODES
from .tfm_base import CORNERS, GeometricTransform, affine, check_spec, corner_homographies, draw

__all__ = ["CornerPull", "Pad", "Perspective", "Skew", "Squish", "Tilt", "ZoomSquish"]


class Perspective(GeometricTransform):
    """fastai's `perspective_warp`: each of the 4 corners moves by its own (dx, dy), all 8 drawn from
    `magnitude` (a number: that move for all; a range: drawn per corner and axis)."""

    def __init__(self, magnitude=0.0, invert: bool = False, p: float = 1.0):
        super().__init__(p, magnitude=magnitude, invert=invert)
        self.magnitude, self.invert = check_spec("magnitude", magnitude, -1, 1, "perspective_warp"), bool(invert)

    def _matrices(self, n, out_hw, generator):
        moves = draw(self.magnitude, n * 8, generator).view(n, 4, 2)
        return corner_homographies(CORNERS + moves, self.invert)


class CornerPull(GeometricTransform):
    """Corners pulled outwards (away from the centre) along one axis by `magnitude`, chosen by a whole
    number `direction` in [0, `directions` - 1] (a number or a range drawn per image): one homography.
    Subclasses say which corners and axis a direction means (`_pulled`)."""
    directions = 1

    def __init__(self, direction=None, magnitude=0.0, invert: bool = False, p: float = 1.0):
        direction = (0, self.directions - 1) if direction is None else direction
        super().__init__(p, direction=direction, magnitude=magnitude, invert=invert)
        owner = type(self).__name__.lower()
        self.direction = check_spec("direction", direction, 0, self.directions - 1, owner)
        self.magnitude, self.invert = check_spec("magnitude", magnitude, -1, 1, owner), bool(invert)

    def _pulled(self, direction: torch.Tensor) -> tuple[list, torch.Tensor]:
        """([(n,) corner indexes, ...], (n,) axis: 0 for x, 1 for y) of each image's `direction`."""
        raise NotImplementedError

    def _matrices(self, n, out_hw, generator):
        direction = draw(self.direction, n, generator, integer=True).long()
        magnitude = draw(self.magnitude, n, generator)
        moved, rows = CORNERS.repeat(n, 1, 1), torch.arange(n)
        corners, axis = self._pulled(direction)
        for corner in corners:
            moved[rows, corner, axis] += magnitude * CORNERS[corner, axis]  # outwards: away from the centre
        return corner_homographies(moved, self.invert)


class Skew(CornerPull):
    """fastai's `skew`: one corner pulled outwards along one axis by `magnitude`. `direction` 0-7:
    corner `direction // 2` (top-left, bottom-left, top-right, bottom-right), along x for even
    directions, y for odd ones."""
    directions = 8

    def _pulled(self, direction):
        return [direction // 2], direction % 2


# tilt's directions: the two corners of one side, and the axis along which they spread apart
_TILT_SIDES = torch.tensor([[2, 3], [0, 1], [1, 3], [0, 2]])  # right, left, bottom, top side
_TILT_AXIS = torch.tensor([1, 1, 0, 0])  # a left/right side grows taller (y), a top/bottom one wider (x)


class Tilt(CornerPull):
    """fastai's `tilt`: one side of the picture grows by `magnitude` at both of its ends, as if the
    picture leaned away. `direction` 0-3: the right, left, bottom or top side."""
    directions = 4

    def _pulled(self, direction):
        return [_TILT_SIDES[direction, 0], _TILT_SIDES[direction, 1]], _TILT_AXIS[direction]


class Squish(GeometricTransform):
    """fastai's `squish`: `scale` below 1 stretches the picture sideways (the window keeps `scale` of
    its width, at `col_pct` from left to right), above 1 upwards (`1/scale` of its height, at
    `row_pct`); numbers or ranges."""

    def __init__(self, scale=1.0, row_pct=0.5, col_pct=0.5, p: float = 1.0):
        super().__init__(p, scale=scale, row_pct=row_pct, col_pct=col_pct)
        self.scale = check_spec("scale", scale, 1e-3, owner="squish")
        self.row_pct, self.col_pct = check_spec("row_pct", row_pct, 0, 1), check_spec("col_pct", col_pct, 0, 1)

    def _matrices(self, n, out_hw, generator):
        scale = draw(self.scale, n, generator)
        rows, cols, zero = draw(self.row_pct, n, generator), draw(self.col_pct, n, generator), torch.zeros(n)
        wide = scale <= 1
        fw, fh = torch.where(wide, scale, 1.0), torch.where(wide, 1.0, 1 / scale)
        return affine(fw, zero, (1 - fw) * (2 * cols - 1), zero, fh, (1 - fh) * (2 * rows - 1))


class ZoomSquish(GeometricTransform):
    """The window of fastai's `rand_resize_crop`: a part of the picture covering `1/scale` of its area,
    of aspect `squish` (width/height; turned the other way with probability `invert`), at `row_pct`,
    `col_pct`. `tries` draws per image; the first that fits inside the picture is used (none: the
    whole picture)."""

    def __init__(self, scale=(1.0, 2.0), squish=(0.75, 1.33), invert: float = 0.5, row_pct=(0, 1), col_pct=(0, 1),
                 tries: int = 8, p: float = 1.0):
        super().__init__(p, scale=scale, squish=squish, invert=invert, row_pct=row_pct, col_pct=col_pct)
        self.scale = check_spec("scale", scale, 1e-3, owner="rand_resize_crop")
        self.squish = check_spec("squish", squish, 1e-3, owner="rand_resize_crop")
        self.invert, self.tries = check_spec("invert", invert, 0, 1, "rand_resize_crop"), int(tries)
        self.row_pct, self.col_pct = check_spec("row_pct", row_pct, 0, 1), check_spec("col_pct", col_pct, 0, 1)

    def _matrices(self, n, out_hw, generator):
        k = self.tries
        side = draw(self.scale, n * k, generator).view(n, k).rsqrt()  # the window's side for a square
        aspect = draw(self.squish, n * k, generator).view(n, k).sqrt()
        turn = torch.rand(n, k, generator=generator) < self.invert
        aspect = torch.where(turn, 1 / aspect, aspect)
        fw, fh = side * aspect, side / aspect
        fits = (fw <= 1) & (fh <= 1)
        first = torch.where(fits.any(1), fits.float().argmax(1), k)  # k: none fits
        fw, fh = (torch.cat([f, torch.ones(n, 1)], 1).gather(1, first.view(n, 1)).view(n) for f in (fw, fh))
        rows, cols, zero = draw(self.row_pct, n, generator), draw(self.col_pct, n, generator), torch.zeros(n)
        return affine(fw, zero, (1 - fw) * (2 * cols - 1), zero, fh, (1 - fh) * (2 * rows - 1))


class Pad(GeometricTransform):
    """fastai's `pad`: `padding` pixels (of the output) added on every side, filled with `mode`
    ('zeros', 'border' or 'reflection', unless `transform(padding_mode=)` names one), the padded picture
    then fitted back to the output size."""

    def __init__(self, padding: int = 0, mode: str | None = None, p: float = 1.0):
        if int(padding) < 0:
            raise DataError(f"pad needs padding >= 0 pixels, got {padding}.")
        if mode is not None and mode not in PADDING_MODES:
            raise DataError(f"pad's mode must be one of {PADDING_MODES}, got {mode!r}.")
        super().__init__(p, padding=int(padding), mode=mode)
        self.padding, self.padding_mode = int(padding), mode

    def _matrices(self, n, out_hw, generator):
        (h, w), zero = out_hw, torch.zeros(n)
        return affine(torch.full((n,), 1 + 2 * self.padding / w), zero, zero,
                      zero, torch.full((n,), 1 + 2 * self.padding / h), zero)
