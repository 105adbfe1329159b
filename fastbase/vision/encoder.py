"""The one interface of an image body (an encoder): what `cnn_learner`, `unet_learner` and `DynamicUnet`,
the activation and Grad-CAM views and the detectors ask of the network that turns images into feature maps.

An `Encoder` is an `nn.Module` with
- `forward(x)`: the final feature map (N, C, h, w), the one a classifier head pools;
- `stages()`: its stages, shallow to deep, and `features(x, keep=None)`: their output maps (the last
  one is the final map);
- `feature_shapes(size)`, `channels(size)`, `strides(size)` and `pyramid(size)`: what those maps are
  for an input of `size` (one probe, in eval mode, without gradients), `out_channels()`: the final
  map's channels;
- `layer_groups(split)`: its parameters in groups cut before the stages indexed by `split` (default
  `default_split()`), the groups discriminative learning rates and `freeze_to` use.

Three kinds implement it. Each keeps the state-dict keys its models had before the interface, so
saved and exported learners load unchanged:
- `SequentialEncoder`: an `nn.Sequential` whose children are the stages (torchvision bodies from
  `create_body`, any hand-built `nn.Sequential`); it indexes, slices and runs as an `nn.Sequential`.
- `PyramidEncoder`: a module that returns its feature maps as a list, shallow to deep (timm's
  `features_only` models from `timm_features_encoder`, a module of your own), or one map. Its stages
  are those named by timm's `feature_info` when it has one.
- `TimmBody` (`fastbase.vision.timm_models`): a timm classifier without classifier and pool.

`as_encoder(module)` makes an `Encoder` of any of these.
"""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Collection
from itertools import pairwise

import torch
from torch import nn

from ..core import FastbaseError
from ..hooks import dummy_batch, num_features_model

__all__ = ["Encoder", "PyramidEncoder", "SequentialEncoder", "as_encoder", "default_stage_split", "resolution_ends",
           "stage_layer_groups"]


def _size_hw(size) -> tuple[int, int]:
    size = (size, size) if isinstance(size, int) else tuple(int(s) for s in size)
    if len(size) != 2 or min(size) < 1:
        raise FastbaseError(f"An image size should be an int or (height, width), got {size!r}.")
    return size


def resolution_ends(shapes) -> list[int]:
    """Indexes of the maps that are the last at their resolution (the next map has another spatial
    size), and the last map: the stages a feature pyramid (a U-Net's skips, a detector's levels) reads."""
    spatial = [tuple(s[-2:]) for s in shapes]
    return [i for i in range(len(spatial)) if i == len(spatial) - 1 or spatial[i] != spatial[i + 1]]


class Encoder(nn.Module):
    """The interface of an image body: see the module docstring. Subclasses give `stages` and
    `features` (and `forward` when running the stages in order is not how the final map is made)."""

    spatial = True  # False for a body whose output is a pooled token (ViT-like timm models): no maps
    _name = ""  # what error messages call it (a timm architecture's name); default: the class name

    @property
    def name(self) -> str:
        return self._name or type(self).__name__

    def stages(self) -> list[nn.Module]:
        """The modules whose outputs `features` returns, shallow to deep."""
        raise NotImplementedError

    def features(self, x: torch.Tensor, keep: Collection[int] | None = None) -> list[torch.Tensor | None]:
        """The maps of the stages for `x`, shallow to deep. `keep`: the indexes of the maps wanted (the
        last one always is); an encoder may put None for the others, so they are freed early."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x, keep=())[-1]

    def feature_shapes(self, size=(64, 64)) -> list[torch.Size]:
        """The shapes of the `features` maps for one input of `size` (int or (height, width)), probed
        in eval mode without gradients; the encoder's mode is put back."""
        was_training = self.training
        self.eval()
        try:
            with torch.no_grad():
                return [t.shape for t in self.features(dummy_batch(self, _size_hw(size)))]
        finally:
            self.train(was_training)

    def channels(self, size=(64, 64)) -> list[int]:
        """The channels of each stage's map."""
        return [s[1] for s in self.feature_shapes(size)]

    def strides(self, size=(64, 64)) -> list[int]:
        """How many input pixels one pixel of each stage's map spans (its downsampling), at `size`."""
        height = _size_hw(size)[0]
        return [max(1, round(height / s[-2])) for s in self.feature_shapes(size)]

    def pyramid(self, size=(64, 64)) -> list[int]:
        """Indexes of the stages a feature pyramid reads at `size`: the last one at each resolution
        (resnet: after the stem's ReLU, layer1..layer4, at strides 2..32)."""
        return resolution_ends(self.feature_shapes(size))

    def out_channels(self) -> int:
        """The channels of the final map (`forward`'s), which a classifier head pools."""
        return self.channels()[-1]

    def default_split(self) -> tuple[int, ...]:
        """Where the layer groups are cut when `layer_groups` gets no split."""
        return ()

    def layer_groups(self, split: tuple[int, ...] | None = None) -> list[nn.Module]:
        """The encoder as parameter groups, cut before the stages indexed by `split`."""
        return [self]


class SequentialEncoder(nn.Sequential, Encoder):
    """An `nn.Sequential` body as an `Encoder`: each child is a stage (torchvision's resnet: conv1, bn1,
    relu, maxpool, layer1..layer4), `features` gives every child's output. Its state-dict keys are the
    `nn.Sequential`'s, and it indexes, slices (to a `SequentialEncoder`) and runs as one."""

    def stages(self) -> list[nn.Module]:
        return list(self)

    def features(self, x: torch.Tensor, keep: Collection[int] | None = None) -> list[torch.Tensor | None]:
        maps: list[torch.Tensor | None] = []
        last = len(self) - 1
        for i, stage in enumerate(self):
            x = stage(x)
            maps.append(x if keep is None or i in keep or i == last else None)
        return maps

    def out_channels(self) -> int:
        return num_features_model(self)  # tries larger inputs when a small one is too small for the body

    def layer_groups(self, split: tuple[int, ...] | None = None) -> list[nn.Module]:
        """[self[:s0], self[s0:s1], ..., self[sk:]] for `split` (s0, ..., sk); no split: one group."""
        bounds = [0, *(split or ()), len(self)]
        if sorted(bounds) != bounds or len(set(bounds)) != len(bounds):
            raise FastbaseError(f"Split points {split} must increase inside the body's {len(self)} children.")
        return [self[a:b] for a, b in pairwise(bounds)]


def _stage_names(module: nn.Module) -> tuple[list[str], list[int]]:
    """The submodule names and strides of the stages timm's `feature_info` lists ('stages.0' is found as
    registered, also when timm flattened it to 'stages_0'); none for a module without one."""
    info = getattr(module, "feature_info", None)
    if not (callable(getattr(info, "module_name", None)) and callable(getattr(info, "reduction", None))):
        return [], []
    names = []
    for stage in info.module_name():
        try:
            module.get_submodule(stage)
            names.append(stage)
        except AttributeError:
            names.append(stage.replace(".", "_"))
    return names, [int(r) for r in info.reduction()]


class PyramidEncoder(Encoder):
    """A module that returns its feature maps as a list, shallow to deep (timm's `features_only`
    models), or a single map, as an `Encoder`. `forward` gives the deepest map, `features` the list.

    The module's parameters, buffers and children are registered as this encoder's own (the same
    objects), so its state-dict keys are the module's: a U-Net saved with the bare module loads into
    one built with the encoder. Stages and layer groups follow timm's `feature_info` when the module
    has one (a cut before the first stage past stride 8 by default); otherwise the stages are the
    module's children and the encoder is one layer group."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.__dict__["net"] = module  # not registered as a child: its parts are registered directly below
        self._parameters, self._buffers, self._modules = module._parameters, module._buffers, module._modules
        self._non_persistent_buffers_set = module._non_persistent_buffers_set
        self.stage_names, self.reductions = _stage_names(module)
        cfg = getattr(module, "pretrained_cfg", None)
        self._name = (cfg or {}).get("architecture") or type(module).__name__

    def train(self, mode: bool = True):
        self.net.training = mode  # the wrapped module's own flag; its children are ours
        return super().train(mode)

    def stages(self) -> list[nn.Module]:
        return [self.get_submodule(n) for n in self.stage_names] if self.stage_names else list(self.children())

    def features(self, x: torch.Tensor, keep: Collection[int] | None = None) -> list[torch.Tensor]:
        out = self.net(x)
        if isinstance(out, torch.Tensor):
            return [out]
        if not isinstance(out, (list, tuple)) or not out or not all(isinstance(t, torch.Tensor) for t in out):
            raise FastbaseError(f"The encoder {self.name} should return its feature maps (a tensor or a list of them, "
                                f"shallow to deep); it returns {type(out).__name__}.")
        return list(out)

    def default_split(self) -> tuple[int, ...]:
        return default_stage_split(self.reductions)

    def layer_groups(self, split: tuple[int, ...] | None = None) -> list[nn.Module]:
        """Groups cut between the stages of `feature_info` (`stage_layer_groups`); without stages, one."""
        if not self.stage_names:
            return [self]
        return stage_layer_groups(self, self.stage_names, self.reductions, split or (), self.name)


def as_encoder(module: nn.Module) -> Encoder:
    """`module` as an `Encoder`: itself when it is one, an `nn.Sequential` as a `SequentialEncoder` (the
    same children under the same names), any other module as a `PyramidEncoder`."""
    if isinstance(module, Encoder):
        return module
    if isinstance(module, nn.Sequential):
        return SequentialEncoder(OrderedDict(module._modules))
    if not isinstance(module, nn.Module):
        raise FastbaseError(f"An encoder must be an nn.Module; got {type(module).__name__}.")
    return PyramidEncoder(module)


def default_stage_split(reductions: list[int]) -> tuple[int, ...]:
    """Where a second group starts among stages of these strides: at the first stage past stride 8
    (resnet: layer3, as in fastai), or in the middle of the stages when all have one stride (ViT blocks)."""
    first = next((i for i, r in enumerate(reductions) if r > 8), 0)
    if first == 0:
        first = len(reductions) // 2
    return (first,) if 0 < first < len(reductions) else ()


def stage_layer_groups(model: nn.Module, stage_names: list[str], reductions: list[int], split=(),
                       name: str = "") -> list[nn.Module]:
    """`model`'s modules and parameters in groups cut after the stages before each index of `split`
    (default `default_stage_split`): group k holds everything registered after stage split[k-1]-1 and
    up to the next cut. `stage_names` are submodule names of `model`, in forward order."""
    split = tuple(split) or default_stage_split(reductions)
    if any(not 0 < s <= len(stage_names) for s in split) or sorted(set(split)) != list(split):
        raise FastbaseError(f"Split points {split} for {name} must increase inside its "
                            f"{len(stage_names)} stages {stage_names}.")
    cuts = [stage_names[s - 1] for s in split]
    groups: list[list] = [[] for _ in range(len(cuts) + 1)]
    _partition(model, "", cuts, [0], groups)
    return [nn.Sequential(*[g for g in group if isinstance(g, nn.Module)],
                          nn.ParameterList([g for g in group if isinstance(g, nn.Parameter)]))
            for group in groups]


def _partition(module: nn.Module, prefix: str, cuts: list[str], state: list[int], groups: list[list]) -> None:
    """Put `module`'s own parameters and children into `groups[state[0]]`, moving to the next group
    after each module named in `cuts` and descending into the children that contain a cut."""
    groups[state[0]] += list(module.parameters(recurse=False))
    for name, child in module.named_children():
        full = prefix + name
        cut = cuts[state[0]] if state[0] < len(cuts) else None
        if cut is not None and cut.startswith(full + "."):
            _partition(child, full + ".", cuts, state, groups)
            continue
        groups[state[0]].append(child)
        if full == cut:
            state[0] += 1
