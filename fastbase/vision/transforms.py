"""Layer 6: image augmentation, on whole batches, on the device.

Workers only decode and resize (`vision.image`). The random geometry of a training batch (the crop
window, flip, rotation, zoom and perspective warp) is composed here into ONE 3x3 matrix per image,
mapping output to input coordinates, and applied with ONE `grid_sample` call for the batch. Lighting
(brightness, contrast) is a per-image multiply-add, done in place as the batch becomes float (it
commutes with the resample). Validation batches only become floats: their deterministic resize
already happened in the workers.

Transforms are small printable objects that draw their random parameters for `n` images at once.
Coordinates are `grid_sample`'s: x right, y down, both in [-1, 1] over the image.
"""
from __future__ import annotations

import math

import torch
from torch.utils.data import get_worker_info

from ..data import DataError, TfmOrder
from .sampling import affine_matrices, crop_matrices, resample, reused, sampling_grid
from .sizing import PADDING_MODES, ResizeMethod

__all__ = ["BatchAugment", "Brightness", "CenterCrop", "Contrast", "Dihedral", "Flip", "GeometricTransform",
           "LightingTransform", "RandomCrop", "ResizeMethod", "Rotate", "ToFloat", "Transform", "Warp", "Zoom",
           "as_target", "crop_matrices", "crop_pad", "get_transforms", "needs_canvas", "resample", "sampling_grid"]

_EPS = 1e-5  # lighting clamps to [_EPS, 1 - _EPS] before the logit, so black and white stay finite


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


class RandomCrop(Transform):
    """The CROP window lands anywhere on the image (training); its position is part of the resample."""


class CenterCrop(Transform):
    """The CROP window sits in the centre (validation, the Fix loader, predictions)."""


class GeometricTransform(Transform):
    """A transform of coordinates: `matrices(n, out_hw, generator)` gives `(n, 3, 3)` output->input maps."""

    def matrices(self, n: int, out_hw, generator=None) -> torch.Tensor:
        m = self._matrices(n, out_hw, generator)
        keep = self._chosen(n, generator).view(n, 1, 1)
        return torch.where(keep, m, torch.eye(3).expand(n, 3, 3))

    def _matrices(self, n, out_hw, generator) -> torch.Tensor:
        raise NotImplementedError


def _uniform(n, low, high, generator):
    return low + (high - low) * torch.rand(n, generator=generator)


class Flip(GeometricTransform):
    """Mirror left-right."""

    def __init__(self, p: float = 0.5):
        super().__init__(p)

    def _matrices(self, n, out_hw, generator):
        return torch.diag(torch.tensor([-1.0, 1.0, 1.0])).expand(n, 3, 3)


class Dihedral(GeometricTransform):
    """One of the 8 flips and quarter turns of a square, uniformly (for satellite or microscope images)."""

    def _matrices(self, n, out_hw, generator):
        k = torch.randint(0, 8, (n,), generator=generator)
        sx, sy = 1.0 - 2 * (k & 1).float(), 1.0 - 2 * ((k >> 1) & 1).float()
        swap, zero = (k >> 2 & 1).bool(), torch.zeros(n)
        plain = affine_matrices(sx, zero, zero, zero, sy, zero)
        turned = affine_matrices(zero, sx, zero, sy, zero, zero)
        return torch.where(swap.view(n, 1, 1), turned, plain)


class Rotate(GeometricTransform):
    """Rotate by an angle drawn uniformly in [-max_deg, max_deg] degrees, about the centre."""

    def __init__(self, max_deg: float = 10.0, p: float = 0.75):
        super().__init__(p, max_deg=max_deg)

    def _matrices(self, n, out_hw, generator):
        angle = _uniform(n, -self.params["max_deg"], self.params["max_deg"], generator) * (math.pi / 180)
        cos, sin, zero = angle.cos(), angle.sin(), torch.zeros(n)
        h, w = out_hw  # rotate in pixel units, so a non-square output is not sheared
        return affine_matrices(cos, -sin * h / w, zero, sin * w / h, cos, zero)


class Zoom(GeometricTransform):
    """Zoom in by a factor drawn uniformly in [min_zoom, max_zoom], towards a random point."""

    def __init__(self, max_zoom: float = 1.1, p: float = 0.75, min_zoom: float = 1.0):
        if not 1 <= min_zoom <= max_zoom:
            raise DataError(f"Zoom needs 1 <= min_zoom <= max_zoom (1 = no zoom), got {min_zoom} and {max_zoom}.")
        super().__init__(p, max_zoom=max_zoom, min_zoom=min_zoom)

    def _matrices(self, n, out_hw, generator):
        inv = 1 / _uniform(n, self.params["min_zoom"], self.params["max_zoom"], generator)
        col, row, zero = torch.rand(n, generator=generator), torch.rand(n, generator=generator), torch.zeros(n)
        return affine_matrices(inv, zero, (1 - inv) * (2 * col - 1), zero, inv, (1 - inv) * (2 * row - 1))


_CORNERS = torch.tensor([[-1.0, -1.0], [-1.0, 1.0], [1.0, -1.0], [1.0, 1.0]])


class Warp(GeometricTransform):
    """fastai's symmetric perspective warp: corners move by amounts drawn in [-magnitude, magnitude]."""

    def __init__(self, magnitude: float = 0.2, p: float = 0.75):
        super().__init__(p, magnitude=magnitude)

    def _matrices(self, n, out_hw, generator):
        m = _uniform(n * 4, -self.params["magnitude"], self.params["magnitude"], generator).view(n, 4)
        targ = torch.stack([torch.stack([-1 - m[:, 3], -1 - m[:, 1]], 1), torch.stack([-1 - m[:, 2], 1 + m[:, 1]], 1),
                            torch.stack([1 + m[:, 3], -1 - m[:, 0]], 1), torch.stack([1 + m[:, 2], 1 + m[:, 0]], 1)], 1)
        return homographies(targ, _CORNERS.expand(n, 4, 2))


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


class LightingTransform(Transform):
    """A change of intensities in logit space, as fastai does it: `x -> sigmoid(scale * logit(x) + shift)`,
    which keeps every value inside (0, 1) without clipping; `scale_shift(n, generator)` gives both, (n,)."""

    def scale_shift(self, n: int, generator=None) -> tuple[torch.Tensor, torch.Tensor]:
        scale, shift = self._scale_shift(n, generator)
        keep = self._chosen(n, generator)
        return torch.where(keep, scale, 1.0), torch.where(keep, shift, 0.0)

    def _scale_shift(self, n, generator):
        raise NotImplementedError


class Brightness(LightingTransform):
    """fastai's brightness: mid-grey moves to `change`, drawn in 0.5 +- max_lighting/2, through a
    shift of logit(change) in logit space (so 0.5 -> change, and nothing leaves [0, 1] or clips)."""

    def __init__(self, max_lighting: float = 0.2, p: float = 0.75):
        if not 0 <= max_lighting < 1:
            raise DataError(f"max_lighting must be in [0, 1), got {max_lighting}.")
        super().__init__(p, max_lighting=max_lighting)

    def _scale_shift(self, n, generator):
        half = self.params["max_lighting"] / 2
        return torch.ones(n), torch.logit(0.5 + _uniform(n, -half, half, generator))


class Contrast(LightingTransform):
    """fastai's contrast: logit-space intensities (0 at mid-grey) scaled by a factor drawn
    log-uniformly in [1 - max_lighting, 1 / (1 - max_lighting)]; highlights and shadows are
    compressed or spread, never clipped."""

    def __init__(self, max_lighting: float = 0.2, p: float = 0.75):
        if not 0 <= max_lighting < 1:
            raise DataError(f"max_lighting must be in [0, 1), got {max_lighting}.")
        super().__init__(p, max_lighting=max_lighting)

    def _scale_shift(self, n, generator):
        top = -math.log(1 - self.params["max_lighting"])
        return _uniform(n, -top, top, generator).exp(), torch.zeros(n)


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


def crop_pad(size=None, row_pct=(0, 1), col_pct=(0, 1), padding_mode: str = "reflection") -> Transform:
    """fastai v1's `crop_pad` as the one-resample pipeline takes it: a window of the size given to
    `transform(size=)` (`size` here is accepted for the course's call and must agree), anywhere in the
    image when `row_pct`/`col_pct` are ranges (`RandomCrop`), else centred (`CenterCrop`); images
    smaller than the window are padded (`padding_mode` of `transform`)."""
    ranged = isinstance(row_pct, (tuple, list)) or isinstance(col_pct, (tuple, list))
    return RandomCrop(size=size) if ranged else CenterCrop(size=size)


def needs_canvas(tfms) -> bool:
    """True when the transforms move pixels, so training items must keep the whole image."""
    return any(isinstance(t, (GeometricTransform, RandomCrop)) for t in tfms or [])


# --- the batch transforms --------------------------------------------------------------------
class BatchAugment:
    """Device transform of training batches: `(x uint8 (n,3,H,W), y, src_hw (n,2))` -> `(x float in
    [0,1] (n,3,*size), y)`. One resample for crop window + geometry, then lighting (brightness,
    contrast) in place in logit space, then any other callables in `tfms` (float batch -> float
    batch). Random draws use `generator` (CPU). With `tfm_y` (segmentation), `y` is a uint8 mask
    (n, 1, H, W) of class codes on the same canvas: it takes the same resample, nearest-neighbour (no
    lighting), and leaves as int64 (n, 1, *size)."""
    order = TfmOrder.TO_FLOAT

    def __init__(self, tfms, size=None, resize_method=ResizeMethod.CROP, padding_mode: str = "reflection",
                 generator: torch.Generator | None = None, tfm_y: bool = False):
        if padding_mode not in PADDING_MODES:
            raise DataError(f"padding_mode must be one of {PADDING_MODES}, got {padding_mode!r}.")
        self.tfms, self.size, self.tfm_y = list(tfms), size, bool(tfm_y)
        self.resize_method, self.padding_mode, self.generator = ResizeMethod(resize_method), padding_mode, generator
        self.geometric = [t for t in self.tfms if isinstance(t, GeometricTransform)]
        self.lighting = [t for t in self.tfms if isinstance(t, LightingTransform)]
        self.others = sorted((t for t in self.tfms if callable(t)), key=lambda t: getattr(t, "order", 0))
        self.random_crop = any(isinstance(t, RandomCrop) for t in self.tfms)
        self.makes_new_batch = not self.others  # x is this call's own tensor, unless a callable returns another
        self._workspace: dict = {}  # batch-sized temporaries, reused (see `reused`)

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
        moves = self.geometric or self.random_crop or out_hw != in_hw or (src_hw.cpu() != torch.tensor(in_hw)).any()
        # when resampled, the float copy is a temporary and can live in the workspace; it is scaled to
        # [0, 1] after the resample, on the output, which is smaller than the canvas
        x = reused(self._workspace, "x", x.shape, torch.float32, x.device).copy_(x) if moves else x.float()
        if moves:
            m = crop_matrices(src_hw.cpu(), out_hw, self.resize_method, self.random_crop, rng, canvas_hw=in_hw)
            for t in self.geometric:
                m = m @ t.matrices(n, out_hw, rng)
            x, y = self.move(x, y, m, out_hw)
        y = self.target(y)
        x = x.mul_(1 / 255)
        if bool((scale != 1).any() or (shift != 0).any()):  # lighting, on the (smaller) output
            x = (x.clamp_(_EPS, 1 - _EPS).logit_().mul_(scale.to(x.device).view(n, 1, 1, 1))
                 .add_(shift.to(x.device).view(n, 1, 1, 1)).sigmoid_())
        for t in self.others:
            x = t(x)
        return x, y

    def move(self, x: torch.Tensor, y, m: torch.Tensor, out_hw):
        """`(x, y)` resampled at `m` (one grid): float `x` bilinear; with `tfm_y` the mask `y` too,
        nearest-neighbour. A task whose targets are other images overrides it (and `target`)."""
        if self.tfm_y:
            return resample(x, m, out_hw, self.padding_mode, self._workspace, mask=y)
        return resample(x, m, out_hw, self.padding_mode, self._workspace), y

    def target(self, y):
        """The batch's targets as the loss reads them (`as_target`)."""
        return as_target(y)

    def __repr__(self):
        tfm_y = ", tfm_y=True" if self.tfm_y else ""
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
