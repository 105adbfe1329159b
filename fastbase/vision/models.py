"""Architectures for transfer learning: torchvision models under fastai's names, with the metadata
`cnn_learner` needs (where to cut the body, how to split it into layer groups, ImageNet stats),
and pretrained weights loaded through torchvision's own weights API and the torch hub cache.

`models.resnet34` etc. are plain functions `arch(pretrained=False, **kwargs) -> nn.Module`, so any
other factory with that shape (or a torchvision one) can be passed to `cnn_learner` too: an
unknown architecture is cut at its last pooling layer and split into body and head.
"""
from __future__ import annotations

import os
import urllib.error
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import wraps

import torch
import torchvision
from torch import nn

from ..core import FastbaseError, Path, get_config
from ..data import imagenet_stats
from .xresnet import WideResNet, XResNet, wrn_22, xresnet18, xresnet34, xresnet50, xresnet101, xresnet152

__all__ = [
    "ArchMeta",
    "PretrainedWeightsError",
    "arch_meta",
    "arch_name",
    "load_pretrained",
    "model_meta",
    "weights_file",
]


class PretrainedWeightsError(FastbaseError, RuntimeError):
    """Pretrained weights that are not in the torch hub cache and could not be downloaded."""


@dataclass(frozen=True)
class ArchMeta:
    """How to turn a classifier into a body: `body` takes the full model and returns the feature
    extractor as an `nn.Sequential`; `split` lists the body indices where new layer groups start
    (the head is always the last group)."""
    name: str
    body: Callable[[nn.Module], nn.Sequential]
    split: tuple[int, ...] = ()
    stats: tuple = field(default=imagenet_stats)
    weights: str = "IMAGENET1K_V1"  # the torchvision weights that `pretrained=True` means
    # train channels-last on the CPU by default (faster there: bench/cpu_speed.py, bench/RESULTS.md)
    channels_last_cpu: bool = False


def _children_until(cut: int) -> Callable[[nn.Module], nn.Sequential]:
    return lambda model: nn.Sequential(*list(model.children())[:cut])


def _features(model: nn.Module) -> nn.Sequential:
    return nn.Sequential(*model.features.children())


def _regnet_body(model: nn.Module) -> nn.Sequential:
    return nn.Sequential(model.stem, *model.trunk_output.children())


def _wide_resnet_body(model: nn.Module) -> nn.Sequential:
    return nn.Sequential(*list(model.features.children())[:-3])  # up to the last BatchNorm and ReLU


# Splits follow fastai v1 where it had them (resnet after layer2, densenet/vgg/squeezenet/alexnet at
# the same depth) and put the cut near the middle of the body elsewhere.
_TABLE = {
    **{n: (_children_until(-2), (6,)) for n in ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152",
                                               "resnext50_32x4d", "wide_resnet50_2")},
    **{n: (_features, (8,)) for n in ("densenet121", "densenet169", "densenet201", "densenet161")},
    "vgg16_bn": (_features, (22,)), "vgg19_bn": (_features, (26,)),
    "squeezenet1_0": (_features, (6,)), "squeezenet1_1": (_features, (6,)), "alexnet": (_features, (6,)),
    "mobilenet_v2": (_features, (10,)), "mobilenet_v3_small": (_features, (7,)),
    "mobilenet_v3_large": (_features, (9,)),
    **{f"efficientnet_b{i}": (_features, (5,)) for i in range(8)},
    "convnext_tiny": (_features, (4,)), "convnext_small": (_features, (4,)),
    # random-weight families: the body before the pooling, split where the second stage (group) starts
    **{f"xresnet{d}": (_children_until(-3), (6,)) for d in (18, 34, 50, 101, 152)},
    "wrn_22": (_wide_resnet_body, (4,)),
    **{n: (_regnet_body, (3,)) for n in ("regnet_y_400mf", "regnet_y_800mf", "regnet_y_1_6gf", "regnet_x_400mf",
                                         "regnet_x_800mf", "regnet_x_1_6gf")},
}
# Families whose training step is faster channels-last on a CPU (`python bench/cpu_speed.py
# --train-only`; figures in bench/RESULTS.md). Left contiguous: convnext (slower that way) and the
# families not measured.
CHANNELS_LAST_CPU_FAMILIES = ("mobilenet", "efficientnet", "regnet", "densenet", "resnet")  # timm's names too

model_meta: dict[str, ArchMeta] = {
    name: ArchMeta(name, body, split, channels_last_cpu=name.startswith(CHANNELS_LAST_CPU_FAMILIES))
    for name, (body, split) in _TABLE.items()
}


def arch_name(arch) -> str:
    """The registry name of an architecture function (ours or torchvision's), else its `__name__`."""
    return getattr(arch, "arch_name", None) or getattr(arch, "__name__", type(arch).__name__)


def arch_meta(arch) -> ArchMeta | None:
    """Metadata for a known architecture, None for an unknown one (which gets the default cut/split).
    An architecture object may carry its own (`meta`, as timm's do: `timm_models.TimmArch`)."""
    own = getattr(arch, "meta", None)
    return own if isinstance(own, ArchMeta) else model_meta.get(arch_name(arch))


def weights_file(weights) -> Path:
    """Where torchvision keeps (or would download) a weights enum's file: `$TORCH_HOME/hub/checkpoints/`."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(weights.url)


def load_pretrained(name: str, weights_name: str | bool = True, **kwargs) -> nn.Module:
    """Build torchvision's `name` with its pretrained weights, through torchvision's own loader.

    The file comes from the torch hub cache; when it is absent, torchvision downloads it unless
    fastbase is offline. Failing both, the error names the file, the folder to put it in, and
    `pretrained=False`. Never falls back to random weights silently.
    """
    enum = torchvision.models.get_model_weights(name)
    if weights_name is True:
        weights_name = model_meta[name].weights if name in model_meta else "DEFAULT"
    weights = enum[weights_name] if weights_name != "DEFAULT" else enum.DEFAULT
    target = weights_file(weights)

    def missing(reason: str) -> PretrainedWeightsError:
        return PretrainedWeightsError(
            f"Pretrained weights for {name} ({weights}) are not in the torch hub cache and {reason}. "
            f"Put the file {target.name} into {target.parent} (set TORCH_HOME to move the cache; "
            f"it downloads from {weights.url}), or pass pretrained=False to start from random weights.")

    if not target.is_file() and get_config().offline:
        raise missing("fastbase is offline (FASTBASE_OFFLINE)")
    try:
        return torchvision.models.get_model(name, weights=weights, **kwargs)
    except (urllib.error.URLError, ConnectionError, TimeoutError) as e:
        raise missing(f"could not be downloaded ({e})") from e


def _torchvision_arch(name: str):
    tv_fn = getattr(torchvision.models, name)

    @wraps(tv_fn)
    def arch(pretrained: bool | str = False, **kwargs) -> nn.Module:
        if pretrained:
            return load_pretrained(name, pretrained, **kwargs)
        return tv_fn(weights=None, **kwargs)

    arch.__name__ = arch.__qualname__ = arch.arch_name = name
    arch.__module__ = "fastbase.vision.models"
    arch.__doc__ = (f"torchvision's {name}; `pretrained=True` loads its {model_meta[name].weights} ImageNet "
                    "weights from the torch hub cache (or a weights name such as 'DEFAULT').")
    return arch


# The architectures, under torchvision's (and fastai's) names.
resnet18 = _torchvision_arch("resnet18")
resnet34 = _torchvision_arch("resnet34")
resnet50 = _torchvision_arch("resnet50")
resnet101 = _torchvision_arch("resnet101")
resnet152 = _torchvision_arch("resnet152")
resnext50_32x4d = _torchvision_arch("resnext50_32x4d")
wide_resnet50_2 = _torchvision_arch("wide_resnet50_2")
densenet121 = _torchvision_arch("densenet121")
densenet169 = _torchvision_arch("densenet169")
densenet201 = _torchvision_arch("densenet201")
densenet161 = _torchvision_arch("densenet161")
vgg16_bn = _torchvision_arch("vgg16_bn")
vgg19_bn = _torchvision_arch("vgg19_bn")
squeezenet1_0 = _torchvision_arch("squeezenet1_0")
squeezenet1_1 = _torchvision_arch("squeezenet1_1")
alexnet = _torchvision_arch("alexnet")
mobilenet_v2 = _torchvision_arch("mobilenet_v2")
mobilenet_v3_small = _torchvision_arch("mobilenet_v3_small")
mobilenet_v3_large = _torchvision_arch("mobilenet_v3_large")
efficientnet_b0 = _torchvision_arch("efficientnet_b0")
efficientnet_b1 = _torchvision_arch("efficientnet_b1")
efficientnet_b2 = _torchvision_arch("efficientnet_b2")
efficientnet_b3 = _torchvision_arch("efficientnet_b3")
efficientnet_b4 = _torchvision_arch("efficientnet_b4")
efficientnet_b5 = _torchvision_arch("efficientnet_b5")
efficientnet_b6 = _torchvision_arch("efficientnet_b6")
efficientnet_b7 = _torchvision_arch("efficientnet_b7")
convnext_tiny = _torchvision_arch("convnext_tiny")
convnext_small = _torchvision_arch("convnext_small")
regnet_y_400mf = _torchvision_arch("regnet_y_400mf")
regnet_y_800mf = _torchvision_arch("regnet_y_800mf")
regnet_y_1_6gf = _torchvision_arch("regnet_y_1_6gf")
regnet_x_400mf = _torchvision_arch("regnet_x_400mf")
regnet_x_800mf = _torchvision_arch("regnet_x_800mf")
regnet_x_1_6gf = _torchvision_arch("regnet_x_1_6gf")

__all__ += [
    "alexnet", "convnext_small", "convnext_tiny", "densenet121", "densenet161", "densenet169", "densenet201",
    "efficientnet_b0", "efficientnet_b1", "efficientnet_b2", "efficientnet_b3", "efficientnet_b4", "efficientnet_b5",
    "efficientnet_b6", "efficientnet_b7", "mobilenet_v2", "mobilenet_v3_large", "mobilenet_v3_small",
    "regnet_x_1_6gf", "regnet_x_400mf", "regnet_x_800mf", "regnet_y_1_6gf", "regnet_y_400mf", "regnet_y_800mf",
    "resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "resnext50_32x4d", "squeezenet1_0", "squeezenet1_1",
    "vgg16_bn", "vgg19_bn", "wide_resnet50_2",
]
__all__ += ["WideResNet", "XResNet", "wrn_22", "xresnet18", "xresnet34", "xresnet50", "xresnet101", "xresnet152"]
