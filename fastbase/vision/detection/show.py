"""Layer 6: drawing boxes on their images: a batch with its labelled boxes (`show_boxes_batch`),
through `ImageBBox.show`."""
from __future__ import annotations

from ...data import DatasetType
from ...figures import finish_figure, subplots
from ..image import Image
from .items import ImageBBox

__all__ = ["show_boxes_batch"]


def show_boxes_batch(data, rows: int = 3, figsize=None, ds_type: DatasetType = DatasetType.Train,
                     return_fig: bool | None = None, save_to=None, **kwargs):
    """Up to `rows` x `rows` images of one `ds_type` batch of `data`, denormalised, with their boxes
    and class names (the padding, class 0, left out)."""
    x, (boxes, labels) = data.one_batch(ds_type, denorm=True)
    fig, axes = subplots(rows, rows, figsize=figsize or (3 * rows, 3 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, img, b, lbl in zip(axes.flat, x, boxes, labels):
        keep = lbl > 0
        Image(img).show(ax=ax, y=ImageBBox(b[keep], lbl[keep], img.shape[-2:], data.classes), **kwargs)
    fig.tight_layout()
    return finish_figure(fig, return_fig, save_to)
