"""Layer 6: the transform objects of `get_transforms` and of fastai v1's transform functions that compose
into the batch's one resample: the crop window (`Crop`), flips, rotation, zoom, symmetric warp, and the
lighting pair (brightness, contrast). `transforms.BatchAugment` applies them; `tfm_funcs` builds them
under fastai's names.
"""
from __future__ import annotations

import math

import torch

from ..data import DataError
from .tfm_base import (
    GeometricTransform,
    LightingTransform,
    Transform,
    affine,
    check_spec,
    corner_homographies,
    draw,
    is_range,
)

__all__ = ["Brightness", "CenterCrop", "Contrast", "Crop", "Dihedral", "Flip", "RandomCrop", "Rotate", "Warp", "Zoom"]


class Crop(Transform):
    """Where the CROP window sits on the image: `row_pct`/`col_pct` from 0 (top/left) to 1 (bottom/right),
    each a number or a `(low, high)` range drawn per image; images not chosen (`p`) get the centre. `size`
    is the output size when `transform(size=)` gives none; `padding_mode` the fill outside the image when
    `transform(padding_mode=)` names none. The window itself is part of the batch's one resample."""

    def __init__(self, size=None, row_pct=0.5, col_pct=0.5, padding_mode: str | None = None, p: float = 1.0):
        settings = {"size": size, "row_pct": row_pct, "col_pct": col_pct, "padding_mode": padding_mode}
        given = {k: v for k, v in settings.items() if v is not None and not (k.endswith("pct") and v == 0.5)}
        super().__init__(p, **given)
        self.size, self.padding_mode = size, padding_mode
        self.row_pct, self.col_pct = (check_spec(k, v, 0, 1, "crop") for k, v in (("row_pct", row_pct),
                                                                                  ("col_pct", col_pct)))

    @property
    def centred(self) -> bool:
        """True when every image gets the centre window (as validation images do)."""
        return self.p == 0 or (self.row_pct == 0.5 and self.col_pct == 0.5)

    def positions(self, n: int, generator=None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(rows, cols, drawn): (n,) window positions in [0, 1], and (n,) bool, True where the position
        was drawn from a range (such windows land on whole pixels, see `crop_matrices`)."""
        rows, cols = draw(self.row_pct, n, generator), draw(self.col_pct, n, generator)
        keep = self._chosen(n, generator) if self.p < 1 else torch.ones(n, dtype=torch.bool)
        drawn = keep & (is_range(self.row_pct) or is_range(self.col_pct))
        return torch.where(keep, rows, 0.5), torch.where(keep, cols, 0.5), drawn


class RandomCrop(Crop):
    """The CROP window lands anywhere on the image (training); its position is part of the resample."""

    def __init__(self, p: float = 1.0):
        super().__init__(row_pct=(0, 1), col_pct=(0, 1), p=p)
        self.params = {}


class CenterCrop(Crop):
    """The CROP window sits in the centre (validation, the Fix loader, predictions)."""

    def __init__(self, p: float = 1.0):
        super().__init__(p=p)


class Flip(GeometricTransform):
    """Mirror left-right."""

    def __init__(self, p: float = 0.5):
        super().__init__(p)

    def _matrices(self, n, out_hw, generator):
        return torch.diag(torch.tensor([-1.0, 1.0, 1.0])).expand(n, 3, 3)


class Dihedral(GeometricTransform):
    """One of the 8 flips and quarter turns of a square (for satellite or microscope images), as fastai's
    `dihedral(k)` numbers them: bit 1 flips top-bottom, bit 2 left-right, bit 4 then transposes. `k` None:
    uniformly one of the 8; a number or `(low, high)`: that move or a range of them."""

    def __init__(self, p: float = 1.0, k=None):
        super().__init__(p, **({} if k is None else {"k": k}))
        self.k = (0, 7) if k is None else check_spec("k", k, 0, 7, "dihedral")

    def _matrices(self, n, out_hw, generator):
        k = draw(self.k, n, generator, integer=True).long()
        sy, sx = 1.0 - 2 * (k & 1).float(), 1.0 - 2 * ((k >> 1) & 1).float()
        swap, zero = (k >> 2 & 1).bool(), torch.zeros(n)
        plain = affine(sx, zero, zero, zero, sy, zero)
        turned = affine(zero, sx, zero, sy, zero, zero)
        return torch.where(swap.view(n, 1, 1), turned, plain)


class Rotate(GeometricTransform):
    """Rotate about the centre, counter-clockwise by `degrees` (a number or a `(low, high)` range; default
    drawn uniformly in [-max_deg, max_deg])."""

    def __init__(self, max_deg: float = 10.0, p: float = 0.75, degrees=None):
        super().__init__(p, **({"max_deg": max_deg} if degrees is None else {"degrees": degrees}))
        self.degrees = (-max_deg, max_deg) if degrees is None else check_spec("degrees", degrees, owner="rotate")

    def _matrices(self, n, out_hw, generator):
        angle = draw(self.degrees, n, generator) * (math.pi / 180)
        cos, sin, zero = angle.cos(), angle.sin(), torch.zeros(n)
        h, w = out_hw  # rotate in pixel units, so a non-square output is not sheared
        return affine(cos, -sin * h / w, zero, sin * w / h, cos, zero)


class Zoom(GeometricTransform):
    """Zoom in by a factor drawn uniformly in [min_zoom, max_zoom], towards a random point. fastai's
    `zoom(scale, row_pct, col_pct)`: `scale` (number or range; below 1 zooms out) and the point zoomed
    towards, 0 (top/left) to 1 (bottom/right), each a number or a range."""

    def __init__(self, max_zoom: float = 1.1, p: float = 0.75, min_zoom: float = 1.0, scale=None,
                 row_pct=(0, 1), col_pct=(0, 1)):
        if scale is None:
            if not 1 <= min_zoom <= max_zoom:
                raise DataError(f"Zoom needs 1 <= min_zoom <= max_zoom (1 = no zoom), got {min_zoom} and {max_zoom}.")
            super().__init__(p, max_zoom=max_zoom, min_zoom=min_zoom)
            scale = (min_zoom, max_zoom)
        else:
            super().__init__(p, scale=scale, row_pct=row_pct, col_pct=col_pct)
        self.scale = check_spec("scale", scale, 1e-3, owner="zoom")
        self.row_pct, self.col_pct = check_spec("row_pct", row_pct, 0, 1), check_spec("col_pct", col_pct, 0, 1)

    def _matrices(self, n, out_hw, generator):
        inv = 1 / draw(self.scale, n, generator)
        col, row, zero = draw(self.col_pct, n, generator), draw(self.row_pct, n, generator), torch.zeros(n)
        return affine(inv, zero, (1 - inv) * (2 * col - 1), zero, inv, (1 - inv) * (2 * row - 1))


class Warp(GeometricTransform):
    """fastai's symmetric perspective warp: the 4 corners move by amounts drawn in [-magnitude, magnitude]
    (or in a `(low, high)` range), the opposite sides of each pair symmetrically; one homography."""

    def __init__(self, magnitude=0.2, p: float = 0.75, invert: bool = False):
        super().__init__(p, magnitude=magnitude, **({"invert": True} if invert else {}))
        spec = check_spec("magnitude", magnitude, owner="warp")
        self.magnitude, self.invert = (spec if is_range(spec) else (-spec, spec)), bool(invert)

    def _matrices(self, n, out_hw, generator):
        m = draw(self.magnitude, n * 4, generator).view(n, 4)
        moved = torch.stack([torch.stack([-1 - m[:, 3], -1 - m[:, 1]], 1),
                             torch.stack([-1 - m[:, 2], 1 + m[:, 1]], 1),
                             torch.stack([1 + m[:, 3], -1 - m[:, 0]], 1),
                             torch.stack([1 + m[:, 2], 1 + m[:, 0]], 1)], 1)
        return corner_homographies(moved, self.invert)


def _check_lighting(max_lighting):
    if not 0 <= max_lighting < 1:
        raise DataError(f"max_lighting must be in [0, 1), got {max_lighting}.")


class Brightness(LightingTransform):
    """fastai's brightness: mid-grey moves to `change`, drawn in 0.5 +- max_lighting/2 (or given: a
    number or a range in (0, 1)), through a shift of logit(change) in logit space (so 0.5 -> change,
    and nothing leaves [0, 1] or clips)."""

    def __init__(self, max_lighting: float = 0.2, p: float = 0.75, change=None):
        if change is None:
            _check_lighting(max_lighting)
            super().__init__(p, max_lighting=max_lighting)
            change = (0.5 - max_lighting / 2, 0.5 + max_lighting / 2)
        else:
            super().__init__(p, change=change)
        self.change = check_spec("change", change, 1e-3, 1 - 1e-3, "brightness")

    def _scale_shift(self, n, generator):
        return torch.ones(n), torch.logit(draw(self.change, n, generator))


class Contrast(LightingTransform):
    """fastai's contrast: logit-space intensities (0 at mid-grey) scaled by a factor drawn
    log-uniformly in [1 - max_lighting, 1 / (1 - max_lighting)] (or given: `scale`, a number or a
    range, 1 = no change); highlights and shadows are compressed or spread, never clipped."""

    def __init__(self, max_lighting: float = 0.2, p: float = 0.75, scale=None):
        if scale is None:
            _check_lighting(max_lighting)
            super().__init__(p, max_lighting=max_lighting)
            scale = (1 - max_lighting, 1 / (1 - max_lighting))
        else:
            super().__init__(p, scale=scale)
        self.scale = check_spec("scale", scale, 1e-3, owner="contrast")

    def _scale_shift(self, n, generator):
        return draw(self.scale, n, generator, log=True), torch.zeros(n)
