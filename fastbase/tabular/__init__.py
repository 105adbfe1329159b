"""Layer 6: tables (pandas DataFrames): processors, TabularList and TabularDataBunch, the tabular
model and `tabular_learner`, date helpers, permutation importance. Needs pandas
(`pip install 'fastbase[tabular]'`); `fastbase.vision` never imports this package.

This package's namespace is also the public one for notebooks, as fastai v1's
`from fastai.tabular import *`: everything of `fastbase.basics` (the Learner, the data block API,
callbacks, metrics, `untar_data`, `np`, `torch`, `nn`, `pd`, `plt`...), the names below, and
`ClassificationInterpretation` (loaded on first use: it sits above this layer).
"""
import importlib

from .. import basics
from .data import TabularDataBunch, TabularLine, TabularList
from .importance import permutation_importance, plot_importance
from .loader import TabularDataLoader, TabularDataset
from .models import TabularModel, emb_sz_rule, exp_rmspe, fused_adam, tabular_learner
from .procs import (
    NA_CATEGORY,
    Categorify,
    FillMissing,
    FillStrategy,
    Normalize,
    TabularError,
    TabularProc,
    TabularProcessor,
)
from .transform import add_cyclic_datepart, add_datepart, cont_cat_split

__all__ = [  # sorted; then fastbase.basics' names
    "NA_CATEGORY",
    "Categorify",
    "ClassificationInterpretation",
    "FillMissing",
    "FillStrategy",
    "Normalize",
    "TabularDataBunch",
    "TabularDataLoader",
    "TabularDataset",
    "TabularError",
    "TabularLine",
    "TabularList",
    "TabularModel",
    "TabularProc",
    "TabularProcessor",
    "add_cyclic_datepart",
    "add_datepart",
    "cont_cat_split",
    "emb_sz_rule",
    "exp_rmspe",
    "fused_adam",
    "permutation_importance",
    "plot_importance",
    "tabular_learner",
]
__all__ += basics.__all__

_LAZY = {"ClassificationInterpretation": ("fastbase.interpret", "ClassificationInterpretation")}


def __getattr__(name: str):
    """`fastbase.basics`' names, and those of `_LAZY` on first use (`import *` asks for them too)."""
    if name in _LAZY:
        module, attr = _LAZY[name]
        value = getattr(importlib.import_module(module), attr)
    elif name in basics.__all__:
        value = getattr(basics, name)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
