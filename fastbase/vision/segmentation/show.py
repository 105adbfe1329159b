"""Layer 6: drawing segmentation masks: `show_mask`, the one mask painter (a colour per class code,
the same in every mask drawn with the same classes), which `ImageSegment.show`, `show_results` and
`SegmentationInterpretation.plot_top_losses` all use, and `show_segment_results`."""
from __future__ import annotations

import torch

from ...data import DatasetType
from ...figures import finish_figure, subplots
from ..image import Image
from ..show import batch_predictions, show_image

__all__ = ["mask_colormap", "show_mask", "show_segment_results"]


def mask_colormap(n_classes: int, cmap="tab20"):
    """A colour map with one colour per class index 0..n_classes-1 (a named map is cycled when it has
    fewer colours), so a class has the same colour in every mask drawn with the same `n_classes`."""
    import matplotlib
    from matplotlib.colors import ListedColormap

    if not isinstance(cmap, str):
        return cmap
    base = matplotlib.colormaps[cmap]
    n = max(n_classes, 1)
    if isinstance(base, ListedColormap):  # a listed map (tab20, Set1): cycle its colours
        colors = [base.colors[i % len(base.colors)] for i in range(n)]
    else:  # a continuous map (viridis): sample it evenly
        colors = [base(i / max(n_classes - 1, 1)) for i in range(n)]
    return ListedColormap(colors, name=cmap)


def _codes(mask) -> torch.Tensor:
    """The (H, W) int64 class codes of a mask given as an item (its `data`) or a tensor."""
    codes = mask.data if isinstance(mask, Image) else mask
    codes = torch.as_tensor(codes).detach().cpu()
    if codes.dim() == 3 and codes.shape[0] == 1:
        codes = codes[0]
    if codes.dim() != 2:
        raise ValueError(f"show_mask needs a mask of class indexes (H, W) or (1, H, W); "
                         f"got shape {tuple(codes.shape)}.")
    return codes.long()


def show_mask(mask, ax=None, image=None, alpha: float | None = None, cmap="tab20", classes=None,
              n_classes: int | None = None, legend: bool = False, figsize=(3, 3), hide_axis: bool = True,
              title: str | None = None, **kwargs):
    """Draw a segmentation mask (class indexes, (H, W) or (1, H, W), or an `ImageSegment`) as coloured
    regions on `ax`; returns the axes.

    Drawn over what `ax` shows already, or over `image` (an `Image` or a (3, H, W) tensor in [0, 1])
    drawn first, with transparency `alpha` (default 0.5 over an image, 1 alone). Colours come from
    `cmap`, one per class index for `n_classes` (default `len(classes)`, else the mask's largest
    index + 1), so masks drawn with the same classes (true and predicted) colour a class alike.
    `legend` lists the names (`classes`) of the classes present in the mask."""
    codes = _codes(mask)
    n = n_classes if n_classes is not None else (len(classes) if classes is not None else int(codes.max()) + 1)
    if ax is None:
        _, ax = subplots(figsize=figsize)
    if image is not None:
        show_image(image, ax=ax, hide_axis=hide_axis)
    alpha = (0.5 if ax.images else 1.0) if alpha is None else alpha
    colours = mask_colormap(n, cmap)
    ax.imshow(codes.numpy(), cmap=colours, vmin=-0.5, vmax=n - 0.5, alpha=alpha, interpolation="nearest")
    if hide_axis:
        ax.axis("off")
    if legend and classes is not None:
        from matplotlib.patches import Patch

        present = [int(c) for c in torch.unique(codes).tolist() if 0 <= c < len(classes)]
        ax.legend(handles=[Patch(color=colours(c), label=str(classes[c])) for c in present],
                  loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize="small", frameon=False)
    if title is not None:
        ax.set_title(title, **kwargs)
    return ax


def show_segment_results(learn, ds_type: DatasetType = DatasetType.Valid, rows: int = 3, figsize=None,
                         return_fig: bool | None = None, save_to=None, **kwargs):
    """`rows` images of the first `ds_type` batch side by side: the true mask over the image, then the
    predicted one (fastai v1's layout), coloured alike (`show_mask` over the data's classes)."""
    data = learn.data
    x, y, out = batch_predictions(learn, ds_type)
    rows = min(rows, len(x))
    fig, axes = subplots(rows, 2, figsize=figsize or (6, 3 * rows), squeeze=False)
    for i in range(rows):
        for ax, mask, title in ((axes[i, 0], y[i], "Ground truth"), (axes[i, 1], out[i].argmax(0), "Prediction")):
            show_mask(mask, ax=ax, image=Image(x[i]), classes=data.classes, n_classes=data.c,
                      title=title if i == 0 else None, **kwargs)
    fig.tight_layout()
    return finish_figure(fig, return_fig, save_to)
