"""Layer 6: drawing points on their images: a batch with its points (`show_points_batch`) and the true
and predicted points of a Learner (`show_points_results`), both through `ImagePoints.show`."""
from __future__ import annotations

from ...data import DatasetType
from ...figures import finish_figure, subplots
from ..coords import FlowField
from ..image import Image
from ..show import batch_predictions
from .items import ImagePoints

__all__ = ["show_points_batch", "show_points_results"]


def show_points_batch(data, rows: int = 3, figsize=None, ds_type: DatasetType = DatasetType.Train,
                      return_fig: bool | None = None, save_to=None, **kwargs):
    """Up to `rows` x `rows` images of one `ds_type` batch of `data`, denormalised, with their points."""
    x, y = data.one_batch(ds_type, denorm=True)
    fig, axes = subplots(rows, rows, figsize=figsize or (3 * rows, 3 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, img, pts in zip(axes.flat, x, y):
        Image(img).show(ax=ax, y=ImagePoints(FlowField(img.shape[-2:], pts), scale=False), **kwargs)
    fig.tight_layout()
    return finish_figure(fig, return_fig, save_to)


def show_points_results(learn, ds_type: DatasetType = DatasetType.Valid, rows: int = 3, figsize=None,
                        return_fig: bool | None = None, save_to=None, **kwargs):
    """Images of the first `ds_type` batch with the true points (green) and `learn`'s predictions (red),
    in two columns (target, prediction) as fastai v1 draws them."""
    x, y, out = batch_predictions(learn, ds_type)
    n = min(len(x), rows)
    fig, axes = subplots(n, 2, figsize=figsize or (6, 3 * n), squeeze=False)
    for row, img, targ, pred in zip(axes, x, y, out):
        hw = img.shape[-2:]
        Image(img).show(ax=row[0], y=ImagePoints(FlowField(hw, targ), scale=False), color="lime", **kwargs)
        Image(img).show(ax=row[1], y=ImagePoints(FlowField(hw, pred.reshape(-1, 2)), scale=False), **kwargs)
    axes[0, 0].set_title("target")
    axes[0, 1].set_title("prediction")
    fig.tight_layout()
    return finish_figure(fig, return_fig, save_to)
