"""Layer 6: tables (pandas DataFrames): processors, TabularList and TabularDataBunch, the tabular
model and `tabular_learner`, date helpers, permutation importance. Needs pandas
(`pip install 'fastbase[tabular]'`); `fastbase.vision` never imports this package.

This package's namespace is also the public one for notebooks, as fastai v1's
`from fastai.tabular import *`: everything of `fastbase.basics` (the Learner, the data block API,
callbacks, metrics, `untar_data`, `np`, `torch`, `nn`, `pd`, `plt`...), the names below, and
`ClassificationInterpretation` (loaded on first use: it sits above this layer).
"""
from .. import basics
from ..namespace import notebook_namespace
from .data import TabularDataBunch, TabularLine, TabularList
from .importance import permutation_importance, plot_importance
from .loader import TabularDataLoader, TabularDataset
from .models import TabularModel, emb_sz_rule, exp_rmspe, fused_adam, tabular_learner
from .processor import TabularProcessor
from .procs import (
    NA_CATEGORY,
    Categorify,
    FillMissing,
    FillStrategy,
    Normalize,
    TabularError,
    TabularProc,
)
from .transform import add_cyclic_datepart, add_datepart, add_elapsed_times, cont_cat_split, make_date

__all__ = [  # sorted; notebook_namespace adds fastbase.basics' names
    "NA_CATEGORY",
    "Categorify",
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
    "add_elapsed_times",
    "cont_cat_split",
    "emb_sz_rule",
    "exp_rmspe",
    "fused_adam",
    "make_date",
    "permutation_importance",
    "plot_importance",
    "tabular_learner",
]
__getattr__, __dir__ = notebook_namespace(
    __name__, __all__, lazy={"ClassificationInterpretation": "fastbase.interpret:ClassificationInterpretation"},
    base=basics)
