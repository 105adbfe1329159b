"""Layer 0: building blocks for models, fastai v1's names (`conv_layer`, `res_block`, `Flatten`...).

They need only torch, so they sit at the bottom: any layer above (the hooks in `callbacks`, the
heads in `vision.learner`, a task package's models) builds with them. A convolution block is
conv -> activation -> normalisation, fastai v1's order. `NormType` chooses the normalisation:
BatchNorm (`Batch`; `BatchZero` starts its scale at 0, so a residual branch ending in it adds
nothing at first), weight or spectral normalisation of the convolution (`Weight`, `Spectral`, with
`torch.nn.utils.parametrizations`), or InstanceNorm (`Instance`, `InstanceZero`).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from enum import Enum
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrizations

from .helpers import FastbaseError, ifnone

__all__ = [
    "BN_TYPES", "AdaptiveConcatPool2d", "Flatten", "Lambda", "MergeLayer", "NormType", "PixelShuffle_ICNR",
    "PoolFlatten", "SelfAttention", "SequentialEx", "batchnorm_2d", "bn_drop_lin", "children", "conv_layer",
    "emb_sz_rule", "flatten_model", "icnr", "in_channels", "init_default", "relu", "requires_grad", "res_block",
    "simple_cnn",
]

BN_TYPES = (nn.modules.batchnorm._BatchNorm,)  # the layers that keep running statistics


class NormType(Enum):
    """The normalisation of a `conv_layer`."""
    Batch = 1
    BatchZero = 2
    Weight = 3
    Spectral = 4
    Instance = 5
    InstanceZero = 6


# --- looking at a model -----------------------------------------------------------------------
def children(m: nn.Module) -> list[nn.Module]:
    """The direct children of `m`, as a list."""
    return list(m.children())


def _is_leaf(m: nn.Module) -> bool:
    # a weight- or spectral-normalised layer keeps its parametrization in a child named
    # `parametrizations`; the layer is still one layer
    return not any(name != "parametrizations" for name, _ in m.named_children())


def flatten_model(m: nn.Module) -> list[nn.Module]:
    """The leaf layers of `m` in order, each once (a normalised convolution counts as one layer)."""
    if _is_leaf(m):
        return [m]
    leaves = [leaf for name, child in m.named_children() if name != "parametrizations"
              for leaf in flatten_model(child)]
    return list({id(leaf): leaf for leaf in leaves}.values())


def requires_grad(m: nn.Module, b: bool | None = None) -> bool | None:
    """With `b`: make every parameter of `m` trainable (True) or frozen (False). Without: whether the
    first parameter is trainable (None for a module without parameters)."""
    params = list(m.parameters())
    if b is None:
        return params[0].requires_grad if params else None
    for p in params:
        p.requires_grad_(b)
    return b


def in_channels(m: nn.Module) -> int:
    """Channels (or features) the first layer with weights of `m` expects."""
    for layer in flatten_model(m):
        if hasattr(layer, "in_channels"):
            return layer.in_channels
        weight = getattr(layer, "weight", None)
        if isinstance(weight, torch.Tensor) and weight.dim() >= 2:
            return weight.shape[1]
    raise FastbaseError(f"{type(m).__name__} has no layer with a weight matrix, so the number of input channels "
                        "is unknown; build the input batch yourself.")


def init_default(m: nn.Module, func: Callable | None = nn.init.kaiming_normal_) -> nn.Module:
    """Initialise `m.weight` with `func` (in place) and its bias to zero; returns `m`."""
    if func is not None:
        with torch.no_grad():
            if isinstance(getattr(m, "weight", None), torch.Tensor):
                func(m.weight)
            if isinstance(getattr(m, "bias", None), torch.Tensor):
                m.bias.zero_()
    return m


# --- small layers -----------------------------------------------------------------------------
class Flatten(nn.Module):
    """(B, ...) -> (B, n): one row per item; `full=True` flattens everything to one dimension."""

    def __init__(self, full: bool = False):
        super().__init__()
        self.full = full

    def forward(self, x):
        return x.flatten() if self.full else x.flatten(1)  # flatten, not view: channels-last input works


class Lambda(nn.Module):
    """A layer that applies `func` to its input (a module for a model that needs a plain function)."""

    def __init__(self, func: Callable):
        super().__init__()
        self.func = func

    def forward(self, x):
        return self.func(x)

    def extra_repr(self) -> str:
        return getattr(self.func, "__name__", repr(self.func))


class AdaptiveConcatPool2d(nn.Module):
    """Max and average pooling side by side: (B, C, H, W) -> (B, 2C, size, size)."""

    def __init__(self, size: int = 1):
        super().__init__()
        self.avg, self.max = nn.AdaptiveAvgPool2d(size), nn.AdaptiveMaxPool2d(size)

    def forward(self, x):
        return torch.cat([self.max(x), self.avg(x)], 1)


def PoolFlatten() -> nn.Sequential:  # fastai v1's name: it builds a layer
    """Average pooling to 1x1, then `Flatten`: (B, C, H, W) -> (B, C)."""
    return nn.Sequential(nn.AdaptiveAvgPool2d(1), Flatten())


def relu(inplace: bool = False, leaky: float | None = None) -> nn.Module:
    """ReLU, or LeakyReLU with slope `leaky` for negative inputs."""
    return nn.ReLU(inplace=inplace) if leaky is None else nn.LeakyReLU(negative_slope=leaky, inplace=inplace)


def batchnorm_2d(nf: int, norm_type: NormType = NormType.Batch) -> nn.BatchNorm2d:
    """BatchNorm2d over `nf` channels; its scale starts at 0 with `NormType.BatchZero`, else at 1."""
    bn = nn.BatchNorm2d(nf)
    with torch.no_grad():
        bn.weight.fill_(0.0 if norm_type == NormType.BatchZero else 1.0)
    return bn


def bn_drop_lin(n_in: int, n_out: int, bn: bool = True, p: float = 0.0, actn: nn.Module | None = None) -> list:
    """[BatchNorm1d (if `bn`), Dropout (if `p`), Linear(n_in, n_out), `actn` (if given)]: a list, to
    splice into an `nn.Sequential`."""
    layers = [nn.BatchNorm1d(n_in)] if bn else []
    if p:
        layers.append(nn.Dropout(p))
    layers.append(nn.Linear(n_in, n_out))
    return layers + ([actn] if actn is not None else [])


# --- convolutions -----------------------------------------------------------------------------
def _norm_layer(nf: int, norm_type: NormType, is_1d: bool) -> nn.Module | None:
    zero = norm_type in (NormType.BatchZero, NormType.InstanceZero)
    if norm_type in (NormType.Batch, NormType.BatchZero):
        norm = (nn.BatchNorm1d if is_1d else nn.BatchNorm2d)(nf)
    elif norm_type in (NormType.Instance, NormType.InstanceZero):
        norm = (nn.InstanceNorm1d if is_1d else nn.InstanceNorm2d)(nf, affine=True)
    else:
        return None
    with torch.no_grad():
        norm.weight.fill_(0.0 if zero else 1.0)
    return norm


def conv_layer(ni: int, nf: int, ks: int = 3, stride: int = 1, padding: int | None = None, bias: bool | None = None,
               is_1d: bool = False, norm_type: NormType | None = NormType.Batch, use_activ: bool = True,
               leaky: float | None = None, transpose: bool = False, init: Callable | None = nn.init.kaiming_normal_,
               self_attention: bool = False) -> nn.Sequential:
    """Convolution `ni` -> `nf` channels, then ReLU (`use_activ`; leaky with `leaky`), then the
    normalisation `norm_type` (None: none), then `SelfAttention` (`self_attention`).

    `padding` defaults to (ks-1)//2, which keeps the size at stride 1 and halves it at stride 2
    (0 for a transposed convolution). `bias` defaults to True unless a Batch/Instance norm follows,
    which would cancel it. `init` initialises the weight (before weight/spectral normalisation)."""
    if norm_type is not None and not isinstance(norm_type, NormType):
        raise FastbaseError(f"norm_type={norm_type!r}: use one of {[t.name for t in NormType]} as NormType.X, or None.")
    padding = ifnone(padding, 0 if transpose else (ks - 1) // 2)
    norm = _norm_layer(nf, norm_type, is_1d) if norm_type is not None else None
    bias = ifnone(bias, norm is None)
    conv_cls = nn.ConvTranspose2d if transpose else nn.Conv1d if is_1d else nn.Conv2d
    conv = init_default(conv_cls(ni, nf, kernel_size=ks, stride=stride, padding=padding, bias=bias), init)
    if norm_type == NormType.Weight:
        conv = parametrizations.weight_norm(conv)
    elif norm_type == NormType.Spectral:
        conv = parametrizations.spectral_norm(conv)
    layers = [conv]
    if use_activ:
        layers.append(relu(True, leaky=leaky))
    if norm is not None:
        layers.append(norm)
    if self_attention:
        layers.append(SelfAttention(nf))
    return nn.Sequential(*layers)


class SelfAttention(nn.Module):
    """Self-attention over the positions of a feature map (SAGAN, arXiv:1805.08318): each output
    position adds `gamma` times a mix of all positions' values. `gamma` starts at 0, so the layer
    starts as the identity and learns how much attention to add. Shape kept: (B, C, *spatial)."""

    def __init__(self, n_channels: int):
        super().__init__()
        inner = max(1, n_channels // 8)

        def conv1x1(n_out):
            return parametrizations.spectral_norm(init_default(nn.Conv1d(n_channels, n_out, 1, bias=False)))

        self.query = conv1x1(inner)
        self.key = conv1x1(inner)
        self.value = conv1x1(n_channels)
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        flat = x.flatten(2)  # (B, C, N) with N positions
        query = self.query(flat)
        key = self.key(flat)
        value = self.value(flat)
        weights = F.softmax(torch.bmm(query.transpose(1, 2), key), dim=1)  # (B, N, N): column j mixes positions
        return (self.gamma * torch.bmm(value, weights) + flat).view_as(x)


# --- residual blocks --------------------------------------------------------------------------
class MergeLayer(nn.Module):
    """Inside a `SequentialEx`: adds the block's input `orig` to `x` (same shape), or with `dense`
    concatenates them on the channels: (B, C1, ...) and (B, C2, ...) -> (B, C1 + C2, ...)."""
    takes_block_input = True  # SequentialEx calls it as layer(x, orig)

    def __init__(self, dense: bool = False):
        super().__init__()
        self.dense = dense

    def forward(self, x, orig):
        return torch.cat([x, orig], dim=1) if self.dense else x + orig


class SequentialEx(nn.Module):
    """Like `nn.Sequential`, but a layer that sets `takes_block_input = True` (`MergeLayer`) is called
    as `layer(x, orig)` with the block's own input `orig` as well: how a residual block reaches its
    shortcut. (fastai v1 hung the input on the tensor as `x.orig`; here it is an argument.)"""

    def __init__(self, *layers: nn.Module):
        super().__init__()
        self.layers = nn.ModuleList(layers)

    def forward(self, x):
        out = x
        for layer in self.layers:
            out = layer(out, x) if getattr(layer, "takes_block_input", False) else layer(out)
        return out

    def __getitem__(self, i):
        return self.layers[i]

    def __len__(self) -> int:
        return len(self.layers)

    def append(self, layer: nn.Module):
        return self.layers.append(layer)

    def extend(self, layers: Sequence[nn.Module]):
        return self.layers.extend(layers)

    def insert(self, i: int, layer: nn.Module):
        return self.layers.insert(i, layer)


def res_block(nf: int, dense: bool = False, norm_type: NormType | None = NormType.Batch, bottle: bool = False,
              **conv_kwargs) -> SequentialEx:
    """Two `conv_layer`s (nf -> nf, or through nf//2 with `bottle`) and a `MergeLayer`: x + convs(x),
    or with `dense` the concatenation (2*nf channels). Without `dense`, BatchNorm in the second conv
    starts at scale 0, so the block starts as the identity. `conv_kwargs` go to both conv_layers."""
    norm2 = NormType.BatchZero if not dense and norm_type == NormType.Batch else norm_type
    inner = nf // 2 if bottle else nf
    return SequentialEx(conv_layer(nf, inner, norm_type=norm_type, **conv_kwargs),
                        conv_layer(inner, nf, norm_type=norm2, **conv_kwargs), MergeLayer(dense))


# --- upsampling ---------------------------------------------------------------------------------
def icnr(x: torch.Tensor, scale: int = 2, init: Callable = nn.init.kaiming_normal_) -> torch.Tensor:
    """ICNR initialisation (arXiv:1707.02937) of a convolution weight `x` (out, in, kh, kw) that feeds
    `nn.PixelShuffle(scale)`: each group of scale**2 output channels that the shuffle spreads over one
    scale x scale block gets the same kernel, so the shuffled output starts as a nearest-neighbour
    upsampling (no checkerboard). In place; returns `x`."""
    n_out = x.shape[0]
    if n_out % (scale ** 2):
        raise FastbaseError(f"icnr: the weight has {n_out} output channels, not a multiple of scale**2 = "
                            f"{scale ** 2}; PixelShuffle({scale}) needs one.")
    kernel = init(torch.empty(n_out // scale ** 2, *x.shape[1:], dtype=x.dtype, device=x.device))
    with torch.no_grad():
        x.copy_(kernel.repeat_interleave(scale ** 2, dim=0))  # PixelShuffle reads channels c*s*s .. c*s*s+s*s-1
    return x


class PixelShuffle_ICNR(nn.Module):  # fastai v1's name
    """Upsample (B, ni, H, W) -> (B, nf, scale*H, scale*W) (`nf` defaults to `ni`): a 1x1 `conv_layer`
    to nf*scale**2 channels initialised with `icnr`, ReLU, `nn.PixelShuffle`. `blur` adds a
    replication pad and 2x2 average (arXiv:1806.02658) against checkerboard artefacts."""

    def __init__(self, ni: int, nf: int | None = None, scale: int = 2, blur: bool = False,
                 norm_type: NormType | None = NormType.Weight, leaky: float | None = None):
        super().__init__()
        nf = ifnone(nf, ni)
        self.conv = conv_layer(ni, nf * scale ** 2, ks=1, norm_type=norm_type, use_activ=False,
                               init=partial(icnr, scale=scale))
        self.relu = relu(True, leaky=leaky)
        self.shuf = nn.PixelShuffle(scale)
        self.blur = nn.Sequential(nn.ReplicationPad2d((1, 0, 1, 0)), nn.AvgPool2d(2, stride=1)) if blur else None

    def forward(self, x):
        x = self.shuf(self.relu(self.conv(x)))
        return x if self.blur is None else self.blur(x)


# --- a whole model ------------------------------------------------------------------------------
def simple_cnn(actns: Sequence[int], kernel_szs: Sequence[int] | None = None, strides: Sequence[int] | None = None,
               bn: bool = False) -> nn.Sequential:
    """A CNN of `conv_layer`s from actns[0] input channels through actns[1:] (kernel size 3 and stride
    2 unless given, BatchNorm after all but the last with `bn`), then `PoolFlatten`: (B, actns[-1])."""
    n = len(actns) - 1
    kernel_szs, strides = ifnone(kernel_szs, [3] * n), ifnone(strides, [2] * n)
    if not len(kernel_szs) == len(strides) == n:
        raise FastbaseError(f"simple_cnn: {n} convolutions from actns={list(actns)}, but {len(kernel_szs)} kernel "
                            f"sizes and {len(strides)} strides; give one of each per convolution.")
    layers = [conv_layer(actns[i], actns[i + 1], kernel_szs[i], stride=strides[i],
                         norm_type=NormType.Batch if bn and i < n - 1 else None) for i in range(n)]
    return nn.Sequential(*layers, PoolFlatten())


__all__ += ["SigmoidRange"]


class SigmoidRange(nn.Module):
    """Squash the input into (`low`, `high`) with a sigmoid: a regression output that cannot leave
    its range (U-Net image outputs, ratings)."""

    def __init__(self, low: float, high: float):
        super().__init__()
        if not low < high:
            raise FastbaseError(f"SigmoidRange needs low < high, got ({low}, {high}).")
        self.low, self.high = float(low), float(high)

    def forward(self, x):
        return torch.sigmoid(x) * (self.high - self.low) + self.low

    def extra_repr(self) -> str:
        return f"low={self.low}, high={self.high}"


def emb_sz_rule(n_cat: int) -> int:
    """fastai's embedding width for `n_cat` categories (the unknown `#na#` included):
    min(600, round(1.6 * n_cat**0.56)). Tabular and collaborative-filtering models both use it."""
    return min(600, round(1.6 * n_cat ** 0.56))
