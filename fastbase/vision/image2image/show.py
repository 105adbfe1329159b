"""Layer 6: drawing image-to-image items: `show_pair_batch` (each input beside its target) and
`show_pair_results` (input | prediction | target, fastai v1's layout), both denormalised; `imgsize`
is the size of one image in inches, as fastai v1's show functions take it."""
from __future__ import annotations

import torch

from ...data import DatasetType
from ...figures import finish_figure, subplots
from ..image import Image
from ..show import batch_predictions


def _denorm_y(data, y: torch.Tensor) -> torch.Tensor:
    """Targets or predicted images as [0, 1] pixels: the DataBunch's `denorm_y` (image-to-image data)."""
    return data.denorm_y(y).clamp(0, 1)


def _draw(columns, titles, rows: int, imgsize: float, figsize, return_fig, save_to, **kwargs):
    """A grid of `rows` lines, one column per tensor batch of `columns`, titled on the first line."""
    rows = min(rows, len(columns[0]))
    size = figsize or (imgsize * len(columns), imgsize * rows)
    fig, axes = subplots(rows, len(columns), figsize=size, squeeze=False)
    for i in range(rows):
        for j, (images, title) in enumerate(zip(columns, titles)):
            Image(images[i].float().cpu()).show(ax=axes[i, j], title=title if i == 0 else None, **kwargs)
    fig.tight_layout()
    return finish_figure(fig, return_fig, save_to)


def show_pair_batch(data, rows: int = 3, figsize=None, ds_type: DatasetType = DatasetType.Train,
                    imgsize: float = 4, return_fig: bool | None = None, save_to=None, **kwargs):
    """`rows` inputs of one `ds_type` batch beside their targets, denormalised."""
    x, y = data.one_batch(ds_type, denorm=True)
    return _draw([x, _denorm_y(data, y)], ["Input", "Target"], rows, imgsize, figsize, return_fig, save_to,
                 **kwargs)


def show_pair_results(learn, ds_type: DatasetType = DatasetType.Valid, rows: int = 3, figsize=None,
                      imgsize: float = 4, return_fig: bool | None = None, save_to=None, **kwargs):
    """`rows` lines of input | prediction | target for the first `ds_type` batch, denormalised."""
    data = learn.data
    x, y, out = batch_predictions(learn, ds_type)
    return _draw([x, _denorm_y(data, out), _denorm_y(data, y)], ["Input", "Prediction", "Target"], rows, imgsize,
                 figsize, return_fig, save_to, **kwargs)
