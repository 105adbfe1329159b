"""Layer 5, a public namespace: what fastai v1's `from fastai.basics import *` gives, for notebooks
that train any model (lesson 5's SGD on MNIST): the data block API, DataBunch, Learner, callbacks,
metrics, `lr_find`, the datasets and config, plus `np`, `torch`, `nn`, `F`, `optim`, `tensor`,
`TensorDataset`, `Path`, `gzip`, `pickle`, `partial`, `plt` and `pd` (these two loaded on first
use). Nothing image-specific: that is `fastbase.vision`.
"""
import gc
import gzip
import importlib
import importlib.util
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

from .callback import Callback
from .callbacks import (
    CSVLogger,
    EarlyStopping,
    EarlyStoppingCallback,
    MixUp,
    MixUpCallback,
    OneCycleScheduler,
    ReduceLROnPlateau,
    ReduceLROnPlateauCallback,
    SaveModelCallback,
)
from .core import Config, FastbaseError, Path, defaults, noop, set_seed
from .data import (
    Category,
    CategoryList,
    DataBunch,
    DatasetType,
    FloatItem,
    FloatList,
    ItemBase,
    ItemList,
    ItemLists,
    LabelList,
    LabelLists,
    MultiCategory,
    MultiCategoryList,
    get_files,
    load_data,
)
from .datasets import URLs, download_data, untar_data
from .learner import Learner, load_learner
from .metrics import accuracy, accuracy_thresh, error_rate, fbeta, top_k_accuracy
from .recorder import Recorder
from .train import lr_find

_HAS_PANDAS = importlib.util.find_spec("pandas") is not None

__all__ = [  # sorted
    "CSVLogger", "Callback", "Category", "CategoryList", "Config", "DataBunch", "DataLoader", "Dataset", "DatasetType",
    "EarlyStopping", "EarlyStoppingCallback", "F", "FastbaseError", "FloatItem", "FloatList", "ItemBase", "ItemList",
    "ItemLists", "LabelList", "LabelLists", "Learner", "MixUp", "MixUpCallback", "MultiCategory", "MultiCategoryList",
    "OneCycleScheduler", "Path", "Recorder", "ReduceLROnPlateau", "ReduceLROnPlateauCallback", "SaveModelCallback",
    "TensorDataset", "URLs", "accuracy", "accuracy_thresh", "array", "defaults", "download_data", "error_rate",
    "fbeta", "gc", "get_files", "gzip", "itemgetter", "load_data", "load_learner", "lr_find", "math", "nn", "noop",
    "np", "optim", "os", "partial", "pickle", "re", "set_seed", "tensor", "top_k_accuracy", "torch",
    "untar_data",
]
__all__ += ["plt"]  # noqa: F822 -- loaded on first use by __getattr__ below
if _HAS_PANDAS:  # a name in __all__ must resolve, or `import *` fails
    __all__ += ["pd"]  # noqa: F822 -- loaded on first use by __getattr__ below

_LAZY = {"plt": "matplotlib.pyplot", "pd": "pandas"}


def __getattr__(name: str):
    """`plt` and `pd` on first use (PEP 562); `from fastbase.basics import *` asks for them too."""
    if name in _LAZY:
        module = importlib.import_module(_LAZY[name])
        globals()[name] = module
        return module
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
