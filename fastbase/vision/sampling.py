"""Layer 6: the geometry of the batch resample, shared by every image task: where a crop window sits
(`crop_matrices`), the (n, 3, 3) output->input maps as a sampling grid (`sampling_grid`), and the one
`grid_sample` call per batch (`resample`). `transforms.BatchAugment` composes the random transforms'
matrices with these; coordinates are `grid_sample`'s (x right, y down, [-1, 1] over the image).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .sizing import ResizeMethod
from .tfm_base import affine

__all__ = ["crop_matrices", "resample", "reused", "sampling_grid"]


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
    grid = reused(workspace, "grid", (n, th, tw, 2), torch.float32, device)
    torch.add(m[:, 0] * xs, m[:, 1] * ys + m[:, 2], out=grid[..., 0])
    torch.add(m[:, 3] * xs, m[:, 4] * ys + m[:, 5], out=grid[..., 1])
    if perspective:
        depth = reused(workspace, "depth", (n, th, tw), torch.float32, device)
        grid.div_(torch.add(m[:, 6] * xs, m[:, 7] * ys + m[:, 8], out=depth).unsqueeze(-1))
    return grid


def reused(workspace: dict | None, name: str, shape, dtype, device) -> torch.Tensor:
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
