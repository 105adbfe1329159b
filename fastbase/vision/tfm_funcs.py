"""Layer 6: fastai v1's transform functions under their names and arguments, for `get_transforms(xtra_tfms=
[...])` and `ds_tfms` lists: `rotate(degrees=(-30, 30), p=0.75)` and the rest. Each returns a transform
object (or, as in fastai, a list for the two-part ones: `rand_resize_crop`, `zoom_crop`).

A number is used as is, a `(low, high)` tuple is drawn per image; `p` is the probability that an image
gets the transform (1 by default, as in fastai). Geometric ones compose into the batch's single
resample, `cutout` and `rgb_randomize` change pixels after it, brightness and contrast are lighting.
"""
from __future__ import annotations

from .augments import Brightness, Contrast, Crop, Dihedral, Flip, Rotate, Warp, Zoom
from .pixel_tfms import Cutout, Jitter, RgbRandomize
from .tfm_base import is_range
from .warps import Pad, Perspective, Skew, Squish, Tilt, ZoomSquish

__all__ = ["brightness", "contrast", "crop", "crop_pad", "cutout", "dihedral", "flip_lr", "jitter", "pad",
           "perspective_warp", "rand_crop", "rand_resize_crop", "rand_zoom", "rgb_randomize", "rotate", "skew",
           "squish", "symmetric_warp", "tilt", "zoom", "zoom_crop"]


def rotate(degrees=0.0, p: float = 1.0) -> Rotate:
    """Rotate counter-clockwise by `degrees` about the centre: `rotate(degrees=(-30, 30), p=0.75)`."""
    return Rotate(degrees=degrees, p=p)


def brightness(change=0.5, p: float = 1.0) -> Brightness:
    """Mid-grey becomes `change` (0.5: no change; in (0, 1)), through logit space: nothing clips."""
    return Brightness(change=change, p=p)


def contrast(scale=1.0, p: float = 1.0) -> Contrast:
    """Contrast times `scale` (1: no change; a range is drawn log-uniformly), through logit space."""
    return Contrast(scale=scale, p=p)


def flip_lr(p: float = 1.0) -> Flip:
    """Mirror left-right."""
    return Flip(p=p)


def dihedral(k=None, p: float = 1.0) -> Dihedral:
    """Flips and quarter turns: `k` in 0-7 (bit 1 top-bottom, bit 2 left-right, bit 4 transpose);
    None: one of the 8, uniformly."""
    return Dihedral(p=p, k=k)


def zoom(scale=1.0, row_pct=0.5, col_pct=0.5, p: float = 1.0) -> Zoom:
    """Zoom by `scale` (below 1: out) towards the point at `row_pct`, `col_pct` (0 top/left, 1 bottom/right)."""
    return Zoom(scale=scale, row_pct=row_pct, col_pct=col_pct, p=p)


def rand_zoom(scale=(1.0, 1.5), p: float = 1.0) -> Zoom:
    """`zoom` towards a random point."""
    return Zoom(scale=scale, row_pct=(0, 1), col_pct=(0, 1), p=p)


def crop(size=None, row_pct=0.5, col_pct=0.5, p: float = 1.0) -> Crop:
    """The crop window at `row_pct`, `col_pct` (0 top/left, 1 bottom/right). `size` is the output size
    unless `transform(size=)` gives one (which, as in fastai, wins)."""
    return Crop(size=size, row_pct=row_pct, col_pct=col_pct, p=p)


def crop_pad(size=None, padding_mode: str | None = None, row_pct=0.5, col_pct=0.5, p: float = 1.0) -> Crop:
    """`crop`, padding with `padding_mode` where the window leaves the image. With no arguments, the
    centre window: fastai's validation transform, accepted in the validation list."""
    return Crop(size=size, row_pct=row_pct, col_pct=col_pct, padding_mode=padding_mode, p=p)


def rand_crop(size=None, padding_mode: str | None = None, p: float = 1.0) -> Crop:
    """`crop_pad` at a random place."""
    return Crop(size=size, row_pct=(0, 1), col_pct=(0, 1), padding_mode=padding_mode, p=p)


def pad(padding: int = 0, mode: str | None = None, p: float = 1.0) -> Pad:
    """`padding` pixels on every side, filled with `mode` ('zeros', 'border', 'reflection'), the padded
    picture fitted back to the output size."""
    return Pad(padding=padding, mode=mode, p=p)


def rand_resize_crop(size, max_scale: float = 2.0, ratios=(0.75, 1.33)) -> list:
    """A random part of the picture (1 to 1/max_scale of its area, aspect in `ratios`) resized to
    `size`: [the zoom-and-squish window, the crop]."""
    return [ZoomSquish(scale=(1.0, max_scale), squish=tuple(ratios), invert=0.5), Crop(size=size)]


def zoom_crop(scale, do_rand: bool = False, p: float = 1.0) -> list:
    """[a zoom by `scale`, a crop]: both at random places with `do_rand`, else centred."""
    if do_rand:
        return [rand_zoom(scale=scale, p=p), rand_crop()]
    return [zoom(scale=scale, p=p), crop_pad()]


def _range(magnitude):
    """A warp's magnitude: a range as given, a number as the same move for every corner."""
    return tuple(magnitude) if is_range(magnitude) else (magnitude, magnitude)


def symmetric_warp(magnitude=0.0, p: float = 1.0, invert: bool = False) -> Warp:
    """The 4 corners moved by `magnitude` (4 draws), opposite sides symmetrically: get_transforms's warp."""
    return Warp(magnitude=_range(magnitude), p=p, invert=invert)


def perspective_warp(magnitude=0.0, p: float = 1.0, invert: bool = False) -> Perspective:
    """Each corner moved by its own (dx, dy) drawn from `magnitude`: one homography."""
    return Perspective(magnitude=magnitude, invert=invert, p=p)


def skew(direction=None, magnitude=0.0, invert: bool = False, p: float = 1.0) -> Skew:
    """One corner (`direction` // 2) pulled out along x (even `direction`) or y (odd) by `magnitude`;
    `direction` None: any of the 8."""
    return Skew(direction=direction, magnitude=magnitude, invert=invert, p=p)


def tilt(direction=None, magnitude=0.0, invert: bool = False, p: float = 1.0) -> Tilt:
    """One side (`direction` 0-3: right, left, bottom, top) grown by `magnitude` at both ends; None: any."""
    return Tilt(direction=direction, magnitude=magnitude, invert=invert, p=p)


def squish(scale=1.0, row_pct=0.5, col_pct=0.5, p: float = 1.0) -> Squish:
    """Stretched sideways (`scale` < 1) or upwards (> 1), the kept part at `row_pct`, `col_pct`."""
    return Squish(scale=scale, row_pct=row_pct, col_pct=col_pct, p=p)


def jitter(magnitude=0.0, p: float = 1.0) -> Jitter:
    """Each pixel taken from up to `magnitude` (image units, [-1, 1] across) away."""
    return Jitter(magnitude=magnitude, p=p)


def cutout(n_holes=1, length=40, p: float = 1.0) -> Cutout:
    """`n_holes` black squares of `length` pixels at random places."""
    return Cutout(n_holes=n_holes, length=length, p=p)


def rgb_randomize(channel: int | None = None, thresh: float = 0.3, p: float = 1.0) -> RgbRandomize:
    """One colour channel replaced by noise of up to `thresh`."""
    return RgbRandomize(channel=channel, thresh=thresh, p=p)
