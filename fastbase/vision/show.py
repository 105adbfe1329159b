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
                     return_fig: bool | None = None, save_to=None, **kwargs):
    """Up to `rows` x `rows` images of one batch of `data`, denormalised, titled with their labels."""
    x, y = data.one_batch(ds_type, denorm=True)
    labels = data.dl(ds_type).dataset.y
    items = [(Image(x[i]), labels.reconstruct(y[i]), None) for i in range(min(len(x), rows * rows))]
    return _grid(items, rows, figsize, return_fig, save_to, **kwargs)


def show_image_results(learn, ds_type: DatasetType = DatasetType.Valid, rows: int = 3, figsize=None,
                       thresh: float = 0.5, return_fig: bool | None = None, save_to=None, **kwargs):
    """Up to `rows` x `rows` images of the first `ds_type` batch, titled 'prediction / target' (green
    when they agree, red otherwise)."""
    data = learn.data
    x, y = next(iter(data.dl(ds_type)))
    learn.model.eval()
    with torch.no_grad():
        out = loss_activation(learn.loss_func)(learn.model(x)).detach().float().cpu()
    x, y = data.denorm(x).cpu(), y.cpu()
    labels = data.dl(ds_type).dataset.y
    if getattr(data, "pixel_item", None) is not None and out.dim() == 4:
        return _segment_results(x, y, out, data, rows, figsize, return_fig, save_to, **kwargs)
    regression = data.classes is None and not data.multi_label
    items = []
    for i in range(min(len(x), rows * rows)):
        pred, _ = prediction_item(out[i], data.classes, data.multi_label, thresh, regression)
        items.append((Image(x[i]), labels.reconstruct(y[i]), pred))
    return _grid(items, rows, figsize, return_fig, save_to, **kwargs)


def _segment_results(x, y, out, data, rows, figsize, return_fig, save_to, **kwargs):
    """`rows` images side by side: the true mask over the image, then the predicted one (fastai v1's
    layout), coloured alike (codes 0..c-1)."""
    rows = min(rows, len(x))
    fig, axes = subplots(rows, 2, figsize=figsize or (6, 3 * rows), squeeze=False)
    vmax = max(1, (data.c or 2) - 1)
    for i in range(rows):
        for ax, mask, title in ((axes[i, 0], y[i], "Ground truth"), (axes[i, 1], out[i].argmax(0)[None], "Prediction")):
            Image(x[i]).show(ax=ax)
            data.pixel_item(mask, data.classes).show(ax=ax, vmax=vmax, title=title if i == 0 else None, **kwargs)
    fig.tight_layout()
    return finish_figure(fig, return_fig, save_to)


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


def mask_colormap(n_classes: int, cmap="tab20"):
    """A colour map with one colour per class index 0..n_classes-1 (a named map is cycled when it has
    fewer colours), so a class has the same colour in every mask drawn with the same `n_classes`."""
    import matplotlib
    from matplotlib.colors import ListedColormap

    if not isinstance(cmap, str):
        return cmap
    base = matplotlib.colormaps[cmap]
    if hasattr(base, "colors"):  # a listed map (tab20, Set1): cycle its colours
        colors = [base.colors[i % len(base.colors)] for i in range(max(n_classes, 1))]
    else:  # a continuous map (viridis): sample it evenly
        colors = [base(i / max(n_classes - 1, 1)) for i in range(max(n_classes, 1))]
    return ListedColormap(colors)


def show_mask(mask, ax=None, image=None, alpha: float = 0.5, cmap="tab20", classes=None, n_classes: int | None = None,
              legend: bool = False, figsize=(3, 3), hide_axis: bool = True, title: str | None = None, **kwargs):
    """Draw a segmentation mask (class indexes, (H, W) or (1, H, W)) as coloured regions on `ax`;
    returns the axes.

    Drawn with transparency `alpha` over what `ax` shows already, or over `image` (an `Image` or a
    (3, H, W) tensor in [0, 1]) drawn first. Colours come from `cmap`, one per class index for
    `n_classes` (default `len(classes)`, else the mask's largest index + 1), so masks drawn with the
    same classes (true and predicted) colour a class alike. `legend` lists the names (`classes`) of
    the classes present in the mask."""
    data = torch.as_tensor(getattr(mask, "data", mask)).detach().cpu()
    if data.dim() == 3 and data.shape[0] == 1:
        data = data[0]
    if data.dim() != 2:
        raise ValueError(f"show_mask needs a mask of class indexes (H, W) or (1, H, W); got shape {tuple(data.shape)}.")
    data = data.long()
    n = n_classes if n_classes is not None else (len(classes) if classes is not None else int(data.max()) + 1)
    if ax is None:
        _, ax = subplots(figsize=figsize)
    if image is not None:
        show_image(image, ax=ax, hide_axis=hide_axis)
    colours = mask_colormap(n, cmap)
    ax.imshow(data.numpy(), cmap=colours, vmin=-0.5, vmax=n - 0.5, alpha=alpha, interpolation="nearest")
    if hide_axis:
        ax.axis("off")
    if legend and classes is not None:
        from matplotlib.patches import Patch

        present = [int(c) for c in torch.unique(data).tolist() if 0 <= c < len(classes)]
        ax.legend(handles=[Patch(color=colours(c), label=str(classes[c])) for c in present],
                  loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize="small", frameon=False)
    if title is not None:
        ax.set_title(title, **kwargs)
    return ax
