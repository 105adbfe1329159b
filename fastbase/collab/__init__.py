"""Layer 6: collaborative filtering (lesson 4): ratings of items by users in a pandas DataFrame,
`CollabDataBunch.from_df`, `collab_learner` (`EmbeddingDotBias` or `EmbeddingNN`), the learnt
biases and factors by name (`learn.bias`, `learn.weight`) and `pca`.

Modules: `data` (encoding names as codes, the DataBunch), `models`, `learner`. This namespace is
also the public one for notebooks: `from fastbase.collab import *` gives the collab API and what
`from fastbase.basics import *` gives (the Learner, callbacks, `untar_data`, `np`, `torch`, `nn`,
`pd`, `plt`...), through the explicit `__all__` below; `load_learner` is the one that gives a
`CollabLearner` back. pandas is needed (the `tabular` extra) once a DataFrame is read; `plt` and
`pd` are loaded on first use, as in `fastbase.basics`.
"""
import gc
import gzip
import math
import os
import pickle
import re
from functools import partial
from operator import itemgetter

import numpy as np
import torch
import torch.nn.functional as F
from numpy import array
from torch import nn, optim, tensor
from torch.utils.data import DataLoader, Dataset, TensorDataset

from .. import basics
from ..callback import Callback
from ..callbacks import (
    CSVLogger,
    EarlyStopping,
    EarlyStoppingCallback,
    OneCycleScheduler,
    ReduceLROnPlateau,
    ReduceLROnPlateauCallback,
    SaveModelCallback,
)
from ..core import Config, FastbaseError, Path, defaults, noop, set_seed
from ..data import DataBunch, DatasetType, FloatItem
from ..datasets import URLs, download_data, untar_data
from ..learner import Learner
from ..recorder import Recorder
from ..train import lr_find
from .data import UNKNOWN, CollabDataBunch, RatingsDataset, UnknownNameWarning, encode
from .learner import CollabLearner, collab_learner, load_learner, pca
from .models import EmbeddingDotBias, EmbeddingNN, emb_sz_rule, embedding

__all__ = [  # the collab API; sorted
    "UNKNOWN", "CollabDataBunch", "CollabLearner", "EmbeddingDotBias", "EmbeddingNN", "RatingsDataset",
    "UnknownNameWarning", "collab_learner", "emb_sz_rule", "embedding", "encode", "load_learner", "pca",
]
__all__ += [  # what fastbase.basics gives a notebook; sorted
    "CSVLogger", "Callback", "Config", "DataBunch", "DataLoader", "Dataset", "DatasetType", "EarlyStopping",
    "EarlyStoppingCallback", "F", "FastbaseError", "FloatItem", "Learner", "OneCycleScheduler", "Path", "Recorder",
    "ReduceLROnPlateau", "ReduceLROnPlateauCallback", "SaveModelCallback", "TensorDataset", "URLs", "array",
    "defaults", "download_data", "gc", "gzip", "itemgetter", "lr_find", "math", "nn", "noop", "np", "optim", "os",
    "partial", "pickle", "re", "set_seed", "tensor", "torch", "untar_data",
]
__all__ += ["plt"]  # loaded on first use by __getattr__ below
if "pd" in basics.__all__:  # a name in __all__ must resolve, or `import *` fails
    __all__ += ["pd"]  # loaded on first use by __getattr__ below


def __getattr__(name: str):
    """`plt` and `pd` on first use, from `fastbase.basics` (PEP 562)."""
    if name in ("plt", "pd"):
        value = getattr(basics, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | {"plt", "pd"})
