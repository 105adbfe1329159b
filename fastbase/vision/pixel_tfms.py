"""Layer 6: fastai v1's transforms that are not one matrix per image: `jitter` moves each sampled pixel
on its own (a change of the resample's grid, so still one resample), `cutout` and `rgb_randomize` change
pixel values of the float batch after lighting. Masks (`tfm_y`) follow jitter's grid, and are left
alone by the pixel changes (a hole in the picture does not remove the object from the mask).
"""
from __future__ import annotations

import torch

from ..data import DataError
from .tfm_base import GridTransform, PixelTransform, check_spec, draw

__all__ = ["Cutout", "Jitter", "RgbRandomize"]


class Jitter(GridTransform):
    """fastai's `jitter`: each output pixel samples the picture up to `magnitude` away (in [-1, 1]
    image units, independently in x and y); `magnitude` a number or a range drawn per image."""

    def __init__(self, magnitude=0.0, p: float = 1.0):
        super().__init__(p, magnitude=magnitude)
        self.magnitude = check_spec("magnitude", magnitude, -1, 1, "jitter")

    def _move_grid(self, grid, keep, generator):
        n = grid.shape[0]
        size = draw(self.magnitude, n, generator) * keep
        noise = torch.rand(grid.shape, generator=generator).sub_(0.5).mul_(2 * size.view(n, 1, 1, 1))
        grid.add_(noise.to(grid.device))


class Cutout(PixelTransform):
    """fastai's `cutout`: `n_holes` black squares of side `length` pixels, centred on random pixels and
    cut off at the picture's edges; both whole numbers or `(low, high)` ranges drawn per image."""

    def __init__(self, n_holes=1, length=40, p: float = 1.0):
        super().__init__(p, n_holes=n_holes, length=length)
        self.n_holes = check_spec("n_holes", n_holes, 0, owner="cutout")
        self.length = check_spec("length", length, 0, owner="cutout")

    def _apply(self, x, keep, generator):
        n, _, h, w = x.shape
        holes = draw(self.n_holes, n, generator, integer=True).long() * keep
        most = int(holes.max()) if n else 0
        if most == 0:
            return x
        length = draw(self.length, n * most, generator, integer=True).view(n, most)
        cy = (torch.rand(n, most, generator=generator) * h).floor()
        cx = (torch.rand(n, most, generator=generator) * w).floor()
        top, left = (cy - length // 2).clamp(0, h), (cx - length // 2).clamp(0, w)
        bottom, right = (cy + (length + 1) // 2).clamp(0, h), (cx + (length + 1) // 2).clamp(0, w)
        used = torch.arange(most).view(1, most) < holes.view(n, 1)
        rows, cols = torch.arange(h).view(1, 1, h, 1), torch.arange(w).view(1, 1, 1, w)
        inside = ((rows >= top[..., None, None]) & (rows < bottom[..., None, None])
                  & (cols >= left[..., None, None]) & (cols < right[..., None, None]) & used[..., None, None])
        return x.masked_fill_(inside.any(1, keepdim=True).to(x.device), 0.0)


class RgbRandomize(PixelTransform):
    """fastai's `rgb_randomize`: one channel (`channel`, or one drawn per image) replaced by noise
    uniform in [0, a], `a` drawn per image in [0, thresh]."""

    def __init__(self, channel: int | None = None, thresh: float = 0.3, p: float = 1.0):
        super().__init__(p, channel=channel, thresh=thresh)
        self.channel, self.thresh = channel, check_spec("thresh", thresh, 0, 1, "rgb_randomize")

    def _apply(self, x, keep, generator):
        n, c, h, w = x.shape
        if self.channel is not None and not -c <= self.channel < c:
            raise DataError(f"rgb_randomize: channel={self.channel} does not exist in images of {c} channels.")
        channel = (torch.full((n,), self.channel % c) if self.channel is not None
                   else torch.randint(0, c, (n,), generator=generator))
        amount = torch.rand(n, generator=generator) * self.thresh
        noise = torch.rand(n, h, w, generator=generator) * amount.view(n, 1, 1)
        rows = torch.arange(n)[keep]
        x[rows.to(x.device), channel[keep].to(x.device)] = noise[keep].to(x.device, x.dtype)
        return x
