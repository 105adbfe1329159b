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
import torch.nn.functional as F
from torch.utils.data import get_worker_info

from ..data import DataError, TfmOrder
from .augments import Brightness, CenterCrop, Contrast, Crop, Dihedral, Flip, RandomCrop, Rotate, Warp, Zoom
from .coords import CoordTargets
from .sizing import PADDING_MODES, ResizeMethod, size_hw
from .tfm_base import (
    GeometricTransform,
    GridTransform,
    LightingTransform,
    PixelTransform,
    Transform,
    affine,
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


# --- the batch transforms --------------------------------------------------------------------
def crop_matrices(src_hw: torch.Tensor, out_hw, method: ResizeMethod, random: bool, generator=None,
                  canvas_hw=None, positions=None) -> torch.Tensor:
    """(n, 3, 3) maps from output coordinates to the input canvas (`canvas_hw`, default: each item's
    `src_hw`), placing the window that `method` keeps.

    CROP: the picture fills a `src_hw` (n, 2) region in the middle of the canvas, at the scale the
    output wants (`ImageDataset` resizes it so); the window, `out_hw` canvas pixels when it fits, goes
    to a random whole-pixel place in the region (`random`) or its centre; `positions` (rows, cols,
    drawn), as `Crop.positions` gives them, place it instead: 0 top/left to 1 bottom/right, on whole
    pixels where `drawn`. Whole pixels: an item that
    is not otherwise moved comes out exactly as its canvas pixels, not interpolated between them.
    PAD and SQUISH: the canvas holds the whole image squished, `src_hw` being its real (H, W); PAD
    takes the window that fits the image in the output (the rest is padding), SQUISH all of it."""
    n = src_hw.shape[0]
    h, w = src_hw[:, 0].float(), src_hw[:, 1].float()
    th, tw = out_hw
    zero = torch.zeros(n)
    if method == ResizeMethod.SQUISH:
        return torch.eye(3).expand(n, 3, 3)
    if method == ResizeMethod.CROP:
        ch, cw = (h, w) if canvas_hw is None else (torch.full((n,), float(v)) for v in canvas_hw)
        ratio = torch.maximum(th / h, tw / w)  # 1 when the region was sized for the output
        if positions is None:
            rows, cols = ((torch.rand(n, generator=generator) if random else torch.full((n,), 0.5)) for _ in "rc")
            positions = (rows, cols, torch.full((n,), bool(random)))
        rows, cols, drawn = positions
        (cy, fh), (cx, fw) = (_window(size / ratio, region, canvas, pct, drawn)
                              for size, region, canvas, pct in ((th, h, ch, rows), (tw, w, cw, cols)))
        return affine(fw, zero, cx, zero, fh, cy)
    ratio = torch.minimum(th / h, tw / w)
    fh, fw = th / (h * ratio), tw / (w * ratio)  # window size as a fraction of the image (>=1: padding)
    return affine(fw, zero, zero, zero, fh, zero)


def _window(size, region, canvas, pct, drawn):
    """One axis of a CROP window of `size` canvas pixels inside a `region` centred in `canvas` (all (n,)),
    at `pct` of the slack (n,): its centre and half-extent in the canvas's [-1, 1] coordinates. Where
    `drawn` (n, bool), the offset is a whole number of pixels, each equally likely."""
    start = ((canvas - region) / 2).floor()  # where `image.pad_image` put the region
    slack = (region - size).clamp(min=0)
    whole = slack.floor()
    offset = torch.where(drawn, (pct * (whole + 1)).floor().minimum(whole), pct * slack)
    return 2 * (start + offset + size / 2) / canvas - 1, size / canvas


def resample(x: torch.Tensor, matrices: torch.Tensor, out_hw, padding_mode: str = "reflection",
             workspace: dict | None = None, mask: torch.Tensor | None = None, move_grid=None):
    """Sample float `x` (n, C, H, W) at `matrices` (n, 3, 3, output->input, perspective allowed) applied
    to an `out_hw` grid: one `grid_sample` call for the whole batch. Returns (n, C, *out_hw).
    `workspace` (a dict) keeps the grid's memory between calls. With `mask` (n, 1, H, W) of class
    codes, returns `(x, mask)`: the mask sampled on the same grid, nearest-neighbour, as int64.
    `move_grid(grid)`, when given, changes the (n, *out_hw, 2) grid in place before the sampling."""
    grid = sampling_grid(matrices, out_hw, x.device, x.shape[0], workspace)
    if move_grid is not None:
        move_grid(grid)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode=padding_mode, align_corners=False)
    if mask is None:
        return out
    moved = F.grid_sample(mask.float(), grid, mode="nearest", padding_mode=padding_mode, align_corners=False)
    return out, moved.long()


def sampling_grid(matrices: torch.Tensor, out_hw, device, n: int, workspace: dict | None = None) -> torch.Tensor:
    """The (n, *out_hw, 2) `grid_sample` grid of `matrices` (n, 3, 3) on `device`."""
    th, tw = out_hw
    perspective = bool((matrices[:, 2, :2] != 0).any())  # checked before the move: no device sync
    m = matrices.to(device, torch.float32).view(n, 9, 1, 1)
    xs = torch.linspace(-1 + 1 / tw, 1 - 1 / tw, tw, device=device).view(1, 1, tw)  # pixel centres
    ys = torch.linspace(-1 + 1 / th, 1 - 1 / th, th, device=device).view(1, th, 1)  # (align_corners=False)
    # each coordinate plane by broadcasting a row and a column, written straight into the grid: the
    # grid is the one full-size temporary (a batched matmul is 3x slower on the CPU)
    grid = _reused(workspace, "grid", (n, th, tw, 2), torch.float32, device)
    torch.add(m[:, 0] * xs, m[:, 1] * ys + m[:, 2], out=grid[..., 0])
    torch.add(m[:, 3] * xs, m[:, 4] * ys + m[:, 5], out=grid[..., 1])
    if perspective:
        depth = _reused(workspace, "depth", (n, th, tw), torch.float32, device)
        grid.div_(torch.add(m[:, 6] * xs, m[:, 7] * ys + m[:, 8], out=depth).unsqueeze(-1))
    return grid


def _reused(workspace: dict | None, name: str, shape, dtype, device) -> torch.Tensor:
    """A tensor from `workspace` when one of this shape is there, else a new one (kept there). Reusing
    batch-sized temporaries spares the page faults of fresh allocations (bench/RESULTS.md, "Batch transforms")."""
    key = (name, tuple(shape), dtype, torch.device(device))
    if workspace is None:
        return torch.empty(shape, dtype=dtype, device=device)
    if key not in workspace:
        if len(workspace) > 8:  # shapes keep changing (e.g. a last, smaller batch): start again
            workspace.clear()
        workspace[key] = torch.empty(shape, dtype=dtype, device=device)
    return workspace[key]


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
        self._workspace: dict = {}  # batch-sized temporaries, reused (see `_reused`)

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
        x = _reused(self._workspace, "x", x.shape, torch.float32, x.device).copy_(x) if moves else x.float()
        if moves:
            place = self.random_crop and self.resize_method == ResizeMethod.CROP
            m = crop_matrices(src_hw.cpu(), out_hw, self.resize_method, False, rng, canvas_hw=in_hw,
                              positions=self.crop.positions(n, rng) if place else None)
            for t in self.geometric:
                m = m @ t.matrices(n, out_hw, rng)
            move_grid = self._move_grid(rng) if self.grid else None
            if self.tfm_y is True:
                x, y = resample(x, m, out_hw, self.padding_mode, self._workspace, mask=y, move_grid=move_grid)
            else:
                x = resample(x, m, out_hw, self.padding_mode, self._workspace, move_grid=move_grid)
            y = self.tfm_y.move(y, m) if isinstance(self.tfm_y, CoordTargets) else y  # points, boxes
        y = as_target(y)
        x = x.mul_(1 / 255)
        if bool((scale != 1).any() or (shift != 0).any()):  # lighting, on the (smaller) output
            x = (x.clamp_(_EPS, 1 - _EPS).logit_().mul_(scale.to(x.device).view(n, 1, 1, 1))
                 .add_(shift.to(x.device).view(n, 1, 1, 1)).sigmoid_())
        for t in self.pixel:
            x = t.apply(x, rng)
        for t in self.others:
            x = t(x)
        return x, y

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
