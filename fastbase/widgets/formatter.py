"""Layer 8: which images to look at when cleaning a data set (fastai v1's `DatasetFormatter`).

`from_toplosses` orders a set's images by the trained model's loss on them, highest first: wrong
labels and broken images gather at the top. `from_similars` pairs images whose activations at one
layer of the model point the same way (cosine similarity), most similar first: near-duplicates,
which inflate the validation score when one copy sits in each set. Both return `(ds, idxs)` for
`ImageCleaner(ds, idxs, path)`.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..data import DatasetType
from ..hooks import Hook
from ..interpret import ClassificationInterpretation, as_ds_type
from ..layers import AdaptiveConcatPool2d
from .cleaning import CleaningError, CleaningSet, cleaning_set

__all__ = ["DatasetFormatter", "layer_at", "most_similar_pairs"]


class DatasetFormatter:
    """Builds `(ds, idxs)` for `ImageCleaner`: `ds` a `CleaningSet` (the images, their labels, and the
    DataBunch's other labelled images, which cleaned.csv keeps), `idxs` the positions in `ds` to show."""

    @classmethod
    def from_toplosses(cls, learn, n_imgs: int | None = None, ds_type=None) -> tuple[CleaningSet, list]:
        """The `n_imgs` (default: all) images of `ds_type` ('valid' or 'train') with the highest loss
        under `learn`, highest first. The training set is read in order and without augmentation (fastai's
        DatasetType.Fix). `ds_type` None: the validation set, or the training set when there is no
        validation set (lesson 2's `split_none()`, which is fastai v1's only choice)."""
        if ds_type is None:
            ds_type = DatasetType.Valid if _has_items(learn.data, DatasetType.Valid) else DatasetType.Train
        interp = ClassificationInterpretation.from_learner(learn, ds_type)
        return cleaning_set(learn.data, interp.ds_type), interp.top_losses(n_imgs).indices.tolist()

    @classmethod
    def from_similars(cls, learn, layer_ls: Sequence[int] = (0, 7, 2), ds_type=None, pool=AdaptiveConcatPool2d,
                      pool_dim: int = 4, n_pairs: int | None = None) -> tuple[CleaningSet, list]:
        """The `n_pairs` (default: as many as images) most similar pairs of images, flattened:
        `idxs = [a0, b0, a1, b1, ...]`, most similar pair first; for `ImageCleaner(..., duplicates=True)`.

        Similarity is the cosine of the activations of `learn.model[layer_ls[0]][layer_ls[1]]...` (the
        default `[0, 7, 2]` is the last block of a resnet34/50 body; `[0, -1]` the last layer of any
        cnn_learner body), read with a forward hook and pooled to `pool_dim` x `pool_dim` by `pool`
        (`None`: the raw activations). `ds_type` None compares training and validation images together,
        so that a copy in each set is found; DatasetType.Train or .Valid look at one set."""
        module = layer_at(learn.model, layer_ls)
        ds_type = None if ds_type is None else as_ds_type(ds_type)
        ds = cleaning_set(learn.data, ds_type)
        types = [DatasetType.Fix, DatasetType.Valid] if ds_type is None else \
            [DatasetType.Fix if ds_type == DatasetType.Train else ds_type]
        types = [t for t in types if ds_type is not None or _has_items(learn.data, t)]  # split_none: no valid
        pooling = None if pool is None else pool(pool_dim)
        features = torch.cat([_activations(learn, module, t, pooling, layer_ls) for t in types])
        if len(features) != len(ds):
            raise CleaningError(f"layer_ls={list(layer_ls)} gave activations for {len(features)} of the {len(ds)} "
                                "images: that layer does not run once per image (a feature cache skips the body?).")
        return ds, [i for pair in most_similar_pairs(features, n_pairs) for i in pair]


def _has_items(data, ds_type: DatasetType) -> bool:
    """True when `data`'s loader for `ds_type` exists and reads at least one item."""
    dl = data.dl(ds_type)
    return dl is not None and len(dl.dataset) > 0


def layer_at(model: nn.Module, layer_ls: Sequence[int]) -> nn.Module:
    """`model[i][j][k]...` for `layer_ls = [i, j, k, ...]`, indexing each module's children in order (as
    `nn.Sequential` does); an error names the part of the path that does not exist and what is there."""
    module, walked = model, "model"
    for i in layer_ls:
        kids = list(module.children())
        if not isinstance(i, int) or not -len(kids) <= i < len(kids):
            there = ", ".join(f"{k}: {type(c).__name__}" for k, c in enumerate(kids)) or "none"
            raise CleaningError(f"layer_ls={list(layer_ls)} does not exist in this model: {walked} "
                                f"({type(module).__name__}) has no child {i!r} (its children: {there}). Pass the "
                                "path of a layer that does, e.g. layer_ls=[0, -1] for the last layer of a "
                                "cnn_learner body.")
        module, walked = kids[i], f"{walked}[{i}]"
    return module


def _activations(learn, module: nn.Module, ds_type: DatasetType, pooling, layer_ls) -> torch.Tensor:
    """(n, features) float32 on the CPU: `module`'s output for each image of `ds_type`, pooled, flattened."""
    found = []

    def keep(m, input, output):
        out = output[0] if isinstance(output, (list, tuple)) else output
        if pooling is not None and out.dim() == 4:
            out = pooling(out)
        found.append(out.flatten(1).float().cpu())

    with Hook(module, keep):
        learn.get_preds(ds_type)
    if not found:
        raise CleaningError(f"The layer at layer_ls={list(layer_ls)} ({type(module).__name__}) never ran on the "
                            "images: pick a layer the model's forward pass uses.")
    return torch.cat(found)


def most_similar_pairs(features: torch.Tensor, n_pairs: int | None = None, chunk: int = 1024) -> list[tuple[int, int]]:
    """The `n_pairs` (default: len(features)) pairs `(i, j)`, i < j, of rows of `features` (n, d) with
    the highest cosine similarity, highest first (ties: lower indexes first). Rows are compared
    `chunk` at a time against the rows before them, so memory stays at chunk x n."""
    n = len(features)
    k = min(n if n_pairs is None else int(n_pairs), n * (n - 1) // 2)
    if k <= 0:
        return []
    unit = F.normalize(features.float(), dim=1)
    best_sims, best_ids = torch.empty(0), torch.empty(0, dtype=torch.long)
    for start in range(1, n, chunk):
        rows = torch.arange(start, min(start + chunk, n))
        sims = unit[rows] @ unit[: int(rows[-1])].T  # (rows, the columns before the last row)
        cols = torch.arange(sims.shape[1])
        sims = sims.masked_fill(cols[None, :] >= rows[:, None], float("-inf"))
        top = sims.flatten().topk(min(k, sims.numel()))
        ids = rows[top.indices // sims.shape[1]] * n + cols[top.indices % sims.shape[1]]
        best_sims, best_ids = torch.cat([best_sims, top.values]), torch.cat([best_ids, ids])
        best_ids, order = best_ids.sort(stable=True)  # lower pair ids first among equal similarities
        best_sims = best_sims[order]
        best_sims, order = best_sims.sort(descending=True, stable=True)
        best_sims, best_ids = best_sims[:k], best_ids[order][:k]
    keep = torch.isfinite(best_sims)
    return [(int(pid % n), int(pid // n)) for pid in best_ids[keep]]
