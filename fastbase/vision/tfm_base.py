"""Layer 6: the kinds of image transform the batch augmentation knows, and the drawing of their parameters.

Four kinds, by where they act in `transforms.BatchAugment`'s single pass:
- `GeometricTransform`: a (n, 3, 3) output->input map per image (affine or perspective), composed into
  the one resample of the batch; masks (and later points) follow the same map.
- `GridTransform`: a change of the resample's sampling grid itself (per-pixel moves such as jitter),
  made after the matrices are applied and before the one `grid_sample`.
- `LightingTransform`: a per-image scale and shift of intensities in logit space.
- `PixelTransform`: a change of the float batch in [0, 1] after lighting (cutout, channel noise); masks
  are left alone.

A parameter is a number (used as is) or a `(low, high)` range drawn per image, as fastai v1's transform
functions take them: `rotate(degrees=(-30, 30))` draws, `rotate(degrees=30)` does not.
Coordinates are `grid_sample`'s: x right, y down, both in [-1, 1] over the image.
"""
from __future__ import annotations

import math

import torch

from ..data import DataError

__all__ = ["CORNERS", "GeometricTransform", "GridTransform", "LightingTransform", "PixelTransform", "Transform",
           "affine", "draw", "homographies", "is_range", "uniform"]

# the image's corners as `homographies` takes them: (x, y) of top-left, bottom-left, top-right, bottom-right
CORNERS = torch.tensor([[-1.0, -1.0], [-1.0, 1.0], [1.0, -1.0], [1.0, 1.0]])


class Transform:
    """A random transform that each image gets with probability `p`."""

    def __init__(self, p: float = 1.0, **params):
        if not 0 <= p <= 1:
            raise DataError(f"{type(self).__name__}: p is a probability in [0, 1], got {p}.")
        self.p, self.params = float(p), params

    def _chosen(self, n: int, generator) -> torch.Tensor:
        """(n,) bool: which images get the transform."""
        return torch.rand(n, generator=generator) < self.p

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in {**self.params, "p": self.p}.items())
        return f"{type(self).__name__}({args})"


class GeometricTransform(Transform):
    """A transform of coordinates: `matrices(n, out_hw, generator)` gives `(n, 3, 3)` output->input maps."""

    def matrices(self, n: int, out_hw, generator=None) -> torch.Tensor:
        m = self._matrices(n, out_hw, generator)
        keep = self._chosen(n, generator).view(n, 1, 1)
        return torch.where(keep, m, torch.eye(3).expand(n, 3, 3))

    def _matrices(self, n, out_hw, generator) -> torch.Tensor:
        raise NotImplementedError


class GridTransform(Transform):
    """A per-pixel move of the sampling grid: `move_grid(grid, generator)` changes the (n, H, W, 2) grid
    in place (images not chosen keep theirs). It cannot be one matrix, so coordinates cannot follow it."""

    def move_grid(self, grid: torch.Tensor, generator=None) -> None:
        keep = self._chosen(grid.shape[0], generator)
        self._move_grid(grid, keep, generator)

    def _move_grid(self, grid, keep, generator) -> None:
        raise NotImplementedError


class LightingTransform(Transform):
    """A change of intensities in logit space, as fastai does it: `x -> sigmoid(scale * logit(x) + shift)`,
    which keeps every value inside (0, 1) without clipping; `scale_shift(n, generator)` gives both, (n,)."""

    def scale_shift(self, n: int, generator=None) -> tuple[torch.Tensor, torch.Tensor]:
        scale, shift = self._scale_shift(n, generator)
        keep = self._chosen(n, generator)
        return torch.where(keep, scale, 1.0), torch.where(keep, shift, 0.0)

    def _scale_shift(self, n, generator):
        raise NotImplementedError


class PixelTransform(Transform):
    """A change of the float batch (n, C, H, W) in [0, 1], after the resample and lighting:
    `apply(x, generator)` returns the batch (in place allowed); images not chosen are unchanged."""

    def apply(self, x: torch.Tensor, generator=None) -> torch.Tensor:
        keep = self._chosen(x.shape[0], generator)
        return self._apply(x, keep, generator)

    def _apply(self, x, keep, generator) -> torch.Tensor:
        raise NotImplementedError


def is_range(spec) -> bool:
    """True for a `(low, high)` parameter range, False for a plain number."""
    return isinstance(spec, (tuple, list))


def check_spec(name: str, spec, low: float = -math.inf, high: float = math.inf, owner: str = "transform"):
    """`spec` (a number or a (low, high) pair) with every value in [low, high], else a DataError naming it."""
    values = list(spec) if is_range(spec) else [spec]
    if is_range(spec) and len(values) != 2:
        raise DataError(f"{owner}: {name} is a number or a (low, high) range, got {spec!r}.")
    for v in values:
        if not isinstance(v, (int, float)) or not low <= v <= high:
            raise DataError(f"{owner}: {name} must be in [{low}, {high}], got {spec!r}.")
    return tuple(values) if is_range(spec) else spec


def draw(spec, n: int, generator=None, log: bool = False, integer: bool = False) -> torch.Tensor:
    """(n,) float values of a parameter: a number repeated, or per image from a `(low, high)` range,
    uniformly (`log`: uniformly in log space; `integer`: whole numbers from low to high, both included).
    A plain number draws nothing, so fixed parameters leave the random stream alone."""
    if not is_range(spec):
        return torch.full((n,), float(spec))
    low, high = spec
    if integer:
        return torch.randint(int(low), int(high) + 1, (n,), generator=generator).float()
    if log:
        return uniform(n, math.log(low), math.log(high), generator).exp()
    return uniform(n, low, high, generator)


def uniform(n, low, high, generator):
    return low + (high - low) * torch.rand(n, generator=generator)


def affine(a, b, c, d, e, f) -> torch.Tensor:
    """(n, 3, 3) from the rows [a b c], [d e f], [0 0 1] of (n,) tensors."""
    zero, one = torch.zeros_like(a), torch.ones_like(a)
    return torch.stack([a, b, c, d, e, f, zero, zero, one], dim=1).view(-1, 3, 3)


def homographies(src: torch.Tensor, dst: torch.Tensor) -> torch.Tensor:
    """(n, 3, 3) perspective maps taking the 4 points `src[i]` (n, 4, 2) to `dst[i]`."""
    n = src.shape[0]
    x, y, u, v = src[..., 0], src[..., 1], dst[..., 0], dst[..., 1]
    one, zero = torch.ones_like(x), torch.zeros_like(x)
    rows_u = torch.stack([x, y, one, zero, zero, zero, -u * x, -u * y], -1)
    rows_v = torch.stack([zero, zero, zero, x, y, one, -v * x, -v * y], -1)
    a = torch.cat([rows_u, rows_v], 1)  # (n, 8, 8)
    b = torch.cat([u, v], 1).unsqueeze(-1)
    coeffs = torch.linalg.solve(a, b).squeeze(-1)
    return torch.cat([coeffs, torch.ones(n, 1)], 1).view(n, 3, 3)


def corner_homographies(moved: torch.Tensor, invert=False) -> torch.Tensor:
    """(n, 3, 3) output->input maps for corners moved to `moved` (n, 4, 2): the picture's corners appear
    at `moved` in the output (`invert`: the output's corners show what is at `moved`). `invert` is a bool
    or an (n,) bool tensor."""
    n = moved.shape[0]
    out_to_in = homographies(moved, CORNERS.expand(n, 4, 2))
    invert = torch.as_tensor(invert, dtype=torch.bool).expand(n)
    if not bool(invert.any()):
        return out_to_in
    return torch.where(invert.view(n, 1, 1), homographies(CORNERS.expand(n, 4, 2), moved), out_to_in)
