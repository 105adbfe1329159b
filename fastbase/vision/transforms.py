"""Layer 6: image augmentation, on whole batches, on the device.

Workers only decode and resize (`vision.image`). The random geometry of a training batch (the crop
window, flip, rotation, zoom and perspective warp) is composed here into ONE 3x3 matrix per image,
mapping output to input coordinates, and applied with ONE `grid_sample` call for the batch. Lighting
(brightness, contrast) is a per-image multiply-add, done in place as the batch becomes float (it
commutes with the resample). Validation batches only become floats: their deterministic resize
already happened in the workers.

Transforms are small printable objects that draw their random parameters for `n` images at once; their
kinds are in `tfm_base`, those of `get_transforms` in `augments`, the rest of fastai v1's in `warps` and
`pixel_tfms`, all under fastai's function names in `tfm_funcs`.
Coordinates are `grid_sample`'s: x right, y down, both in [-1, 1] over the image.
"""
from __future__ import annotations

import torch
from torch.utils.data import get_worker_info

from ..data import DataError, TfmOrder
from .augments import Brightness, CenterCrop, Contrast, Crop, Dihedral, Flip, RandomCrop, Rotate, Warp, Zoom
from .coords import CoordTargets
from .sampling import crop_matrices, resample, reused, sampling_grid
from .sizing import PADDING_MODES, ResizeMethod, size_hw
from .tfm_base import (
    GeometricTransform,
    GridTransform,
    LightingTransform,
    PixelTransform,
    Transform,
    homographies,
)

__all__ = ["BatchAugment", "Brightness", "CenterCrop", "Contrast", "Crop", "Dihedral", "Flip", "GeometricTransform",
           "GridTransform", "LightingTransform", "PixelTransform", "RandomCrop", "ResizeMethod", "Rotate", "ToFloat",
           "Transform", "Warp", "Zoom", "as_target", "crop_matrices", "get_transforms", "homographies",
           "needs_canvas", "resample", "sampling_grid"]

_EPS = 1e-5  # lighting clamps to [_EPS, 1 - _EPS] before the logit, so black and white stay finite


def get_transforms(do_flip: bool = True, flip_vert: bool = False, max_rotate: float = 10.0, max_zoom: float = 1.1,
                   max_lighting: float = 0.2, max_warp: float = 0.2, p_affine: float = 0.75,
                   p_lighting: float = 0.75, xtra_tfms=None) -> tuple[list, list]:
    """fastai v1's default augmentation: (training transforms, validation transforms).

    Training: a random crop window, a left-right flip (or any of the 8 dihedral moves with
    `flip_vert`), a perspective warp, a rotation and a zoom, each with probability `p_affine`, then
    brightness and contrast with `p_lighting`, then `xtra_tfms`. Validation: the centre crop."""
    train: list = [RandomCrop()]
    if do_flip:
        train.append(Dihedral() if flip_vert else Flip(p=0.5))
    if max_warp:
        train.append(Warp(magnitude=max_warp, p=p_affine))
    if max_rotate:
        train.append(Rotate(max_deg=max_rotate, p=p_affine))
    if max_zoom > 1:
        train.append(Zoom(max_zoom=max_zoom, p=p_affine))
    if max_lighting:
        train += [Brightness(max_lighting=max_lighting, p=p_lighting),
                  Contrast(max_lighting=max_lighting, p=p_lighting)]
    return train + list(xtra_tfms or []), [CenterCrop()]


def needs_canvas(tfms) -> bool:
    """True when the transforms move pixels, so training items must keep the whole image."""
    return any(isinstance(t, (GeometricTransform, GridTransform)) or (isinstance(t, Crop) and not t.centred)
               for t in tfms or [])


def _light(x: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Float images `(n, c, h, w)` in [0, 1] with each one's lighting applied in logit space, in place."""
    n = x.shape[0]
    return (x.clamp_(_EPS, 1 - _EPS).logit_().mul_(scale.to(x.device).view(n, 1, 1, 1))
            .add_(shift.to(x.device).view(n, 1, 1, 1)).sigmoid_())


# --- the batch transforms --------------------------------------------------------------------
class BatchAugment:
    """Device transform of training batches: `(x uint8 (n,3,H,W), y, src_hw (n,2))` -> `(x float in
    [0,1] (n,3,*size), y)`. One resample for crop window + geometry (+ grid moves such as jitter), then
    lighting (brightness, contrast) in place in logit space, then pixel transforms (cutout...), then any
    other callables in `tfms` (float batch -> float batch). The last `Crop` in `tfms` places the window
    (its `size` is the output's when `size` is None). Random draws use `generator` (CPU). With `tfm_y`
    (segmentation), `y` is a uint8 mask (n, 1, H, W) of class codes on the same canvas: it takes the
    same resample and grid moves, nearest-neighbour (no lighting, no pixel transforms), and leaves as
    int64 (n, 1, *size). A `CoordTargets` `tfm_y` (points, boxes) moves coordinates by the inverse of the
    resample's map (`coords`); grid moves have no exact inverse, so they are refused with coordinates."""
    order = TfmOrder.TO_FLOAT
    light_y = False  # True: float image targets take the input's lighting too (ImagePairAugment)

    def __init__(self, tfms, size=None, resize_method=ResizeMethod.CROP, padding_mode: str = "reflection",
                 generator: torch.Generator | None = None, tfm_y: bool | CoordTargets = False):
        if padding_mode not in PADDING_MODES:
            raise DataError(f"padding_mode must be one of {PADDING_MODES}, got {padding_mode!r}.")
        self.tfms, self.size, self.tfm_y = list(tfms), size, tfm_y if isinstance(tfm_y, CoordTargets) else bool(tfm_y)
        self.resize_method, self.padding_mode, self.generator = ResizeMethod(resize_method), padding_mode, generator
        self.geometric = [t for t in self.tfms if isinstance(t, GeometricTransform)]
        self.lighting = [t for t in self.tfms if isinstance(t, LightingTransform)]
        self.others = sorted((t for t in self.tfms if callable(t)), key=lambda t: getattr(t, "order", 0))
        self.grid = [t for t in self.tfms if isinstance(t, GridTransform)]
        self.pixel = [t for t in self.tfms if isinstance(t, PixelTransform)]
        if self.grid and isinstance(self.tfm_y, CoordTargets):
            raise DataError(f"{', '.join(type(t).__name__ for t in self.grid)} moves the sampling grid point by point, "
                            "which has no exact inverse to move points or boxes with; leave it out of the transforms "
                            "of coordinate targets.")
        self.crop = next((t for t in reversed(self.tfms) if isinstance(t, Crop)), None)
        self.random_crop = self.crop is not None and not self.crop.centred
        if self.size is None and self.crop is not None:
            self.size = size_hw(self.crop.size)
        self.makes_new_batch = not self.others  # x is this call's own tensor, unless a callable returns another
        self._workspace: dict = {}  # batch-sized temporaries, reused (see `sampling.reused`)

    def __getstate__(self):  # workers get the settings, not the workspace
        return {**self.__dict__, "_workspace": {}}

    def _rng(self) -> torch.Generator | None:
        """`generator`, or in a DataLoader worker one seeded from the worker's seed: each worker holds a
        copy of this object, and copies of one generator would draw the same numbers."""
        info = get_worker_info()
        if info is None or self.generator is None:
            return self.generator
        if getattr(self, "_worker_seed", None) != info.seed:
            self._worker_seed, self._worker_rng = info.seed, torch.Generator().manual_seed(info.seed)
        return self._worker_rng

    def __call__(self, batch):
        x, y, src_hw = batch
        n, out_hw, rng = x.shape[0], tuple(self.size or x.shape[-2:]), self._rng()
        in_hw = tuple(x.shape[-2:])
        scale, shift = torch.ones(n), torch.zeros(n)
        for t in self.lighting:  # composed in logit space: brightness then contrast
            s, b = t.scale_shift(n, rng)
            scale, shift = scale * s, shift * s + b
        moves = (self.geometric or self.grid or self.random_crop or out_hw != in_hw
                 or (src_hw.cpu() != torch.tensor(in_hw)).any())
        # when resampled, the float copy is a temporary and can live in the workspace; it is scaled to
        # [0, 1] after the resample, on the output, which is smaller than the canvas
        x = reused(self._workspace, "x", x.shape, torch.float32, x.device).copy_(x) if moves else x.float()
        if moves:
            place = self.random_crop and self.resize_method == ResizeMethod.CROP
            m = crop_matrices(src_hw.cpu(), out_hw, self.resize_method, False, rng, canvas_hw=in_hw,
                              positions=self.crop.positions(n, rng) if place else None)
            for t in self.geometric:
                m = m @ t.matrices(n, out_hw, rng)
            x, y = self.move(x, y, m, out_hw, self._move_grid(rng) if self.grid else None)
        y = self.target(y)
        x = x.mul_(1 / 255)
        if bool((scale != 1).any() or (shift != 0).any()):  # lighting, on the (smaller) output
            x = _light(x, scale, shift)
            if self.light_y:
                y = _light(y, scale, shift)
        for t in self.pixel:
            x = t.apply(x, rng)
        for t in self.others:
            x = t(x)
        return x, y

    def move(self, x: torch.Tensor, y, m: torch.Tensor, out_hw, move_grid=None):
        """`(x, y)` resampled at `m` (one grid, moved by `move_grid`): float `x` bilinear; with `tfm_y`
        the mask `y` too, nearest-neighbour, or coordinates `y` by the inverse of `m`. A task whose
        targets are other images overrides it (and `target`)."""
        if self.tfm_y is True:
            return resample(x, m, out_hw, self.padding_mode, self._workspace, mask=y, move_grid=move_grid)
        x = resample(x, m, out_hw, self.padding_mode, self._workspace, move_grid=move_grid)
        return x, (self.tfm_y.move(y, m) if isinstance(self.tfm_y, CoordTargets) else y)  # points, boxes

    def target(self, y):
        """The batch's targets as the loss reads them (`as_target`)."""
        return as_target(y)

    def _move_grid(self, rng):
        """The grid transforms, as one function of the sampling grid (see `resample`)."""
        def move(grid):
            for t in self.grid:
                t.move_grid(grid, rng)
        return move

    def __repr__(self):
        tfm_y = f", tfm_y={self.tfm_y!r}" if self.tfm_y else ""
        return (f"BatchAugment(size={self.size}, resize_method={self.resize_method.name}, "
                f"padding_mode={self.padding_mode!r}{tfm_y}, tfms={self.tfms})")


def as_target(y):
    """Targets as the loss reads them: uint8 masks (collated small, as they load) become int64."""
    return y.long() if isinstance(y, torch.Tensor) and y.dtype == torch.uint8 else y


class ToFloat:
    """Device transform of validation/test batches: `(x uint8, y, src_hw)` -> `(x float in [0, 1], y)`."""
    order = TfmOrder.TO_FLOAT
    makes_new_batch = True  # its x is a new tensor (see `data.apply_tfms`)

    def __call__(self, batch):
        x, y, *_ = batch
        return (x / 255 if x.is_floating_point() else x.float().div_(255)), as_target(y)

    def __repr__(self):
        return "ToFloat()"
