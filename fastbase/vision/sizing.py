"""Layer 6, below the image modules: how an image reaches the target size (`ResizeMethod`), how a
border is filled (`PADDING_MODES`), the size of a training canvas. Image decoding (`image`) and the
batch transforms (`transforms`) both read these, so neither needs the other to know them."""
from __future__ import annotations

import math
from enum import IntEnum

import numpy as np

from ..data import DataError

__all__ = ["CANVAS_SCALE", "PADDING_MODES", "ResizeMethod", "canvas_size", "cover_geometry", "fit_size", "size_hw"]

PADDING_MODES = ("reflection", "zeros", "border")

# training canvases for CROP are this much larger than `size` (see ImageDataset): 4/3 holds the whole
# long side of a 4:3 photo, so a crop window can reach its edges as the validation centre crop cannot
CANVAS_SCALE = 4 / 3


class ResizeMethod(IntEnum):
    """How an image reaches the target size: CROP fills it and cuts the overflow (a random window when
    training, the centre otherwise), PAD fits the whole image and pads, SQUISH stretches to fit."""
    CROP = 1
    PAD = 2
    SQUISH = 3


def size_hw(size) -> tuple[int, int] | None:
    """`size` (int, (h, w) or None) as (h, w) or None."""
    if size is None:
        return None
    h, w = (size, size) if isinstance(size, (int, np.integer)) else tuple(size)[-2:]
    if int(h) < 1 or int(w) < 1:
        raise DataError(f"size must be a positive int or (height, width), got {size!r}.")
    return int(h), int(w)


def canvas_size(size_hw_, method: ResizeMethod) -> tuple[int, int]:
    """(h, w) of the training canvas for an output of `size_hw_`: larger by CANVAS_SCALE for CROP, so
    a crop window can move; the output size itself for PAD and SQUISH."""
    scale = CANVAS_SCALE if ResizeMethod(method) == ResizeMethod.CROP else 1.0
    return math.ceil(size_hw_[0] * scale), math.ceil(size_hw_[1] * scale)


def cover_geometry(hw, target_hw, canvas_hw) -> tuple[int, int, int, int, int, int]:
    """Where CROP's cover puts an image of `hw` on a canvas of `canvas_hw` for an output of `target_hw`
    (`image.cover_image` resizes by it, `coords` maps points by it): `(top, left, sh, sw, kh, kw)`, the
    part of the image kept (`sh x sw` source pixels from `(top, left)`), resized to `kh x kw` and
    centred on the canvas. The image is scaled so that it just covers `target_hw`."""
    (h, w), (th, tw), (ch, cw) = hw, target_hw, canvas_hw
    ratio = max(th / h, tw / w)
    rh, rw = max(th, round(h * ratio)), max(tw, round(w * ratio))
    kh, kw = min(rh, ch), min(rw, cw)
    sh, sw = min(h, round(kh / ratio)), min(w, round(kw / ratio))
    return (h - sh) // 2, (w - sw) // 2, sh, sw, kh, kw


def fit_size(hw, target_hw) -> tuple[int, int]:
    """(h, w) of an image of `hw` resized to fit inside `target_hw` (PAD), before it is padded evenly."""
    (h, w), (th, tw) = hw, target_hw
    ratio = min(th / h, tw / w)
    return min(th, max(1, round(h * ratio))), min(tw, max(1, round(w * ratio)))
