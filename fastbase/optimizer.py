"""Layer 5 (helper of the Learner): layer groups, and the optimizer wrapper over them.

Layer groups are the model's parts (e.g. [body start, body end, head]) that freeze together and
get their own learning rate. This module checks they cover the model, freezes them, and
summarises them; `OptimWrapper` optimizes them.

Each layer group becomes two torch param groups, [decayed, not decayed]: BatchNorm and other
normalisation parameters, every bias and the token/position embeddings of vision transformers are
not decayed unless `bn_wd=True`. Learning rate, momentum and weight decay are set per layer group
from a float, a list, a NumPy array or a `slice` (fastai v1's `lr_range`). Weight decay is
decoupled ("true") by default: the wrapper decays the weights itself, so `Adam` trains as AdamW,
and any torch optimizer gets the same decay.
"""
from __future__ import annotations

from functools import partial

import numpy as np
import torch
from torch import nn

from .core import BN_TYPES, FastbaseError, is_listy, listify
from .hooks import Hooks
from .layers import flatten_model

__all__ = ["NORM_TYPES", "Adam", "OptimWrapper", "check_layer_groups", "even_mults", "freeze_layer_groups",
           "layer_groups_summary", "lr_range", "split_no_wd_params"]

# The default `opt_func`: Adam with fastai's betas (fastai v1 names this partial `AdamW`). It is plain
# Adam: under `true_wd=True` (the default) the wrapper keeps its weight_decay at 0 and decays the
# weights itself (p -= lr * wd * p before the step), which is AdamW; `true_wd=False` gives Adam with L2.
Adam = partial(torch.optim.Adam, betas=(0.9, 0.99))

NORM_TYPES = (nn.modules.batchnorm._BatchNorm, nn.modules.instancenorm._InstanceNorm, nn.LayerNorm, nn.GroupNorm)


def even_mults(start: float, stop: float, n: int) -> np.ndarray:
    """`n` values from `start` to `stop`, evenly spaced on a log scale."""
    if n == 1:
        return np.array([stop], dtype=float)
    return start * (stop / start) ** (np.arange(n) / (n - 1))


def lr_range(lr, n_groups: int):
    """A value per layer group from `lr` (fastai v1): `slice(a, b)` spreads geometrically from `a`
    (first group) to `b` (last); `slice(b)` gives b/10 to the earlier groups and b to the last;
    floats, lists and arrays are returned as they are."""
    if not isinstance(lr, slice):
        return lr
    if lr.stop is None:
        raise FastbaseError(f"A learning-rate slice needs a stop value, got {lr}.")
    if lr.start:
        return even_mults(lr.start, lr.stop, n_groups)
    return np.array([lr.stop / 10] * (n_groups - 1) + [lr.stop], dtype=float)


def check_layer_groups(model: nn.Module, groups) -> list[nn.Module]:
    """`groups` as modules (a list of modules becomes an nn.Sequential); raises if a parameter of
    `model` is in none of them, since it would never train."""
    groups = [g if isinstance(g, nn.Module) else nn.Sequential(*listify(g)) for g in listify(groups)]
    grouped = {id(p) for g in groups for p in g.parameters()}
    missing = [name for name, p in model.named_parameters() if id(p) not in grouped]
    if missing:
        raise FastbaseError(f"{len(missing)} parameters of the model are in no layer group (e.g. {missing[:3]}), "
                            "so they would never train: make `layer_groups` cover the whole model.")
    return groups


def freeze_layer_groups(groups, n: int, train_bn: bool = True) -> int:
    """Freeze the first `n` groups (negative: all but the last -n) and unfreeze the others; BatchNorm
    parameters of frozen groups stay trainable with `train_bn`. Returns the number frozen."""
    n = max(0, min(n if n >= 0 else len(groups) + n, len(groups)))
    for group in groups[:n]:
        for module in group.modules():
            trainable = train_bn and isinstance(module, BN_TYPES)
            for p in module.parameters(recurse=False):
                p.requires_grad_(trainable)
    for group in groups[n:]:
        for p in group.parameters():
            p.requires_grad_(True)
    return n


def _count(params, trainable=None) -> int:
    return sum(p.numel() for p in params if trainable is None or p.requires_grad == trainable)


def _shape(out):
    out = out[0] if isinstance(out, (list, tuple)) and out else out
    return list(out.shape[1:]) if isinstance(out, torch.Tensor) else "?"


def layer_groups_summary(model: nn.Module, groups, xb=None) -> str:
    """A table of the model's leaf layers (output shape from running `xb` in eval mode without the
    batch dimension, parameters, trainable), then totals for the model and each layer group."""
    leaf_ids = {id(m) for m in flatten_model(model)}  # a weight-normalised conv is one layer
    leaves = [(name, m) for name, m in model.named_modules() if id(m) in leaf_ids]
    was_training = model.training
    try:
        with Hooks([m for _, m in leaves], lambda module, inputs, out: _shape(out)) as hooks:
            if xb is not None:
                model.eval()
                with torch.no_grad():
                    model(*xb)
    finally:
        model.train(was_training)
    shapes = {id(m): shape for (_, m), shape in zip(leaves, hooks.stored) if shape is not None}
    lines = [f"{type(model).__name__} (output shapes without the batch dimension)",
             f"{'Layer (type)':<40} {'Output shape':<20} {'Params':>10}  Trainable"]
    for name, module in leaves:
        params = list(module.parameters())  # a leaf's own, with those of its weight/spectral norm
        trainable = str(any(p.requires_grad for p in params)) if params else "-"
        lines.append(f"{f'{name} ({type(module).__name__})':<40} {shapes.get(id(module), '-')!s:<20} "
                     f"{_count(params):>10,}  {trainable}")
    params = list(model.parameters())
    lines.append(f"Total params: {_count(params):,}  trainable: {_count(params, True):,}  "
                 f"frozen: {_count(params, False):,}")
    for i, group in enumerate(groups):
        ps = list(group.parameters())
        lines.append(f"Layer group {i}: {_count(ps):,} params, {_count(ps, True):,} trainable, "
                     f"{_count(ps, False):,} frozen")
    return "\n".join(lines)


# Token and position embeddings of torchvision's vision transformers (ViT's `class_token` and
# `pos_embedding`, Swin's `relative_position_bias_table`): like biases, they are not decayed (timm's
# models name theirs through `no_weight_decay()`, read below).
EMBEDDING_PARAM_NAMES = ("class_token", "pos_embedding", "relative_position_bias_table")


def _declared_no_decay(layer_groups) -> set[int]:
    """Ids of the parameters that a module declares free of weight decay in timm's way: the names its
    `no_weight_decay()` returns, or names holding one of its `no_weight_decay_keywords()`."""
    ids = set()
    for group in layer_groups:
        for module in group.modules():
            names = module.no_weight_decay() if callable(getattr(module, "no_weight_decay", None)) else ()
            keywords = (module.no_weight_decay_keywords()
                        if callable(getattr(module, "no_weight_decay_keywords", None)) else ())
            if names or keywords:
                ids.update(id(p) for name, p in module.named_parameters()
                           if name in names or any(k in name for k in keywords))
    return ids


def split_no_wd_params(layer_groups) -> list[tuple[list, list]]:
    """(decayed, not decayed) parameters of each layer group; a parameter shared between groups
    counts in the first only. Not decayed: parameters of normalisation layers, biases, and token and
    position embeddings (`EMBEDDING_PARAM_NAMES`, and what a timm model's `no_weight_decay()` names)."""
    seen = set()
    splits = []
    declared = _declared_no_decay(layer_groups)
    for group in layer_groups:
        decay, no_decay = [], []
        for module in group.modules():
            for name, p in module.named_parameters(recurse=False):
                if id(p) in seen:
                    continue
                seen.add(id(p))
                free = (isinstance(module, NORM_TYPES) or name.endswith("bias") or name in EMBEDDING_PARAM_NAMES
                        or id(p) in declared)
                (no_decay if free else decay).append(p)
        splits.append((decay, no_decay))
    return splits


class OptimWrapper:
    """A torch optimizer (from `opt_func(param_groups)`) whose hyper-parameters are set per layer group.

    `lr`, `mom`, `wd` read the last layer group's value and accept a float, list, array or slice
    for all groups; `lrs`, `moms`, `wds` list them. `mom` is `betas[0]` for Adam-likes, `momentum`
    for SGD/RMSprop. With `true_wd` the wrapper decays the weights itself before each step
    (`p -= lr * wd * p`, only parameters that have a gradient, so frozen ones stay put) and keeps
    the optimizer's own `weight_decay` at 0; otherwise `wd` becomes that L2 `weight_decay`.
    Frozen parameters stay in their groups, so `freeze`/`unfreeze` keep the optimizer state.
    """

    def __init__(self, opt_func, layer_groups, lr=3e-3, wd=0.0, true_wd: bool = True, bn_wd: bool = False):
        self.true_wd, self.bn_wd = true_wd, bn_wd
        self.n_groups = len(layer_groups)
        groups = [{"params": ps} for decay, no_decay in split_no_wd_params(layer_groups) for ps in (decay, no_decay)]
        self.opt = opt_func(groups)
        self.lr, self.wd = lr, wd

    # --- per-layer-group values -----------------------------------------------------------------
    def _per_group(self, value, what: str) -> list[float]:
        if isinstance(value, (int, float)):  # the per-batch path of schedulers: keep it cheap
            return [float(value)] * self.n_groups
        value = lr_range(value, self.n_groups)
        values = list(np.asarray(value, dtype=float).reshape(-1)) if is_listy(value) or isinstance(
            value, np.ndarray) else [value]
        try:
            values = listify(values, self.n_groups)
        except FastbaseError:
            raise FastbaseError(f"Got {len(values)} values of {what} for {self.n_groups} layer groups; "
                                "give one value, one per group, or a slice.") from None
        return [float(v) for v in values]

    def _pairs(self):
        """(decayed, not decayed) torch param groups of each layer group."""
        groups = self.opt.param_groups
        return list(zip(groups[0::2], groups[1::2]))

    @property
    def param_groups(self) -> list[dict]:
        return self.opt.param_groups

    @property
    def lrs(self) -> list[float]:
        return [g["lr"] for g, _ in self._pairs()]

    @property
    def lr(self) -> float:
        return self.opt.param_groups[-1]["lr"]

    @lr.setter
    def lr(self, value):
        for v, pair in zip(self._per_group(value, "lr"), self._pairs()):
            for g in pair:
                g["lr"] = v

    @property
    def moms(self) -> list[float | None]:
        return [_get_mom(g) for g, _ in self._pairs()]

    @property
    def mom(self) -> float | None:
        return _get_mom(self.opt.param_groups[-1])

    @mom.setter
    def mom(self, value):
        for v, pair in zip(self._per_group(value, "momentum"), self._pairs()):
            for g in pair:
                if "betas" in g:
                    g["betas"] = (v, g["betas"][1])
                elif "momentum" in g:
                    g["momentum"] = v

    @property
    def wds(self) -> list[float]:
        return [g["wd"] for g, _ in self._pairs()]

    @property
    def wd(self) -> float:
        return self.opt.param_groups[-2]["wd"]

    @wd.setter
    def wd(self, value):
        for v, (decay, no_decay) in zip(self._per_group(value, "wd"), self._pairs()):
            decay["wd"], no_decay["wd"] = v, v if self.bn_wd else 0.0
            for g in (decay, no_decay):
                if "weight_decay" in g:
                    g["weight_decay"] = 0.0 if self.true_wd else g["wd"]

    # --- the optimizer's job ---------------------------------------------------------------------
    @torch.no_grad()
    def _decay(self) -> None:
        for g in self.opt.param_groups:
            if g["wd"]:
                params = [p for p in g["params"] if p.grad is not None]
                if params:
                    torch._foreach_mul_(params, 1 - g["lr"] * g["wd"])

    def step(self, closure=None):
        if self.true_wd:
            self._decay()
        return self.opt.step(closure)

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.opt.zero_grad(set_to_none=set_to_none)

    @property
    def state(self):
        return self.opt.state

    def state_dict(self) -> dict:
        """The torch optimizer's state dict (its param groups carry lr, momentum and `wd`)."""
        return self.opt.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.opt.load_state_dict(state)

    def __repr__(self):
        return (f"OptimWrapper({type(self.opt).__name__}, {self.n_groups} layer groups, lrs={self.lrs}, "
                f"wds={self.wds}, true_wd={self.true_wd}, bn_wd={self.bn_wd})")


def _get_mom(group: dict):
    if "betas" in group:
        return group["betas"][0]
    return group.get("momentum")
