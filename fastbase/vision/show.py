"""Layer 6: drawing image batches through their items: `show_batch` (inputs and targets) and
`show_results` (inputs, targets and a Learner's predictions). Each cell is an `Image` titled by its
label item, so single-label, multi-label and regression data draw with the same calls. Also fastai
v1's `show_image` and `plot_multi` for notebooks."""
from __future__ import annotations

import torch

from ..data import DatasetType
from ..data.items import prediction_item
from ..figures import finish_figure, subplots
from ..metrics import loss_activation
from .image import Image


def show_image_batch(data, rows: int = 3, figsize=None, ds_type: DatasetType = DatasetType.Train,
                     return_fig: bool | None = None, save_to=None, imgsize: float = 3, **kwargs):
    """Up to `rows` x `rows` images of one batch of `data`, denormalised, titled with their labels
    (`imgsize`: inches per image when `figsize` is not given)."""
    x, y = data.one_batch(ds_type, denorm=True)
    labels = data.dl(ds_type).dataset.y
    items = [(Image(x[i]), labels.reconstruct(y[i]), None) for i in range(min(len(x), rows * rows))]
    return _grid(items, rows, figsize or (imgsize * rows, imgsize * rows), return_fig, save_to, **kwargs)


def batch_predictions(learn, ds_type: DatasetType = DatasetType.Valid):
    """`(x, y, out)` of the first `ds_type` batch on the CPU: the inputs denormalised, the targets, and
    `learn`'s predictions through the loss's activation (what `show_results` draws)."""
    data = learn.data
    x, y = data.one_batch(ds_type, detach=False, cpu=False)
    learn.model.eval()
    with torch.no_grad():
        out = loss_activation(learn.loss_func)(learn.model(x)).detach().float().cpu()
    return data.denorm(x).cpu(), y.cpu(), out


def show_image_results(learn, ds_type: DatasetType = DatasetType.Valid, rows: int = 3, figsize=None,
                       thresh: float = 0.5, return_fig: bool | None = None, save_to=None, imgsize: float = 3,
                       **kwargs):
    """Up to `rows` x `rows` images of the first `ds_type` batch, titled 'prediction / target' (green
    when they agree, red otherwise; `imgsize`: inches per image when `figsize` is not given)."""
    data = learn.data
    x, y, out = batch_predictions(learn, ds_type)
    labels = data.dl(ds_type).dataset.y
    regression = data.classes is None and not data.multi_label
    items = []
    for i in range(min(len(x), rows * rows)):
        pred, _ = prediction_item(out[i], data.classes, data.multi_label, thresh, regression)
        items.append((Image(x[i]), labels.reconstruct(y[i]), pred))
    return _grid(items, rows, figsize or (imgsize * rows, imgsize * rows), return_fig, save_to, **kwargs)


def _grid(items, rows, figsize, return_fig, save_to, **kwargs):
    fig, axes = subplots(rows, rows, figsize=figsize or (3 * rows, 3 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, (img, target, pred) in zip(axes.flat, items):
        if pred is None:
            img.show(ax=ax, y=target, **kwargs)
        else:
            good = str(pred) == str(target)
            img.show(ax=ax, title=f"{pred}\n{target}", color="green" if good else "red", **kwargs)
    fig.tight_layout()
    return finish_figure(fig, return_fig, save_to)


def show_image(img, ax=None, figsize=(3, 3), hide_axis: bool = True, cmap=None, title: str | None = None, **kwargs):
    """Draw an `Image` or an image tensor (`3 x H x W` or `H x W`, floats in [0, 1]) on `ax`; returns
    the axes, as fastai v1's `show_image`."""
    data = img.data if isinstance(img, Image) else torch.as_tensor(img).detach().float().cpu()
    if data.dim() == 3 and data.shape[0] == 3:
        return Image(data).show(ax=ax, figsize=figsize, hide_axis=hide_axis, cmap=cmap, title=title, **kwargs)
    if ax is None:  # one channel (e.g. a feature map): drawn as it is, through the colour map
        _, ax = subplots(figsize=figsize)
    ax.imshow(data.reshape(data.shape[-2:]).numpy(), cmap=cmap)
    if hide_axis:
        ax.axis("off")
    if title is not None:
        ax.set_title(title, **kwargs)
    return ax


def plot_multi(func, r: int = 1, c: int = 1, figsize=(12, 6)):
    """Call `func(i, j, ax)` for each cell of an `r` x `c` grid of axes; returns the Figure."""
    fig, axes = subplots(r, c, figsize=figsize, squeeze=False)
    for i in range(r):
        for j in range(c):
            func(i, j, axes[i, j])
    return fig
