"""Layer 6, below the image modules: how an image reaches the target size (`ResizeMethod`), how a
border is filled (`PADDING_MODES`), the size of a training canvas. Image decoding (`image`) and the
batch transforms (`transforms`) both read these, so neither needs the other to know them."""
from __future__ import annotations

import math
from enum import IntEnum

import numpy as np

from ..data import DataError

__all__ = ["CANVAS_SCALE", "PADDING_MODES", "ResizeMethod", "canvas_size", "size_hw"]

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
