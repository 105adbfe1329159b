"""Layer 6: the tabular model (entity embeddings for the categorical columns, then a batch-normed
MLP), its embedding size rule, `tabular_learner`, and the `exp_rmspe` metric of lesson 6.

`TabularModel` is built from plain arguments only, so `Learner.export` rebuilds it from its
`model_spec` without pickling.
"""
from __future__ import annotations

import torch
from torch import nn

from ..core import FastbaseError, ifnone, listify
from ..export import model_spec
from ..layers import SigmoidRange, bn_drop_lin, emb_sz_rule
from ..learner import Learner
from ..metrics import Metric
from .data import TabularDataBunch

__all__ = ["TabularModel", "emb_sz_rule", "exp_rmspe", "fused_adam", "tabular_learner"]


class TabularModel(nn.Module):
    """`forward(x_cat (bs, n_cat) int64, x_cont (bs, n_cont) float)` -> `(bs, out_sz)`.

    Each categorical column has its embedding (`emb_szs`: [(codes, width), ...]); the embeddings
    (after `emb_drop` dropout) and the batch-normed continuous columns are concatenated and go through
    Linear+ReLU layers of sizes `layers`, with BatchNorm (`use_bn`) before every linear layer but the
    first and dropout `ps` before each hidden one, then a linear output; `y_range` squashes it into a
    range with a sigmoid (regression), and `bn_final` batch-norms the output."""

    def __init__(self, emb_szs, n_cont: int, out_sz: int, layers, ps=None, emb_drop: float = 0.0, y_range=None,
                 use_bn: bool = True, bn_final: bool = False):
        super().__init__()
        layers = [int(n) for n in listify(layers)]
        ps = [0.0] * len(layers) if ps is None else listify(ps)
        if len(ps) == 1 and len(layers) > 1:
            ps = ps * len(layers)
        if len(ps) != len(layers):
            raise FastbaseError(f"ps has {len(ps)} dropout values for {len(layers)} layers {layers}; give one per "
                                "layer.")
        self.embeds = nn.ModuleList([nn.Embedding(int(n), int(w)) for n, w in emb_szs])
        self.emb_drop = nn.Dropout(emb_drop)
        self.bn_cont = nn.BatchNorm1d(n_cont) if n_cont else None
        self.n_emb, self.n_cont = sum(int(w) for _, w in emb_szs), n_cont
        sizes = [self.n_emb + n_cont, *layers, out_sz]
        blocks = []
        for i in range(len(sizes) - 1):
            last = i == len(sizes) - 2
            blocks += bn_drop_lin(sizes[i], sizes[i + 1], bn=use_bn and i != 0, p=0.0 if last else float(ps[i]),
                                  actn=None if last else nn.ReLU(inplace=True))
        if bn_final:
            blocks.append(nn.BatchNorm1d(sizes[-1]))
        self.layers = nn.Sequential(*blocks)
        self.y_range = None if y_range is None else SigmoidRange(*y_range)

    def forward(self, x_cat: torch.Tensor, x_cont: torch.Tensor) -> torch.Tensor:
        parts = []
        if self.embeds:
            parts.append(self.emb_drop(torch.cat([e(x_cat[:, i]) for i, e in enumerate(self.embeds)], 1)))
        if self.n_cont:
            parts.append(self.bn_cont(x_cont))
        x = self.layers(parts[0] if len(parts) == 1 else torch.cat(parts, 1))
        return x if self.y_range is None else self.y_range(x)


def fused_adam(params, **kwargs) -> torch.optim.Adam:
    """Adam with fastai's betas (0.9, 0.99), as fastbase's default `opt_func`, computed by torch's fused
    kernel where the device has one (the CPU since torch 2.4): for a small model, whose step is many
    small tensors, the per-parameter Python loop of the plain implementation is most of the step's
    time (bench/RESULTS.md, tabular.py). Falls back to the plain implementation elsewhere."""
    try:
        return torch.optim.Adam(params, betas=(0.9, 0.99), fused=True, **kwargs)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.Adam(params, betas=(0.9, 0.99), **kwargs)


def tabular_learner(data, layers=(200, 100), emb_szs=None, metrics=None, ps=None, emb_drop: float = 0.0,
                    y_range=None, use_bn: bool = True, bn_final: bool = False, **learn_kwargs) -> Learner:
    """A Learner with a `TabularModel` for a TabularDataBunch: embedding widths by `emb_sz_rule`
    unless `emb_szs` ({column: width}) says, one output per class (or per regression target).
    Other keyword arguments go to `Learner` (`loss_func`, `wd`, `callback_fns`...); `opt_func`
    defaults to `fused_adam` (Adam, one fused kernel per step: small models step much faster)."""
    if not isinstance(data, TabularDataBunch):
        raise FastbaseError(f"tabular_learner needs a TabularDataBunch (TabularList...databunch() or "
                            f"TabularDataBunch.from_df); got a {type(data).__name__}.")
    out_sz = data.c
    if out_sz is None:
        raise FastbaseError("The data have no classes and no regression targets, so the model's output size is "
                            "unknown: label them (label_from_df(cols=dep_var)).")
    if isinstance(emb_szs, (list, tuple)):
        raise FastbaseError("emb_szs is a dict {column name: embedding width}, as in fastai v1.")
    kwargs = {"emb_szs": [list(p) for p in data.get_emb_szs(ifnone(emb_szs, {}))], "n_cont": len(data.cont_names),
              "out_sz": int(out_sz), "layers": [int(n) for n in listify(layers)],
              "ps": None if ps is None else [float(p) for p in listify(ps)], "emb_drop": float(emb_drop),
              "y_range": None if y_range is None else [float(v) for v in y_range], "use_bn": bool(use_bn),
              "bn_final": bool(bn_final)}
    model = TabularModel(**kwargs)
    spec = model_spec(TabularModel, kwargs)
    learn_kwargs.setdefault("opt_func", fused_adam)
    return Learner(data, model, metrics=metrics, model_spec=spec, **learn_kwargs)


class exp_rmspe(Metric):
    """Root mean squared percentage error of exp(prediction) against exp(target), for a model trained
    on log values (lesson 6, Rossmann): sqrt(mean(((exp(t) - exp(p)) / exp(t))**2)) over the whole
    validation set (not an average of per-batch roots)."""

    def __init__(self):
        self.reset()

    def reset(self) -> None:
        self.total, self.count = None, 0

    def accumulate(self, pred, *yb) -> None:
        targ = yb[0].view(-1).float().exp()
        pct = (targ - pred.view(-1).float().exp()) / targ
        total = (pct * pct).sum()
        self.total = total if self.total is None else self.total + total
        self.count += targ.numel()

    @property
    def value(self):
        return None if self.total is None else (self.total / max(self.count, 1)).sqrt()

    @property
    def name(self) -> str:
        return "exp_rmspe"
