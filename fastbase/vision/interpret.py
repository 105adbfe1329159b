"""Layer 6: looking at an image classifier: its top losses drawn as images, and Grad-CAM heatmaps of
where the model looked (`grad_cam`, `cam_layer`). `ClassificationInterpretation.plot_top_losses`
reaches `plot_image_top_losses` through `ImageDataBunch.plot_top_losses` (the task contract).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..core import ifnone
from ..figures import finish_figure, subplots
from ..hooks import hook_output
from ..interpret import InterpretationError
from .encoder import Encoder

__all__ = ["TOP_LOSSES_TITLE", "cam_layer", "grad_cam", "plot_confused_images", "plot_image_items",
           "plot_image_multi_top_losses", "plot_image_top_losses"]

TOP_LOSSES_TITLE = "prediction/actual/loss/probability"


def plot_image_top_losses(interp, k: int = 9, largest: bool = True, figsize=None, heatmap: bool = False,
                          heatmap_class: str = "predicted", heatmap_layer: nn.Module | None = None,
                          alpha: float = 0.6, return_fig: bool | None = None, save_to=None):
    """The `k` images of `interp` (a `ClassificationInterpretation`) with the largest (or smallest)
    losses in a grid, as the model saw them (denormalised). Each title reads 'prediction/actual / loss
    / probability of the actual class'. `heatmap` overlays Grad-CAM for the `heatmap_class`
    ('predicted' or 'actual'): where the model looked, as seen by `heatmap_layer` (default: the body's
    output, see `cam_layer`; an earlier layer gives a finer map on small images). Returns the
    Figure."""
    if heatmap_class not in ("predicted", "actual"):
        raise InterpretationError(f"heatmap_class must be 'predicted' or 'actual', got {heatmap_class!r}.")
    losses, idxs = interp.top_losses(k, largest)
    if len(idxs) == 0:
        raise InterpretationError("No items to show: k must be at least 1 and the data set not empty.")
    x = interp.model_inputs(idxs.tolist())
    images = interp.data.denorm(x).detach().float().clamp(0, 1).cpu()
    cams = None
    if heatmap:
        targets = (interp.pred_class if heatmap_class == "predicted" else interp.y_true)[idxs]
        cams = grad_cam(interp.learn.model, x, targets.to(x.device), layer=heatmap_layer)
    rows = math.ceil(math.sqrt(len(idxs)))
    cols = math.ceil(len(idxs) / rows)
    fig, axes = subplots(rows, cols, figsize=ifnone(figsize, (3 * cols, 3 * rows + 0.4)), squeeze=False)
    fig.suptitle(TOP_LOSSES_TITLE)
    for n, ax in enumerate(axes.flat):
        ax.axis("off")
        if n >= len(idxs):
            continue
        i = int(idxs[n])
        ax.imshow(images[n].permute(1, 2, 0).numpy())
        if cams is not None:
            ax.imshow(cams[n].numpy(), alpha=alpha, cmap="magma", interpolation="bilinear")
        actual, pred = int(interp.y_true[i]), int(interp.pred_class[i])
        ax.set_title(f"{interp.classes[pred]}/{interp.classes[actual]} / {float(losses[n]):.2f} / "
                     f"{float(interp.preds[i, actual]):.2f}")
    fig.tight_layout()
    return finish_figure(fig, return_fig, save_to)


def plot_image_items(interp, idxs: list[int], titles: list[str], suptitle: str | None = None, figsize=None,
                     cols: int | None = None, return_fig: bool | None = None, save_to=None):
    """Items `idxs` of `interp`'s data set as the model saw them (denormalised), in a grid of `cols`
    columns (default: about square), each with its title. Returns the Figure."""
    if not len(idxs):
        raise InterpretationError("No items to show: the list of items is empty.")
    images = interp.data.denorm(interp.model_inputs(list(idxs))).detach().float().clamp(0, 1).cpu()
    cols = cols or math.ceil(math.sqrt(len(idxs)))
    rows = math.ceil(len(idxs) / cols)
    fig, axes = subplots(rows, cols, figsize=ifnone(figsize, (3 * cols, 3 * rows + 0.4)), squeeze=False)
    if suptitle:
        fig.suptitle(suptitle)
    for n, ax in enumerate(axes.flat):
        ax.axis("off")
        if n < len(idxs):
            ax.imshow(images[n].permute(1, 2, 0).numpy().squeeze(), cmap="gray" if images.shape[1] == 1 else None)
            ax.set_title(titles[n], fontsize=9)
    fig.tight_layout()
    return finish_figure(fig, return_fig, save_to)


def plot_image_multi_top_losses(interp, samples: int = 3, figsize=(8, 8), **kwargs):
    """The `samples` images of a `MultiLabelClassificationInterpretation` with the largest losses, one
    per row, titled with predicted and actual labels and the loss."""
    losses, idxs = interp.top_losses(samples)
    titles = []
    for loss, i in zip(losses.tolist(), idxs.tolist()):
        predicted, actual = interp.labels_of(i)
        titles.append(f"predicted: {'; '.join(map(str, predicted)) or '-'}\nactual: "
                      f"{'; '.join(map(str, actual)) or '-'}\nloss {loss:.2f}")
    return plot_image_items(interp, idxs.tolist(), titles, "prediction / actual / loss", figsize, cols=1, **kwargs)


def plot_confused_images(interp, idxs: list[int], title: str, figsize=None, varlist=None):
    """`ClassConfusion`'s view for images: the pair's items in a grid, each titled with its loss."""
    titles = [f"loss {float(interp.losses[i]):.2f}" for i in idxs]
    return plot_image_items(interp, list(idxs), titles, title, figsize)


# --- Grad-CAM ---------------------------------------------------------------------------------------
def cam_layer(model: nn.Module) -> nn.Module:
    """The layer whose output Grad-CAM weighs: the body (`model[0]`) of a cnn_learner model
    (`nn.Sequential(body, head)`, the body an `Encoder` or a hand-built `nn.Sequential`), else the last
    `nn.Conv2d` of the model. A timm body's output is its last stage's map; a ViT-like timm body has
    no map (`Encoder.spatial` is False), so it gets an error that says so."""
    body = model[0] if isinstance(model, nn.Sequential) and len(model) >= 2 else None
    if isinstance(body, Encoder) and not body.spatial:
        raise InterpretationError(f"{body.name} is a transformer: its body gives pooled tokens, not a "
                                  "spatial feature map, so Grad-CAM does not apply. Use heatmap=False (or pass "
                                  "layer= a module whose output is (n, channels, h, w)).")
    if body is not None and len(list(body.children())) > 0 and any(isinstance(m, nn.Conv2d) for m in body.modules()):
        return body
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise InterpretationError(f"{type(model).__name__} has no nn.Conv2d layer, so there is no feature map for a "
                                  "heatmap; use heatmap=False or pass layer= to grad_cam.")
    return convs[-1]


def grad_cam(model: nn.Module, x: torch.Tensor, targets: torch.Tensor, layer: nn.Module | None = None) -> torch.Tensor:
    """Grad-CAM maps (n, H, W) >= 0 for model inputs `x` (n, C, H, W) and class indexes `targets` (n,):
    the feature maps A (n, K, h, w) of `layer` (default `cam_layer(model)`), weighted by the mean
    gradient of each target's score over each map, summed over K, ReLU'd and upsampled to (H, W).

    Runs the model in eval mode; parameters' `.grad` are left untouched (the gradient is taken with
    respect to the feature maps only), and the model's training mode is restored."""
    layer = ifnone(layer, cam_layer(model))
    was_training = model.training
    model.eval()
    try:
        with hook_output(layer, detach=False) as hook, torch.enable_grad():  # stored maps stay in the graph
            out = model(x.detach().requires_grad_(True))  # so the feature maps are in the graph, even when frozen
            if not isinstance(hook.stored, torch.Tensor) or hook.stored.dim() != 4:
                raise InterpretationError(f"Grad-CAM needs a 4-d feature map (n, channels, h, w) from "
                                          f"{type(layer).__name__}"
                                          "; pass layer= (a convolutional layer of the model).")
            score = out.gather(1, targets.long().view(-1, 1)).sum()
            grads = torch.autograd.grad(score, hook.stored)[0]
    finally:
        model.train(was_training)
    acts = hook.stored.detach()
    weights = grads.mean(dim=(2, 3), keepdim=True)
    cam = F.relu((weights * acts).sum(dim=1, keepdim=True))
    cam = F.interpolate(cam, size=tuple(x.shape[-2:]), mode="bilinear", align_corners=False).clamp_min(0)
    return cam[:, 0].detach().cpu()
