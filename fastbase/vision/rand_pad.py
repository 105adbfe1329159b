"""Layer 6: fastai v1's `rand_pad(padding, size)` (pad, then crop back at a random place): a random
shift of up to `padding` whole pixels each way, done in the batch augmentation's single resample."""
from __future__ import annotations

import torch

from ..data import DataError
from .sizing import PADDING_MODES
from .transforms import GeometricTransform

__all__ = ["RandPad", "rand_pad"]


class RandPad(GeometricTransform):
    """Shift each image by a whole number of pixels drawn in [-padding, padding], up/down and
    left/right; the uncovered border is filled with `padding_mode` (default: `transform(padding_mode=)`)."""

    def __init__(self, padding: int = 4, p: float = 1.0, padding_mode: str | None = None):
        if int(padding) < 0:
            raise DataError(f"RandPad needs padding >= 0 pixels, got {padding}.")
        if padding_mode is not None and padding_mode not in PADDING_MODES:
            raise DataError(f"RandPad's padding_mode must be one of {PADDING_MODES}, got {padding_mode!r}.")
        super().__init__(p, padding=int(padding), padding_mode=padding_mode)
        self.padding_mode = padding_mode  # the fill the batch resample uses unless transform(padding_mode=) says

    def _matrices(self, n, out_hw, generator):
        pad, (h, w) = self.params["padding"], out_hw
        dy = torch.randint(-pad, pad + 1, (n,), generator=generator).float() * (2 / h)
        dx = torch.randint(-pad, pad + 1, (n,), generator=generator).float() * (2 / w)
        m = torch.eye(3).repeat(n, 1, 1)  # output -> input coordinates in [-1, 1]: a translation
        m[:, 0, 2], m[:, 1, 2] = dx, dy
        return m


def rand_pad(padding: int, size=None, mode: str | None = None) -> list:
    """fastai v1's `rand_pad`, for `tfms = ([*rand_pad(3, 28)], [])`: a list with one `RandPad`.
    `size` is the output size (give it to `.transform(size=)`); `mode` the fill of the uncovered
    border ('zeros', 'border' or 'reflection'), unless `transform(padding_mode=)` names another."""
    return [RandPad(padding, padding_mode=mode)]
