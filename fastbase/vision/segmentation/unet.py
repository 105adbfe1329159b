"""U-Nets for segmentation (and other image-to-image tasks): `DynamicUnet` builds a decoder for any
encoder cut from a classifier, and `unet_learner` (fastai v1's name and arguments) wraps one in a
Learner the way `cnn_learner` does for a classifier: pretrained body, frozen at first, layer groups
for discriminative learning rates, the same BatchNorm defaults, and a `model_spec` for `export`.

The encoder is an `Encoder` (`fastbase.vision.encoder`; any module is made one by `as_encoder`), read
one way: `encoder.features(x)`, its stage maps from shallow to deep. The decoder is sized by probing
(`Encoder.feature_shapes`, one dummy batch): every map that is the last at its resolution (the next
changes the spatial size) becomes a skip connection, the deepest feeds the middle. For a body from
`create_body` (a `SequentialEncoder`) the stages are its children; for timm's `features_only` models
(`PyramidEncoder`: what `unet_learner(data, 'timm:NAME')` uses), one map per stride. Unlike fastai v1,
the model keeps no hooks afterwards: `forward` asks the encoder for the maps and keeps only the skip
outputs, so the model copies, pickles, runs under DDP and in several threads like any other module.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ...core import FastbaseError, ifnone
from ...export import model_spec
from ...layers import (
    NormType,
    PixelShuffle_ICNR,
    SigmoidRange,
    batchnorm_2d,
    conv_layer,
    in_channels,
    relu,
    res_block,
)
from ...learner import Learner
from ...losses import CrossEntropyFlat
from ..encoder import PyramidEncoder, as_encoder, resolution_ends
from ..learner import (
    body_layer_groups,
    create_body,
    pretrained_learner,
    resolve_pretrained_arch,
)
from ..timm_models import (
    TimmArch,
    arch_ref,
    resolve_arch,
    timm_features_encoder,
)

__all__ = ["DynamicUnet", "UnetBlock", "build_unet_model", "unet_layer_groups", "unet_learner"]


def _size_hw(size) -> tuple[int, int]:
    size = (size, size) if isinstance(size, int) else tuple(int(s) for s in size)
    if len(size) != 2 or min(size) < 1:
        raise FastbaseError(f"img_size should be an int or (height, width), got {size!r}.")
    return size


def skip_indices(sizes: Sequence[torch.Size]) -> list[int]:
    """Indexes of the encoder's maps a skip connection reads: the last at each resolution
    (`resolution_ends`) but the deepest, which feeds the middle. `sizes`: `Encoder.feature_shapes`."""
    return resolution_ends(sizes)[:-1]


class UnetBlock(nn.Module):
    """One decoder step: upsample `up_in_c` channels to twice the size and half the channels
    (`PixelShuffle_ICNR`), join the skip connection (`x_in_c` channels, BatchNorm first), ReLU, two
    `conv_layer`s. (bs, up_in_c, h, w), (bs, x_in_c, H, W) -> (bs, n_out, H, W): the upsampled map
    is resized to the skip's size when they differ (odd sizes). `final_div` (fastai v1's name) keeps
    the joined channels, `up_in_c // 2 + x_in_c`; False halves them (the last block).

    fastai v1's block read the skip from a hook stored in it; here it is `forward`'s second argument."""

    def __init__(self, up_in_c: int, x_in_c: int, final_div: bool = True, blur: bool = False,
                 leaky: float | None = None, self_attention: bool = False, norm_type: NormType | None = None):
        super().__init__()
        self.shuf = PixelShuffle_ICNR(up_in_c, up_in_c // 2, blur=blur, leaky=leaky, norm_type=norm_type)
        self.bn = batchnorm_2d(x_in_c)
        self.relu = relu(leaky=leaky)  # registered in the order forward uses them, as summary() lists them
        ni = up_in_c // 2 + x_in_c
        self.n_out = ni if final_div else ni // 2
        self.conv1 = conv_layer(ni, self.n_out, leaky=leaky, norm_type=norm_type)
        self.conv2 = conv_layer(self.n_out, self.n_out, leaky=leaky, norm_type=norm_type,
                                self_attention=self_attention)

    def forward(self, up_in: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        up = self.shuf(up_in)
        if up.shape[-2:] != skip.shape[-2:]:
            up = F.interpolate(up, size=skip.shape[-2:], mode="nearest")
        return self.conv2(self.conv1(self.relu(torch.cat([up, self.bn(skip)], dim=1))))


class DynamicUnet(nn.Module):
    """A U-Net on `encoder` with `n_classes` output channels at the input's size: (bs, c_in, H, W) ->
    (bs, n_classes, H, W). The encoder is an `Encoder` (from `create_body` or `timm_features_encoder`), an
    `nn.Sequential` of stages, or a module returning its feature maps as a list, shallow to deep.

    The encoder is probed once at `img_size` to find its skip connections (see the module
    docstring); the decoder is BatchNorm + ReLU, a middle pair of convolutions, one `UnetBlock` per
    skip from the deepest up, a last `PixelShuffle_ICNR` when the shallowest skip is smaller than
    the image, then (`last_cross`) the input joined again and a `res_block` (`bottle`: through half
    the channels), and a 1x1 convolution to the classes; `y_range` squashes the output into a range
    (`SigmoidRange`) for image-to-image regression. `blur` adds blurring to the upsamplings
    (`blur_final=False`: not to the last block's); `self_attention` puts `SelfAttention` in the third
    block from the end; `norm_type` goes to the decoder's convolutions (None: none, as in v1's default).

    Any input size works at run time (each upsampling is resized to its skip, the output to the
    input); `img_size` only fixes the layout, so use the training size.
    """

    def __init__(self, encoder: nn.Module, n_classes: int, img_size=(256, 256), blur: bool = False,
                 blur_final: bool = True, self_attention: bool = False, y_range: tuple[float, float] | None = None,
                 last_cross: bool = True, bottle: bool = False, norm_type: NormType | None = None):
        super().__init__()
        img_size = _size_hw(img_size)
        encoder = as_encoder(encoder)
        self.pyramid = not isinstance(encoder, nn.Sequential)  # the encoder returns its maps itself
        try:
            sizes = encoder.feature_shapes(img_size)
        except RuntimeError as e:  # e.g. a stride-2 kernel of 2 on a 1-pixel map deep in the encoder
            raise FastbaseError(f"DynamicUnet: the {type(encoder).__name__} encoder cannot take a {img_size} input "
                                f"({str(e).strip()[:200]}); train at a larger size.") from e
        if len(sizes) < 2 and isinstance(encoder, PyramidEncoder):
            got = ", ".join(str(tuple(s)) for s in sizes)
            raise FastbaseError(f"DynamicUnet needs the encoder's feature maps at several resolutions: an "
                                "nn.Sequential of its stages (create_body(arch)) or a module returning its maps as a "
                                "list (timm's features_only models: timm_features_encoder(name)); "
                                f"{encoder.name} returns one output of shape {got}. Wrap the stages: "
                                "nn.Sequential(stem, stage1, ...).")
        if any(s is None or len(s) != 4 for s in sizes):
            raise FastbaseError(f"DynamicUnet: every stage of the encoder must return a (bs, c, h, w) feature map; got "
                                f"shapes {[None if s is None else tuple(s) for s in sizes]} for a {img_size} input.")
        skips = skip_indices(sizes)
        if not skips:
            raise FastbaseError(f"DynamicUnet: no child of the encoder changes the spatial size of a {img_size} input "
                                f"(shapes {[tuple(s) for s in sizes]}), so there is nothing to upsample from.")
        self.encoder, self.skip_idxs, self.img_size = encoder, skips, img_size
        ni = sizes[-1][1]
        self.middle = nn.Sequential(batchnorm_2d(ni), nn.ReLU(),
                                    conv_layer(ni, ni * 2, norm_type=norm_type),
                                    conv_layer(ni * 2, ni, norm_type=norm_type))
        blocks, up_c = [], ni
        for i, idx in enumerate(reversed(skips)):
            last = i == len(skips) - 1
            block = UnetBlock(up_c, sizes[idx][1], final_div=not last, blur=blur and (not last or blur_final),
                              self_attention=self_attention and i == len(skips) - 3, norm_type=norm_type)
            blocks.append(block)
            up_c = block.n_out
        self.blocks = nn.ModuleList(blocks)
        self.upsample = (PixelShuffle_ICNR(up_c, norm_type=norm_type) if tuple(sizes[skips[0]][-2:]) != img_size
                         else nn.Identity())
        self.cross = None
        if last_cross:
            up_c += in_channels(encoder)
            self.cross = res_block(up_c, bottle=bottle, norm_type=norm_type)
        final = [conv_layer(up_c, n_classes, ks=1, use_activ=False, norm_type=norm_type)]
        if y_range is not None:
            final.append(SigmoidRange(*y_range))
        self.final = nn.Sequential(*final)

    @property
    def decoder(self) -> nn.ModuleList:
        """Every part after the encoder, in order (the last layer group of `unet_learner`)."""
        parts = [self.middle, self.blocks, self.upsample, *([self.cross] if self.cross is not None else []), self.final]
        return nn.ModuleList(parts)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.encoder.features(x, keep=self.skip_idxs)
        skips = [features[i] for i in self.skip_idxs]
        h = self.middle(features[-1])
        for block, skip in zip(self.blocks, reversed(skips)):
            h = block(h, skip)
        h = self.upsample(h)
        if h.shape[-2:] != x.shape[-2:]:
            h = F.interpolate(h, size=x.shape[-2:], mode="nearest")
        if self.cross is not None:
            h = self.cross(torch.cat([h, x], dim=1))
        return self.final(h)


def _norm_type(norm_type) -> NormType | None:
    if norm_type is None or isinstance(norm_type, NormType):
        return norm_type
    try:
        return NormType[norm_type]
    except KeyError:
        raise FastbaseError(f"norm_type={norm_type!r}: use one of {[t.name for t in NormType]} or None.") from None


def build_unet_model(arch: Callable | str | dict, n_classes: int, img_size, pretrained: bool | str = False, cut=None,
                     blur: bool = False, blur_final: bool = True, self_attention: bool = False, y_range=None,
                     last_cross: bool = True, bottle: bool = False, norm_type: NormType | str | None = None
                     ) -> DynamicUnet:
    """A `DynamicUnet` from plain arguments (how an export names them): `arch` is anything
    `resolve_arch` takes ('resnet34', 'timm:convnext_atto', a 'module:qualname' reference, the dict an
    export records) and `norm_type` a `NormType` name. A timm architecture gets timm's `features_only`
    encoder (its feature pyramid), any other `create_body(arch, pretrained, cut)`."""
    arch = resolve_arch(arch)
    if isinstance(arch, TimmArch):
        if cut is not None:
            raise FastbaseError(f"cut={cut!r} does not apply to timm's {arch.name}: its U-Net encoder is timm's "
                                "features_only model (every stage); leave cut=None.")
        encoder, _ = timm_features_encoder(arch.name, pretrained, **arch.create_kwargs)
    else:
        encoder = create_body(arch, pretrained, cut)
    return DynamicUnet(encoder, n_classes, img_size, blur=blur, blur_final=blur_final,
                       self_attention=self_attention, y_range=None if y_range is None else tuple(y_range),
                       last_cross=last_cross, bottle=bottle, norm_type=_norm_type(norm_type))


def unet_layer_groups(model: DynamicUnet, split: tuple[int, ...] | None) -> list[nn.Module]:
    """The encoder split by `body_layer_groups` (as `cnn_learner` splits a body; for a timm encoder,
    indexes of its stages), then the decoder."""
    return [*body_layer_groups(model.encoder, split), model.decoder]


def _image_size(data) -> tuple[int, int]:
    """The training images' size: the size the data resize inputs to, else the size of one batch."""
    size = data.input_spec()["size"]
    if size is not None:
        return _size_hw(size)
    x = data.one_batch()[0]
    if x.dim() != 4:
        raise FastbaseError(f"unet_learner needs image batches (bs, c, H, W); this data's batches are "
                            f"{tuple(x.shape)}.")
    return tuple(x.shape[-2:])


def unet_learner(data, arch: Callable | str, pretrained: bool | str = True, blur_final: bool = True,
                 norm_type: NormType | None = None, split_on=None, blur: bool = False, self_attention: bool = False,
                 y_range: tuple[float, float] | None = None, last_cross: bool = True, bottle: bool = False,
                 cut=None, channels_last: bool | None = None, train_bn: bool | None = None,
                 freeze_bn_stats: bool | str | None = None, **learn_kwargs) -> Learner:
    """A Learner for segmentation on `data` with a `DynamicUnet` on `arch`'s body (pretrained by
    default): `data.c` output channels, laid out for the training images' size (`data.size`, else
    one batch's). `arch` is a function or a name `resolve_arch` takes: 'resnet34' (torchvision), or
    'timm:NAME' / a timm model name, whose encoder is timm's `features_only` model, split by stages.

    The set-up is `cnn_learner`'s (`pretrained_learner`): the body is frozen when pretrained, so the
    first fit trains the decoder; a pretrained body keeps its BatchNorm (`train_bn=False`,
    `freeze_bn_stats="finetune"`); unnormalised data get the architecture's stats; layer groups are
    the encoder split by the architecture's metadata (`split_on`: other indexes, or a function model
    -> groups) and the decoder, so `slice` learning rates reach each; channels-last on the CPU for
    the families measured faster that way. The loss defaults to the data's `loss_func`, else
    `CrossEntropyFlat(axis=1)` (cross-entropy per pixel); `learn_kwargs` go to the Learner
    (`metrics`, `wd`, `loss_func`, `callback_fns`...). `export()` works unless `cut` or `split_on` is
    a function.
    """
    if data.c is None:
        raise FastbaseError("unet_learner needs data with classes (or `c` output channels); this DataBunch has "
                            "neither. Set `classes` on the training dataset (the mask codes) or `c`.")
    arch, meta = resolve_pretrained_arch(data, arch, pretrained)
    img_size = _image_size(data)
    flags = {"blur": blur, "blur_final": blur_final, "self_attention": self_attention,
             "y_range": None if y_range is None else list(y_range), "last_cross": last_cross, "bottle": bottle,
             "norm_type": None if norm_type is None else _norm_type(norm_type).name}
    model = build_unet_model(arch, data.c, img_size, pretrained, cut, **flags)
    loss_func = ifnone(learn_kwargs.pop("loss_func", None), data.loss_func) or CrossEntropyFlat(axis=1)
    spec = None if callable(cut) else _model_spec(arch, data.c, img_size, cut, flags)
    return pretrained_learner(data, model, meta, pretrained, unet_layer_groups, split_on, cut, spec, train_bn,
                              freeze_bn_stats, channels_last, loss_func=loss_func, **learn_kwargs)


def _model_spec(arch, n_classes: int, img_size, cut, flags: dict) -> dict | None:
    """How `load_learner` rebuilds the model (random weights, then the exported ones); None for an
    architecture that cannot be imported by name (a lambda, a function in __main__). A timm
    architecture is recorded as its name, arguments and timm version (`TimmArch.spec`)."""
    try:
        ref = arch_ref(arch)
    except FastbaseError:
        return None
    return model_spec(build_unet_model, {"arch": ref, "n_classes": n_classes, "img_size": list(img_size), "cut": cut,
                                         **flags})
