"""Layer 6: the collaborative-filtering models. Both take `(users, items)`, two int64 tensors of
codes of shape (bs,), and return predicted ratings of shape (bs,):

- `EmbeddingDotBias`: the dot product of a user's and an item's factors plus a bias for each (the
  model of lesson 4), squashed into `y_range` by a sigmoid when given;
- `EmbeddingNN`: the two embeddings concatenated and fed to a small MLP.

Code 0 ('#na#', an unknown user or item) has zero factors and zero bias that never train
(`padding_idx=0`): a prediction for an unknown user rests on the item's bias, and the other way round.
"""
from __future__ import annotations

from itertools import pairwise

import torch
from torch import nn

from ..layers import SigmoidRange, bn_drop_lin, emb_sz_rule

__all__ = ["EmbeddingDotBias", "EmbeddingNN", "emb_sz_rule", "embedding"]


def embedding(n: int, width: int) -> nn.Embedding:
    """An `nn.Embedding(n, width)` with small random weights (truncated normal, std 0.01, as fastai)
    and row 0, the unknown code, at zero and out of training."""
    emb = nn.Embedding(n, width, padding_idx=0)
    with torch.no_grad():
        nn.init.trunc_normal_(emb.weight, std=0.01, a=-0.02, b=0.02)
        emb.weight[0].zero_()
    return emb


def _output(y_range) -> nn.Module:
    return nn.Identity() if y_range is None else SigmoidRange(*y_range)


class EmbeddingDotBias(nn.Module):
    """rating = user factors . item factors + user bias + item bias, through `SigmoidRange(*y_range)`
    when given. `u_weight`/`i_weight` (n, n_factors) and `u_bias`/`i_bias` (n, 1) are fastai's names."""

    def __init__(self, n_factors: int, n_users: int, n_items: int, y_range=None):
        super().__init__()
        self.u_weight, self.i_weight = embedding(n_users, n_factors), embedding(n_items, n_factors)
        self.u_bias, self.i_bias = embedding(n_users, 1), embedding(n_items, 1)
        self.out = _output(y_range)

    def forward(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        dot = (self.u_weight(users) * self.i_weight(items)).sum(1)
        return self.out(dot + self.u_bias(users).squeeze(1) + self.i_bias(items).squeeze(1))


class EmbeddingNN(nn.Module):
    """The user's and the item's embeddings (`emb_szs` = [(n_users, width), (n_items, width)])
    concatenated, dropout `emb_drop`, then Linear-ReLU layers of sizes `layers` (BatchNorm before
    each but the first with `use_bn`, dropout `ps` before each but the first) and a Linear to one
    output, `bn_final` BatchNorm on it, `SigmoidRange(*y_range)` when given. `embeds` holds the two
    embeddings, user first (fastai's layout)."""

    def __init__(self, emb_szs, layers=(50,), ps=None, emb_drop: float = 0.0, y_range=None, use_bn: bool = True,
                 bn_final: bool = False):
        super().__init__()
        layers = list(layers)
        ps = [0.0] * len(layers) if ps is None else ([ps] * len(layers) if isinstance(ps, (int, float)) else list(ps))
        self.embeds = nn.ModuleList([embedding(n, width) for n, width in emb_szs])
        self.emb_drop = nn.Dropout(emb_drop)
        sizes = [sum(width for _, width in emb_szs), *layers, 1]
        mods = []
        for i, (n_in, n_out) in enumerate(pairwise(sizes)):
            last = i == len(sizes) - 2
            mods += bn_drop_lin(n_in, n_out, bn=use_bn and i != 0, p=([0.0] + ps)[i],
                                actn=None if last else nn.ReLU(inplace=True))
        if bn_final:
            mods.append(nn.BatchNorm1d(1))
        self.layers = nn.Sequential(*mods)
        self.out = _output(y_range)

    def forward(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        x = torch.cat([self.embeds[0](users), self.embeds[1](items)], 1)
        return self.out(self.layers(self.emb_drop(x))).squeeze(1)
