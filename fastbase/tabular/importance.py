"""Layer 6: which columns a tabular model relies on, by permutation (Breiman's method): shuffle one
input column of the validation set, breaking its link with the label, and measure how much worse the
model does. A column whose shuffling costs nothing is one the model does not use.

`permutation_importance(learn)` returns a DataFrame (one row per input column of the table, most
important first); `plot_importance` draws it as horizontal bars. A continuous column and the `_na`
column FillMissing made for it are shuffled together, as one feature.
"""
from __future__ import annotations

import torch

from ..core import FastbaseError, ifnone
from ..data import DatasetType
from ..data.categories import require_pandas
from ..figures import finish_figure, subplots
from ..metrics import as_metric
from .data import TabularDataBunch

__all__ = ["permutation_importance", "plot_importance"]


def _features(data) -> dict:
    """{feature: [('cat'|'cont', column index), ...]}: the input columns of the table, each with the
    `_na` indicator FillMissing added for it."""
    features = {}
    for j, name in enumerate(data.cont_names):
        features.setdefault(name, []).append(("cont", j))
    for j, name in enumerate(data.cat_names):
        base = name[:-3] if name.endswith("_na") and name[:-3] in features else name
        features.setdefault(base, []).append(("cat", j))
    return features


def _score(learn, ds, metric) -> float:
    dl = learn.data.valid_dl.new(dataset=ds)
    values = learn.validate(dl=dl, metrics=[] if metric is None else [metric])
    return float(values[0 if metric is None else 1])


def permutation_importance(learn, ds_type: DatasetType = DatasetType.Valid, metric=None, n_repeats: int = 3,
                           seed: int | None = 0):
    """How much the model's score gets worse when each input column of the `ds_type` set (default:
    validation) is shuffled, averaged over `n_repeats` shuffles (reproducible with `seed`).

    The score is the loss by default (importance = shuffled loss - baseline loss), or `metric` (a
    metric function or object where higher is better, such as `accuracy`: importance = baseline -
    shuffled). Returns a DataFrame with columns `feature`, `importance`, `std` (over the repeats),
    most important first; `baseline` is in its `attrs`."""
    pd = require_pandas()
    data = learn.data
    if not isinstance(data, TabularDataBunch):
        raise FastbaseError(f"permutation_importance needs a tabular Learner (a TabularDataBunch); this one's data is "
                            f"a {type(data).__name__}.")
    if n_repeats < 1:
        raise FastbaseError(f"n_repeats must be at least 1, got {n_repeats}.")
    ds = data.dl(ds_type).dataset
    if not data.has_labels(ds_type):
        raise FastbaseError(f"The {DatasetType(ds_type).name} set has no labels, so there is no score to lose.")
    metric = None if metric is None else as_metric(metric)
    sign = 1.0 if metric is None else -1.0  # a loss grows when the model gets worse; a metric falls
    baseline = _score(learn, ds, metric)
    gen = torch.Generator().manual_seed(seed) if seed is not None else None
    rows = []
    for feature, columns in _features(data).items():
        drops = []
        for _ in range(n_repeats):
            perm = torch.randperm(len(ds), generator=gen)
            cats, conts = ds.cats.clone(), ds.conts.clone()
            for kind, j in columns:
                target = cats if kind == "cat" else conts
                target[:, j] = target[perm, j]
            drops.append(sign * (_score(learn, ds.new(cats, conts), metric) - baseline))
        values = torch.tensor(drops, dtype=torch.float64)
        rows.append({"feature": feature, "importance": float(values.mean()),
                     "std": float(values.std()) if n_repeats > 1 else 0.0})
    frame = pd.DataFrame(rows).sort_values("importance", ascending=False, kind="stable").reset_index(drop=True)
    frame.attrs["baseline"] = baseline
    frame.attrs["score"] = "loss" if metric is None else metric.name
    return frame


def plot_importance(importance, top: int | None = 20, figsize=None, return_fig: bool | None = None, save_to=None):
    """Horizontal bars of `permutation_importance`'s result (the `top` features, most important at
    the top), with the spread over repeats as error bars. Returns the Figure."""
    frame = importance.head(ifnone(top, len(importance))).iloc[::-1]
    fig, ax = subplots(figsize=ifnone(figsize, (6, 0.3 * len(frame) + 1.2)))
    ax.barh(frame["feature"].astype(str), frame["importance"], xerr=frame["std"], color="tab:blue")
    score = importance.attrs.get("score", "loss")
    ax.set_xlabel(f"{'increase in ' if score == 'loss' else 'drop in '}{score} when shuffled")
    ax.set_title("Permutation importance")
    ax.axvline(0, color="black", linewidth=0.8)
    fig.tight_layout()
    return finish_figure(fig, return_fig, save_to)
