"""Transfer learning for images: a pretrained body cut from a classifier, a fresh head, layer
groups for discriminative learning rates, and `cnn_learner`, which returns a Learner whose body is
frozen so that the first `fit_one_cycle` trains the head only.
"""
from __future__ import annotations

import warnings
from collections.abc import Callable

import torch
from torch import nn

from ..core import FastbaseError, ifnone, listify
from ..export import model_spec
from ..hooks import num_features_model
from ..layers import AdaptiveConcatPool2d, bn_drop_lin
from ..learner import Learner
from .encoder import Encoder, as_encoder
from .feature_cache import DEFAULT_N_VIEWS, FeatureCache
from .models import arch_meta, arch_name
from .timm_models import arch_ref, is_timm_model, resolve_arch, timm_body

__all__ = [
    "AdaptiveConcatPool2d",
    "body_layer_groups",
    "build_cnn_model",
    "cnn_layer_groups",
    "cnn_learner",
    "create_body",
    "create_cnn",
    "create_head",
    "num_features_model",
    "pretrained_learner",
    "resolve_pretrained_arch",
]


def _is_pool(module: nn.Module) -> bool:
    return isinstance(module, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.AvgPool2d, nn.MaxPool2d,
                               AdaptiveConcatPool2d))


def _default_cut(model: nn.Module) -> int:
    """Index of the last child that is (or contains) a pooling layer: fastai's cut for unknown models."""
    children = list(model.children())
    for i in range(len(children) - 1, -1, -1):
        if any(_is_pool(m) for m in children[i].modules()):
            return i
    raise FastbaseError(f"Cannot find a pooling layer in {type(model).__name__} to cut its body at; "
                        "pass `cut=` (an index into its children, or a function model -> body).")


def create_body(arch: Callable, pretrained: bool | str = True, cut: int | Callable | None = None) -> Encoder:
    """The feature extractor of `arch(pretrained)` as an `Encoder` (`fastbase.vision.encoder`): cut by
    `cut` (index into the model's children, or a function model -> body), by the architecture's
    metadata, or at the last pooling layer. A torchvision body is a `SequentialEncoder`, used as the
    `nn.Sequential` of fastai v1 (indexed, sliced, called); a timm model (from a timm name, `TimmArch`
    or any function returning one) becomes a `TimmBody`."""
    arch = resolve_arch(arch)
    model = arch(pretrained=pretrained)
    if cut is None:
        meta = arch_meta(arch)
        if meta is None and is_timm_model(model):
            return timm_body(model)
        body = meta.body(model) if meta is not None else list(model.children())[:_default_cut(model)]
    else:
        body = cut(model) if callable(cut) else list(model.children())[:cut]
    return as_encoder(nn.Sequential(*body) if isinstance(body, list) else body)


def create_head(nf: int, nc: int, lin_ftrs: list[int] | None = None, ps: float | list[float] = 0.5,
                concat_pool: bool = True, bn_final: bool = False) -> nn.Sequential:
    """Pooling, flatten, then BatchNorm-Dropout-Linear blocks from `nf` body features to `nc` outputs.

    `nf` counts the body's channels after pooling (twice the body's channels with concat pooling, as
    in fastai v1). `lin_ftrs` are the hidden sizes (default [512]); a single `ps` gives half of it to
    the hidden blocks and all of it to the last one.
    """
    sizes = [nf, *(ifnone(lin_ftrs, [512])), nc]
    ps = listify(ps)
    if len(ps) == 1:
        ps = [ps[0] / 2] * (len(sizes) - 2) + ps
    if len(ps) != len(sizes) - 1:
        raise FastbaseError(f"`ps` needs one dropout per linear layer ({len(sizes) - 1}), got {ps}.")
    layers: list[nn.Module] = [AdaptiveConcatPool2d() if concat_pool else nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    for i, (n_in, n_out, p) in enumerate(zip(sizes[:-1], sizes[1:], ps)):
        layers += bn_drop_lin(n_in, n_out, p=p, actn=nn.ReLU(inplace=True) if i < len(sizes) - 2 else None)
    if bn_final:
        layers.append(nn.BatchNorm1d(sizes[-1], momentum=0.01))
    return nn.Sequential(*layers)


def build_cnn_model(arch: Callable, nc: int, pretrained: bool | str = False, cut=None, lin_ftrs=None, ps=0.5,
                    concat_pool: bool = True, bn_final: bool = False, custom_head: nn.Module | None = None,
                    init: Callable | None = nn.init.kaiming_normal_) -> nn.Sequential:
    """`nn.Sequential(body, head)` for `nc` outputs; the head's linear layers initialised with `init`.
    `arch` may be a name or reference that `resolve_arch` takes (how an exported model names it)."""
    body = create_body(arch, pretrained, cut)
    if custom_head is not None:
        head = custom_head
    else:
        nf = body.out_channels() * (2 if concat_pool else 1)
        head = create_head(nf, nc, lin_ftrs, ps, concat_pool, bn_final)
        if init is not None:
            for m in head.modules():
                if isinstance(m, nn.Linear):
                    init(m.weight)
                    nn.init.zeros_(m.bias)
    return nn.Sequential(body, head)


def body_layer_groups(body: nn.Module, split: tuple[int, ...] | None) -> list[nn.Module]:
    """A body's (encoder's) layer groups, pieces starting at each index of `split`: `Encoder.layer_groups`
    of `as_encoder(body)`. An `nn.Sequential` body is cut between its children ([body[:s0], body[s0:s1],
    ...]); a timm body or encoder between its stages (by default before the first stage past stride 8);
    a module without stages stays whole."""
    return as_encoder(body).layer_groups(split)


def cnn_layer_groups(model: nn.Sequential, split: tuple[int, ...] | None) -> list[nn.Module]:
    """The body of `nn.Sequential(body, head)` split by `body_layer_groups`, then the head."""
    return [*body_layer_groups(model[0], split), model[1]]


def cnn_learner(data, base_arch: Callable, cut=None, pretrained: bool | str = True, lin_ftrs=None, ps=0.5,
                custom_head: nn.Module | None = None, split_on=None, bn_final: bool = False,
                init: Callable | None = nn.init.kaiming_normal_, concat_pool: bool = True,
                channels_last: bool | None = None, train_bn: bool | None = None,
                freeze_bn_stats: bool | str | None = None, feature_cache: bool | None = None,
                **learn_kwargs) -> Learner:
    """A Learner for `data` with `base_arch`'s body (pretrained by default) and a new head.

    `base_arch`: a function `pretrained -> model`, or a name `resolve_arch` takes: torchvision's under
    fastbase's names ('resnet34'), timm's as 'timm:NAME' or any timm model name ('convnext_atto'),
    `partial(timm.create_model, NAME, ...)` or `timm_arch(NAME, **kwargs)` (docs/timm.md).

    The body is frozen when pretrained, so training starts with the head. BatchNorm, unlike fastai:
    a pretrained body keeps its BatchNorm as ImageNet trained it (`train_bn=False`: weights frozen
    with the rest of the frozen body; `freeze_bn_stats="body"`: the body's running statistics fixed
    in both stages, the new head's learnt in both). On small data sets this gains accuracy, keeps
    the unfrozen stage from undoing the frozen one, and halves the frozen stage's time
    (docs/transfer-learning.md; bench/RESULTS.md). `train_bn=True, freeze_bn_stats=False` is fastai's behaviour.
    A random body (`pretrained=False`) learns its BatchNorm as usual.

    Layer groups follow the architecture's metadata: three for resnets (two for the body, one for
    the head), so `slice` learning rates reach every part. Unnormalised data are normalised with the
    architecture's pretrained stats; data normalised with other stats get a warning.
    `channels_last=True` stores the weights and batches channels-last (`learn.to_channels_last()`),
    faster on CPUs with oneDNN: see `bench/cpu_speed.py`. The default, None, does so on the CPU for
    the architectures measured faster that way (`ArchMeta.channels_last_cpu`: ResNets, MobileNets,
    EfficientNets, RegNets, DenseNets); `False` keeps NCHW.

    `feature_cache` (default: `pretrained`): while the body is frozen with its BatchNorm fixed, fits,
    lr_find and validation run the head on cached body features (`FeatureCache`, with
    `DEFAULT_N_VIEWS` augmented views when the training transforms are random); `learn.feature_cache
    = False` turns it off later. True with a random body caches once it is frozen with `train_bn=False`
    and `freeze_bn_stats=True` (e.g. in tests).
    """
    if data.c is None:
        raise FastbaseError("cnn_learner needs data with classes (or `c` outputs); this DataBunch has neither.")
    base_arch, meta = resolve_pretrained_arch(data, base_arch, pretrained)
    model = build_cnn_model(base_arch, data.c, pretrained, cut, lin_ftrs, ps, concat_pool, bn_final,
                            custom_head, init)
    spec = None
    if custom_head is None and cut is None:
        spec = model_spec(build_cnn_model, {"arch": arch_ref(base_arch), "nc": data.c, "lin_ftrs": lin_ftrs, "ps": ps,
                                            "concat_pool": concat_pool, "bn_final": bn_final, "init": None})

    def add_feature_cache(learn: Learner) -> None:
        learn.feature_cache = bool(pretrained) if feature_cache is None else feature_cache
        learn.callbacks.append(FeatureCache(n_views=DEFAULT_N_VIEWS, auto=True))

    freeze_bn_stats = ifnone(freeze_bn_stats, "body" if pretrained else False)
    return pretrained_learner(data, model, meta, pretrained, cnn_layer_groups, split_on, cut, spec, train_bn,
                              freeze_bn_stats, channels_last, add_feature_cache, **learn_kwargs)


def resolve_pretrained_arch(data, arch, pretrained: bool | str):
    """`(arch, metadata)` of an architecture given as `resolve_arch` takes it; a pretrained body of a
    known family also normalises unnormalised `data` with its stats (a warning for other stats)."""
    arch = resolve_arch(arch)
    meta = arch_meta(arch)
    if meta is not None and not isinstance(arch, type) and pretrained:
        _check_normalization(data, meta.stats, arch_name(arch))
    return arch, meta


def pretrained_learner(data, model: nn.Module, meta, pretrained: bool | str, layer_groups: Callable, split_on, cut,
                       spec: dict | None, train_bn: bool | None, freeze_bn_stats: bool | str | None,
                       channels_last: bool | None, setup: Callable | None = None, **learn_kwargs) -> Learner:
    """The set-up `cnn_learner` and `unet_learner` share, on a model built from a pretrained (or
    random) body: layer groups (`split_on`, else the architecture's split unless `cut` is given,
    through `layer_groups(model, split)`), the BatchNorm defaults (a pretrained body keeps its
    BatchNorm: `train_bn=False`, and `freeze_bn_stats='finetune'` unless the caller chose another),
    `model_spec` (`spec` plus the split, unless the split is a function), `setup(learn)` for the
    caller's own parts, the body frozen when pretrained, and channels-last on the CPU for the
    families measured faster that way."""
    split = split_on if split_on is not None else (meta.split if meta is not None and cut is None else ())
    groups = split(model) if callable(split) else layer_groups(model, split)
    learn = Learner(data, model, layer_groups=groups, train_bn=ifnone(train_bn, not pretrained),
                    freeze_bn_stats=ifnone(freeze_bn_stats, "finetune" if pretrained else False), **learn_kwargs)
    if spec is not None and not callable(split):
        learn.model_spec = {**spec, "layer_group_split": list(split)}
    if setup is not None:
        setup(learn)
    if pretrained:
        learn.freeze()
    if channels_last is None:
        channels_last = meta is not None and meta.channels_last_cpu and data.device.type == "cpu"
    return learn.to_channels_last() if channels_last else learn


create_cnn = cnn_learner  # fastai v1's earlier name


def _check_normalization(data, stats, name: str) -> None:
    if data.norm is None:
        data.normalize(stats)
        return
    mean, std = (torch.tensor(s, dtype=torch.float32) for s in stats)
    if not (torch.allclose(data.norm.mean, mean, atol=1e-3) and torch.allclose(data.norm.std, std, atol=1e-3)):
        warnings.warn(f"The data are normalised with mean={data.norm.mean.tolist()} std={data.norm.std.tolist()}, "
                      f"but the pretrained {name} body expects {list(stats[0])} / {list(stats[1])}. Use "
                      "`.normalize(imagenet_stats)` unless you mean to change the body's input distribution.",
                      stacklevel=3)
