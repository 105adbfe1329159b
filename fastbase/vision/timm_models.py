"""timm backbones for `cnn_learner` and the tools around it (optional: `pip install "fastbase[timm]"`).

`resolve_arch` turns what a user writes into an architecture: a name fastbase knows from torchvision
('resnet18'), 'timm:NAME' or any other timm model name ('convnext_atto'), a 'module:function'
reference, `partial(timm.create_model, NAME, ...)`, or a function. A timm architecture is a
`TimmArch`: it builds the model with `num_classes=0` and no global pool, and carries an `ArchMeta`
(normalisation stats from the model's `pretrained_cfg`, channels-last on the CPU by family).
`TimmBody` wraps the model as a body that outputs a feature map (N, C, H, W); its layer groups follow
the model's stages (`feature_info`), so `freeze_to` and `slice` learning rates mean what they mean for
a resnet. Pretrained weights go through timm's own loader, from a local file or the Hugging Face hub
cache, and obey `FASTBASE_OFFLINE` (`create_timm_model`). timm is imported only when used.
"""
from __future__ import annotations

import functools
import os
import urllib.error
import warnings

import torch
from torch import nn

from ..core import FastbaseError, Path, get_config, import_ref, object_ref
from ..hooks import hook_outputs
from . import models
from .encoder import Encoder, PyramidEncoder, default_stage_split, stage_layer_groups
from .models import ArchMeta, PretrainedWeightsError

__all__ = ["TimmArch", "TimmBody", "arch_ref", "create_timm_model", "is_timm_model", "resolve_arch", "timm_arch",
           "timm_body", "timm_features_encoder", "timm_weights_file"]

TIMM_PREFIX = "timm:"
_INSTALL = 'pip install "fastbase[timm]" (or pip install timm)'


def _timm(why: str = "timm backbones"):
    """The timm module, or an error that says how to install it."""
    try:
        import timm
    except ImportError as e:
        raise FastbaseError(f"{why} need the timm package, which is not installed: {_INSTALL}.") from e
    return timm


def is_timm_model(model) -> bool:
    """Does `model` look like a timm classifier (forward_features, reset_classifier, pretrained_cfg)?"""
    return all(hasattr(model, a) for a in ("forward_features", "reset_classifier", "pretrained_cfg"))


def _pretrained_cfg(name: str) -> dict:
    cfg = _timm().models.get_pretrained_cfg(name)
    return cfg.to_dict() if cfg is not None else {}


def _spatial(cfg: dict) -> bool:
    """Convnets (and Swin-like models) have a `pool_size` in their pretrained config; ViT-like models,
    whose features are tokens pooled by timm's own head (class token or mean), have none."""
    return cfg.get("pool_size") is not None


def timm_weights_file(name: str) -> Path:
    """Where fastbase looks for a timm model's pretrained weights before the Hugging Face hub cache:
    `$TORCH_HOME/hub/checkpoints/timm/NAME.TAG.safetensors` (a `.pth` next to it works too)."""
    cfg = _timm().models.get_pretrained_cfg(name)
    full = f"{cfg.architecture}.{cfg.tag}" if cfg is not None and cfg.tag else name
    return Path(torch.hub.get_dir()) / "checkpoints" / "timm" / f"{full}.safetensors"


def _cached_weights(name: str) -> Path | None:
    """The weights file for `name` in fastbase's folder or the Hugging Face hub cache, without the network."""
    target = timm_weights_file(name)
    for file in (target, target.with_suffix(".pth")):
        if file.is_file():
            return file
    hub_id = _pretrained_cfg(name).get("hf_hub_id")
    if hub_id:
        try:
            from huggingface_hub import try_to_load_from_cache
        except ImportError:
            return None
        for filename in ("model.safetensors", "pytorch_model.bin"):
            found = try_to_load_from_cache(hub_id, filename)
            if isinstance(found, str) and os.path.isfile(found):
                return Path(found)
    return None


def _download_errors() -> tuple:
    errors = [urllib.error.URLError, ConnectionError, TimeoutError, OSError]
    try:
        from huggingface_hub import errors as hf_errors
        errors += [hf_errors.HfHubHTTPError, hf_errors.LocalEntryNotFoundError]
    except ImportError:
        pass
    return tuple(errors)


def create_timm_model(name: str, pretrained: bool | str = False, **kwargs) -> nn.Module:
    """`timm.create_model(name, **kwargs)`, with pretrained weights through timm's own loader.

    `pretrained` may be True or the path of a weights file. With True, a file in `timm_weights_file(name)`
    or in the Hugging Face hub cache is loaded (`pretrained_cfg_overlay=dict(file=...)`, no network);
    else timm downloads it, unless fastbase is offline (`FASTBASE_OFFLINE`). Failing both, the error
    names the file to put where, and `pretrained=False`. Never falls back to random weights silently.
    """
    timm = _timm()
    if not timm.is_model(name):
        raise FastbaseError(f"timm has no model {name!r} (timm {timm.__version__}); list them with "
                            f"timm.list_models('*{name.split('.')[0][:8]}*').")
    if not pretrained:
        return timm.create_model(name, pretrained=False, **kwargs)
    if isinstance(pretrained, (str, os.PathLike)):
        file = Path(pretrained)
        if not file.is_file():
            raise PretrainedWeightsError(f"No weights file {file} for {name}; pass an existing file, pretrained=True "
                                         "(the cache) or pretrained=False.")
    else:
        file = _cached_weights(name)
    if file is not None:
        return timm.create_model(name, pretrained=True, pretrained_cfg_overlay={"file": str(file)}, **kwargs)
    target, hub_id = timm_weights_file(name), _pretrained_cfg(name).get("hf_hub_id")

    def missing(reason: str) -> PretrainedWeightsError:
        source = f" (from https://huggingface.co/{hub_id}, file model.safetensors)" if hub_id else ""
        return PretrainedWeightsError(
            f"Pretrained weights for timm's {name} are not in {target.parent} nor in the Hugging Face hub cache and "
            f"{reason}. Put the weights file{source} at {target} (set TORCH_HOME to move the folder), or pass "
            "pretrained=False to start from random weights.")

    if not _pretrained_cfg(name).get("hf_hub_id") and not _pretrained_cfg(name).get("url"):
        raise PretrainedWeightsError(f"timm has no pretrained weights for {name}; pass pretrained=False.")
    if get_config().offline:
        raise missing("fastbase is offline (FASTBASE_OFFLINE)")
    try:
        return timm.create_model(name, pretrained=True, **kwargs)
    except _download_errors() as e:
        raise missing(f"could not be downloaded ({type(e).__name__}: {str(e).strip()[:200]})") from e


class TimmBody(Encoder):
    """A timm model without classifier or global pool, as a body (`Encoder`): (N, 3, H, W) -> feature map
    (N, C, h, w).

    Convnets give their last stage's map (channels-last models such as Swin are permuted to NCHW);
    ViT-like models give timm's pooled token (class token or mean) as a (N, C, 1, 1) map, so
    `create_head` works the same, and `spatial` is False (Grad-CAM does not apply, nor `features`).
    `stages` are the modules of `feature_info` (one per stride), `features` their maps;
    `layer_groups(split)` cuts the model between them.
    """

    def __init__(self, model: nn.Module, name: str | None = None):
        super().__init__()
        self.model = model
        self._name = name or model.pretrained_cfg.get("architecture") or type(model).__name__
        self.spatial = _spatial(model.pretrained_cfg)
        self.channels_last_out = getattr(model, "output_fmt", "NCHW") == "NHWC"
        self.num_features = int(getattr(model, "head_hidden_size", None) or model.num_features)
        self.stage_names = [info["module"] for info in getattr(model, "feature_info", []) or []
                            if isinstance(info, dict) and info.get("module")]

    def _nchw(self, x: torch.Tensor) -> torch.Tensor:
        return x.permute(0, 3, 1, 2) if x.dim() == 4 and self.channels_last_out else x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.model(x)  # forward_features, then the head without pool and classifier
        if x.dim() == 2:
            return x[:, :, None, None]
        if x.dim() != 4:
            raise FastbaseError(f"timm's {self.name} gives features of shape {tuple(x.shape)}, not a (N, C, H, W) map "
                                "or a pooled vector; fastbase cannot put a head on it.")
        return self._nchw(x)

    def features(self, x: torch.Tensor, keep=None) -> list[torch.Tensor]:
        """The maps of the stages (NCHW), read as the model runs; the last is the last stage's map,
        before any norm the model applies after it."""
        if not self.spatial:
            raise FastbaseError(f"timm's {self.name} is a transformer: its stages give tokens, not feature maps; "
                                "use a convolutional model where maps are needed.")
        if not self.stage_names:
            return [self(x)]
        with hook_outputs(self.stages(), detach=False) as hooks:
            self.model(x)
        return [self._nchw(t) for t in hooks.stored]

    def out_channels(self) -> int:
        return self.num_features

    def stages(self) -> list[nn.Module]:
        """The stage modules of `feature_info`, in order (resnet: act1, layer1..layer4)."""
        return [self.model.get_submodule(n) for n in self.stage_names]

    def default_split(self) -> tuple[int, ...]:
        """Where the second body group starts (see `default_stage_split`)."""
        return default_stage_split(self._reductions())

    def _reductions(self) -> list[int]:
        return [info.get("reduction", 0) for info in self.model.feature_info if isinstance(info, dict)] \
            if self.stage_names else []

    def layer_groups(self, split=()) -> list[nn.Module]:
        """Body groups cut after the stages before each index of `split` (default `default_split()`)."""
        return stage_layer_groups(self.model, self.stage_names, self._reductions(), split or (), f"timm's {self.name}")


def timm_body(model: nn.Module, name: str | None = None) -> TimmBody:
    """A timm classifier (from any function) as a `TimmBody`: classifier removed, and the global pool
    for a convnet. `TimmArch` builds its models that way already, so it skips this."""
    model.reset_classifier(0, "" if _spatial(model.pretrained_cfg) else None)
    return TimmBody(model, name)


class TimmArch:
    """A timm architecture as fastbase's architectures are: `arch(pretrained=False) -> model`, with
    `arch_name` ('timm:NAME') and `meta` (an `ArchMeta`: body = `timm_body`, stats from the model's
    `pretrained_cfg`, channels-last on the CPU for the families measured faster that way). Extra
    keyword arguments go to `timm.create_model` (e.g. `img_size=64` for a ViT, `drop_path_rate`)."""

    def __init__(self, name: str, **create_kwargs):
        timm = _timm()
        name = name.removeprefix(TIMM_PREFIX)
        if not timm.is_model(name):
            near = timm.list_models(f"*{name.split('.')[0][:6]}*")[:10]
            raise FastbaseError(f"timm {timm.__version__} has no model {name!r}" +
                                (f"; similar names: {', '.join(near)}." if near else "; see timm.list_models()."))
        self.name, self.create_kwargs = name, dict(create_kwargs)
        self.arch_name = self.__name__ = TIMM_PREFIX + name
        self.cfg = _pretrained_cfg(name)
        self.input_size = tuple(self.cfg.get("input_size") or (3, 224, 224))

    @property
    def meta(self) -> ArchMeta:
        stats = ([float(v) for v in self.cfg.get("mean", (0.485, 0.456, 0.406))],
                 [float(v) for v in self.cfg.get("std", (0.229, 0.224, 0.225))])
        return ArchMeta(self.arch_name, functools.partial(TimmBody, name=self.name), (), stats, weights="timm",
                        channels_last_cpu=self.name.startswith(models.CHANNELS_LAST_CPU_FAMILIES))

    def __call__(self, pretrained: bool | str = False) -> nn.Module:
        pool = {"global_pool": ""} if _spatial(self.cfg) else {}
        return create_timm_model(self.name, pretrained, **{"num_classes": 0, **pool, **self.create_kwargs})

    def spec(self) -> dict:
        """Plain data that `resolve_arch` turns back into this architecture (what an export records)."""
        return {"timm": self.name, "kwargs": self.create_kwargs, "timm_version": _timm().__version__}

    def __repr__(self):
        extra = "".join(f", {k}={v!r}" for k, v in self.create_kwargs.items())
        return f"timm_arch({self.name!r}{extra})"


def timm_arch(name: str, **create_kwargs) -> TimmArch:
    """timm's model `name` as an architecture for `cnn_learner`, `compare_archs` and `create_body`."""
    return TimmArch(name, **create_kwargs)


def timm_features_encoder(name: str, pretrained: bool | str = False, **kwargs) -> tuple[PyramidEncoder, list[int]]:
    """timm's `features_only=True` model for `name` as a `PyramidEncoder` (a U-Net encoder), and its
    channels per stage.

    `encoder.features(x)` maps (N, 3, H, W) to a list of feature maps, one per stride of `feature_info`
    (resnet: 2, 4, 8, 16, 32), `encoder(x)` to the deepest; the channel list gives their channels in
    that order. The state-dict keys are timm's features model's. Pretrained weights load as in
    `create_timm_model` (local file, Hugging Face hub cache, offline rules)."""
    name = name.removeprefix(TIMM_PREFIX)
    model = create_timm_model(name, pretrained, features_only=True, **kwargs)
    return PyramidEncoder(model), list(model.feature_info.channels())


def _from_spec(spec: dict) -> TimmArch:
    timm = _timm(f"This model was built on timm's {spec['timm']} (timm {spec.get('timm_version')}); loading it")
    if spec.get("timm_version") and spec["timm_version"] != timm.__version__:
        warnings.warn(f"This model was built with timm {spec['timm_version']}; timm {timm.__version__} is installed. "
                      f"If its weights do not load, pip install timm=={spec['timm_version']}.", stacklevel=3)
    return TimmArch(spec["timm"], **spec.get("kwargs", {}))


def _is_create_model_partial(arch) -> bool:
    func = getattr(arch, "func", None)
    return isinstance(arch, functools.partial) and getattr(func, "__name__", "") == "create_model" \
        and getattr(func, "__module__", "").startswith("timm") and bool(arch.args)


def resolve_arch(arch):
    """An architecture from a name or reference; architectures (functions, `TimmArch`) pass through.

    Names: one of `fastbase.vision.models` (torchvision's, e.g. 'resnet18', 'convnext_tiny'),
    'timm:NAME' for timm's (e.g. 'timm:resnet18'), another timm model name ('convnext_atto'), or a
    'package.module:function' reference. Also `partial(timm.create_model, NAME, **kwargs)` and the
    dict an export records (`TimmArch.spec()`)."""
    if isinstance(arch, dict) and "timm" in arch:
        return _from_spec(arch)
    if _is_create_model_partial(arch):
        kwargs = {k: v for k, v in arch.keywords.items() if k != "pretrained"}
        return TimmArch(arch.args[0], **kwargs)
    if not isinstance(arch, str):
        return arch
    if arch.startswith(TIMM_PREFIX):
        return TimmArch(arch)
    if ":" in arch:
        return import_ref(arch)
    if arch in models.model_meta:
        return getattr(models, arch)
    try:
        import timm
    except ImportError:
        raise FastbaseError(f"Unknown architecture {arch!r}. Known: {', '.join(sorted(models.model_meta))}; "
                            f"timm names need timm ({_INSTALL}); or give your own as 'package.module:function' "
                            "(a function pretrained=False -> nn.Module).") from None
    if timm.is_model(arch):
        return TimmArch(arch)
    known = ", ".join(sorted(models.model_meta))
    raise FastbaseError(f"Unknown architecture {arch!r}: not in fastbase.vision.models ({known}) "
                        "nor a timm model (timm.list_models()); or give your own as 'package.module:function'.")


def arch_ref(arch):
    """What an export records for `arch`: `TimmArch.spec()` for timm, else 'module:function'."""
    return arch.spec() if isinstance(arch, TimmArch) else object_ref(arch)
