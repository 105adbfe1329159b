"""Layer 6: `collab_learner` and `CollabLearner`, a Learner that also reads its model's embeddings
by user or item name (`bias`, `weight`), as lesson 4 does; and `pca` to look at those factors.
`load_learner` (the one of `fastbase.learner`, re-exported here) gives a `CollabLearner` back from
its export, which records the Learner's class.

Top and bottom items by bias, with the names in `names`::

    ranked = sorted(zip(learn.bias(names).tolist(), names))   # ranked[:15] lowest, ranked[-15:] highest
"""
from __future__ import annotations

import torch
from torch import nn

from .. import learner as base
from ..core import ifnone
from ..data import DataError, FloatItem, format_list
from ..export import model_spec
from ..layers import emb_sz_rule
from ..learner import load_learner
from ..loop import eval_grad_mode
from .data import UNKNOWN, CollabDataBunch
from .models import EmbeddingDotBias, EmbeddingNN

__all__ = ["CollabLearner", "Factors", "collab_learner", "load_learner", "pca"]


class Factors(torch.Tensor):
    """The tensor `CollabLearner.weight` returns: a plain tensor of factors (n, n_factors) that also
    offers `.pca(k)`, as lesson 4 calls it. Only these tensors have the method; torch's own are left alone."""

    def pca(self, k: int = 3) -> torch.Tensor:
        """`pca(self, k)`: the rows projected on their first `k` principal components, (n, k)."""
        return pca(self, k)


class CollabLearner(base.Learner):
    """A Learner on a `CollabDataBunch`: `predict` on a row gives a rating; `bias` and `weight` read
    the model's embeddings for users or items named as in the data."""

    def get_idx(self, arr, is_item: bool = True) -> torch.Tensor:
        """Codes of the item (or user) names `arr`; a name the training data did not have is an error."""
        name = self.data.names[1 if is_item else 0]
        classes = self.data.classes[name]
        index = {c: i for i, c in enumerate(classes)}
        arr = list(arr.tolist() if hasattr(arr, "tolist") else arr)
        missing = [o for o in arr if index.get(o, 0) == 0]
        if missing:
            raise DataError(f"{name} {format_list(missing)} not in the training data, so the model has learnt nothing "
                            f"about {'them' if len(missing) > 1 else 'it'} (a name only the validation rows have is "
                            f"'{UNKNOWN}' to the model). Known {name}s: {format_list(classes[1:])}.")
        return torch.tensor([index[o] for o in arr], dtype=torch.long)

    def _embedding(self, kind: str, is_item: bool) -> nn.Embedding:
        model = self.model
        if isinstance(model, EmbeddingDotBias):
            return getattr(model, f"{'i' if is_item else 'u'}_{kind}")
        if isinstance(model, EmbeddingNN) and kind == "weight":
            return model.embeds[1 if is_item else 0]
        raise DataError(f"learn.{kind} reads an EmbeddingDotBias model (and `weight` an EmbeddingNN); this "
                        f"Learner's model is a {type(model).__name__}.")

    def _lookup(self, arr, kind: str, is_item: bool) -> torch.Tensor:
        emb = self._embedding(kind, is_item)
        idx = self.get_idx(arr, is_item).to(emb.weight.device)
        with torch.no_grad():
            return emb(idx).float().cpu()

    def bias(self, arr, is_item: bool = True) -> torch.Tensor:
        """The learnt bias of each item (or user, `is_item=False`) named in `arr`: shape (len(arr),)."""
        return self._lookup(arr, "bias", is_item).squeeze(1)

    def weight(self, arr, is_item: bool = True) -> Factors:
        """The learnt factors of each item (or user) named in `arr`: shape (len(arr), n_factors), as
        `Factors`, so that lesson 4's `learn.weight(top_movies).pca(3)` works."""
        return self._lookup(arr, "weight", is_item).as_subclass(Factors)

    def predict(self, item, thresh: float = 0.5):
        """(FloatItem, rating, rating) for one row (a Series or dict with the user and item columns, or a
        `(user, item)` pair), as fastai v1. An unknown user or item gets code 0 (zero factors and bias)
        with an `UnknownNameWarning`, so the rating rests on the other one's bias."""
        x, _ = self.data.one_item(item)
        self.model.eval()
        with eval_grad_mode(self.model):
            pred = self.model(*x)
        rating = pred.detach().float().cpu().clone().reshape(())
        return FloatItem(rating), rating, rating


def collab_learner(data: CollabDataBunch, n_factors: int | None = None, use_nn: bool = False,
                   emb_szs: dict | None = None, layers=None, ps=None, emb_drop: float = 0.0, y_range=None,
                   use_bn: bool = True, bn_final: bool = False, **learn_kwargs) -> CollabLearner:
    """A Learner for `data` with an `EmbeddingDotBias` of `n_factors` (default 50) factors, or with
    `use_nn` an `EmbeddingNN` (embedding widths from `emb_szs` = {column: width}, else `n_factors` when
    given, else fastai's rule; hidden `layers`, default [n_factors or 50]). `y_range=(low, high)`
    squashes the outputs into that range. Other arguments (`wd`, `metrics`...) go to the Learner."""
    if not isinstance(data, CollabDataBunch):
        raise DataError(f"collab_learner needs a CollabDataBunch (CollabDataBunch.from_df), got {type(data).__name__}.")
    y_range = None if y_range is None else [float(v) for v in y_range]
    sizes = [len(data.classes[name]) for name in data.names[:2]]
    if use_nn:
        widths = ifnone(emb_szs, {})
        emb = [[n, int(widths.get(name, n_factors or emb_sz_rule(n)))] for name, n in zip(data.names, sizes)]
        kwargs = {"emb_szs": emb, "layers": list(ifnone(layers, [n_factors or 50])), "ps": ps,
                  "emb_drop": float(emb_drop), "y_range": y_range, "use_bn": use_bn, "bn_final": bn_final}
        factory = EmbeddingNN
    else:
        kwargs = {"n_factors": int(n_factors or 50), "n_users": sizes[0], "n_items": sizes[1], "y_range": y_range}
        factory = EmbeddingDotBias
    learn = CollabLearner(data, factory(**kwargs), **learn_kwargs)
    learn.model_spec = model_spec(factory, kwargs)
    return learn


def pca(t: torch.Tensor, k: int = 3) -> torch.Tensor:
    """The rows of `t` (n, d) projected on their first `k` principal components: (n, k). Lesson 4's
    `movie_w.pca(3)` is `pca(movie_w, 3)` (`learn.weight` gives `Factors`, which offer both). Exact (an
    SVD of the centred rows); each component's sign is arbitrary."""
    t = torch.as_tensor(t, dtype=torch.float32).as_subclass(torch.Tensor)
    if t.dim() != 2 or not 1 <= k <= min(t.shape):
        raise ValueError(f"pca needs a 2-d tensor and 1 <= k <= min(its shape); got shape {tuple(t.shape)} and k={k}.")
    centred = t - t.mean(0)
    _, _, vh = torch.linalg.svd(centred, full_matrices=False)
    return centred @ vh[:k].T
