"""Layer 6: fastai v1's `rand_pad(padding, size)` (pad, then crop back at a random place): a random
shift of up to `padding` whole pixels each way, done in the batch augmentation's single resample."""
from __future__ import annotations

import torch

from ..data import DataError
from .transforms import GeometricTransform

__all__ = ["RandPad", "rand_pad"]


class RandPad(GeometricTransform):
    """Shift each image by a whole number of pixels drawn in [-padding, padding], up/down and
    left/right; the uncovered border is filled as `transform(padding_mode=)` says."""

    def __init__(self, padding: int = 4, p: float = 1.0):
        if int(padding) < 0:
            raise DataError(f"RandPad needs padding >= 0 pixels, got {padding}.")
        super().__init__(p, padding=int(padding))

    def _matrices(self, n, out_hw, generator):
        pad, (h, w) = self.params["padding"], out_hw
        dy = torch.randint(-pad, pad + 1, (n,), generator=generator).float() * (2 / h)
        dx = torch.randint(-pad, pad + 1, (n,), generator=generator).float() * (2 / w)
        m = torch.eye(3).repeat(n, 1, 1)  # output -> input coordinates in [-1, 1]: a translation
        m[:, 0, 2], m[:, 1, 2] = dx, dy
        return m


def rand_pad(padding: int, size=None, mode: str | None = None) -> list:
    """fastai v1's `rand_pad`, for `tfms = ([*rand_pad(3, 28)], [])`: a list with one `RandPad`.
    `size` is the output size (give it to `.transform(size=)`); the fill is `transform`'s
    `padding_mode` ('zeros' for fastai's `mode='zeros'`)."""
    return [RandPad(padding)]
