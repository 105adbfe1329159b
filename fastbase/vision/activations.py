"""Looking inside a trained (or pretrained) CNN: what each stage of the body makes of one image
(`show_activations`), and what the filters of a convolution look like (`show_filters`).

Early layers of an ImageNet body respond to edges and colour blobs, later ones to textures and
parts; a body whose maps are flat or whose first filters are noise has not learned (or was not
loaded). Both functions return a matplotlib Figure and draw headless; matplotlib is imported in them.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from ..core import FastbaseError
from ..hooks import hook_outputs
from .encoder import Encoder, as_encoder

__all__ = ["body_of", "show_activations", "show_filters", "stage_outputs"]


def body_of(model: nn.Module) -> list[nn.Module]:
    """The body's modules in order: for a `cnn_learner` model (body, head), the stages of the body
    (`Encoder.stages`: a torchvision body's children, a timm body's `feature_info` stages), else the
    model's own children."""
    if isinstance(model, nn.Sequential) and len(model) == 2 and isinstance(model[0], (Encoder, nn.Sequential)):
        return as_encoder(model[0]).stages()
    return list(model.children()) or [model]


def _last_chain(module: nn.Module) -> list[nn.Module]:
    """`module`, its last child, that one's last child...: a layer group that is a slice of the body
    (`body[a:b]`) is never called itself, but its last module is, and gives the same output."""
    chain = [module]
    while isinstance(chain[-1], nn.Sequential) and len(chain[-1]):
        chain.append(chain[-1][-1])
    return chain


def stage_outputs(model: nn.Module, x: torch.Tensor, modules=None) -> list[tuple[str, torch.Tensor]]:
    """[(name, output (C, H, W))] of `modules` for one image batch `x` (1, 3, H, W), in eval mode.

    `modules` default: the end of every stage of the body, i.e. each body module after which the
    spatial size changes, and the last one (resnet: relu, layer1..layer4). Outputs that are not
    feature maps (e.g. a head's) are left out."""
    body = body_of(model)
    targets = body if modules is None else [body[m] if isinstance(m, int) else m for m in modules]
    names = {id(m): n for n, m in model.named_modules()}
    watched = [m for target in targets for m in _last_chain(target)]
    was_training = model.training
    model.eval()
    try:
        with hook_outputs(watched) as hooks, torch.inference_mode():
            model(x)
    finally:
        model.train(was_training)
    found = {id(m): out for m, out in zip(watched, hooks.stored) if out is not None}
    outputs = []
    for target in targets:
        out = next((found[id(m)] for m in _last_chain(target) if id(m) in found), None)
        if isinstance(out, torch.Tensor) and out.dim() == 4:
            name = f"{names.get(id(target), '')} {type(target).__name__}".strip()
            outputs.append((name, out[0].detach().float().cpu()))
    if modules is None:  # keep the last module of each spatial size
        outputs = [o for i, o in enumerate(outputs) if i == len(outputs) - 1 or
                   o[1].shape[-2:] != outputs[i + 1][1].shape[-2:]]
    if not outputs:
        raise FastbaseError("None of the chosen modules outputs feature maps (batch, channels, height, width); "
                            "pass layer_groups= with convolutional parts of the body.")
    return outputs


def show_activations(learn, img, layer_groups=None, n_channels: int = 6, figsize=None):
    """Feature maps of one image after each body stage: a row per stage with the `n_channels` most
    active channels (highest mean), the image itself top left. `img` is anything `learn.predict`
    takes (a file, a PIL image, a tensor). `layer_groups`: modules or body indices to show instead of
    the stages (e.g. `learn.layer_groups[:-1]`). Returns the Figure."""
    import matplotlib.pyplot as plt

    if n_channels < 1:
        raise FastbaseError(f"n_channels must be at least 1, got {n_channels}.")
    x, _ = learn.data.one_item(img)
    stages = stage_outputs(learn.model, x, layer_groups)
    cols = n_channels + 1
    fig, axes = plt.subplots(len(stages), cols, squeeze=False,
                             figsize=figsize or (1.8 * cols, 1.9 * len(stages)))
    picture = learn.data.denorm(x)[0].detach().float().cpu().clamp(0, 1)
    axes[0, 0].imshow(picture.permute(1, 2, 0).numpy())
    axes[0, 0].set_title("input", fontsize=8)
    axes[0, 0].axis("off")
    for row, (name, maps) in enumerate(stages):
        if row:
            fig.delaxes(axes[row, 0])
        strongest = maps.mean(dim=(1, 2)).argsort(descending=True)[:n_channels].tolist()
        for col in range(1, cols):
            ax = axes[row, col]
            if col > len(strongest):
                fig.delaxes(ax)
                continue
            ax.imshow(maps[strongest[col - 1]].numpy(), cmap="viridis")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"ch {strongest[col - 1]}", fontsize=7)
            if col == 1:
                ax.set_ylabel(f"{name}\n{tuple(maps.shape)}", fontsize=7)
    fig.suptitle("activations after each stage (strongest channels)", fontsize=9)
    fig.tight_layout()
    return fig


def show_filters(learn, layer: int = 0, max_filters: int = 64, figsize=None):
    """The filters of the `layer`-th convolution of the model (0: the first) as small images: RGB for
    a convolution on the 3 input channels, grey (mean over input channels) deeper in. Each filter is
    scaled to its own min..max. Shows up to `max_filters`. Returns the Figure."""
    import matplotlib.pyplot as plt

    convs = [(name, m) for name, m in learn.model.named_modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise FastbaseError("The model has no nn.Conv2d layer, so there are no filters to show.")
    if not -len(convs) <= layer < len(convs):
        raise FastbaseError(f"layer={layer}, but the model has {len(convs)} convolutions (0..{len(convs) - 1}).")
    name, conv = convs[layer]
    weight = conv.weight.detach().float().cpu()[:max_filters]  # (out, in, kh, kw)
    rgb = weight.shape[1] == 3
    images = weight if rgb else weight.mean(dim=1, keepdim=True)
    low = images.amin(dim=(1, 2, 3), keepdim=True)
    span = (images.amax(dim=(1, 2, 3), keepdim=True) - low).clamp_min(1e-8)
    images = (images - low) / span
    n = len(images)
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, squeeze=False, figsize=figsize or (1.1 * cols, 1.1 * rows + 0.6))
    for i, ax in enumerate(axes.flat):
        if i >= n:
            fig.delaxes(ax)
            continue
        if rgb:
            ax.imshow(images[i].permute(1, 2, 0).numpy(), interpolation="nearest")
        else:
            ax.imshow(images[i, 0].numpy(), cmap="gray", interpolation="nearest")
        ax.axis("off")
    kind = "RGB" if rgb else f"mean of {weight.shape[1]} input channels"
    fig.suptitle(f"{name or 'conv'}: {n} of {conv.out_channels} filters {tuple(weight.shape[-2:])}, {kind}",
                 fontsize=9)
    fig.tight_layout()
    return fig
