"""Layer 5, a public namespace: what fastai v1's `from fastai.basics import *` gives, for notebooks
that train any model (lesson 5's SGD on MNIST): the data block API, DataBunch, Learner, callbacks,
metrics, `lr_find`, the datasets and config, plus `np`, `torch`, `nn`, `F`, `optim`, `tensor`,
`TensorDataset`, `Path`, `gzip`, `pickle`, `partial`, `plt` and `pd` (these two loaded on first
use). Nothing image-specific: that is `fastbase.vision`.
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
from .finetune import StageComparison, two_stages
from .learner import Learner, load_learner
from .metrics import accuracy, accuracy_thresh, error_rate, fbeta, top_k_accuracy
from .namespace import PLOTTING, notebook_namespace
from .recorder import Recorder
from .train import lr_find

__all__ = [  # sorted; `plt` and `pd` are added by notebook_namespace below
    "CSVLogger", "Callback", "Category", "CategoryList", "Config", "DataBunch", "DataLoader", "Dataset", "DatasetType",
    "EarlyStopping", "EarlyStoppingCallback", "F", "FastbaseError", "FloatItem", "FloatList", "ItemBase", "ItemList",
    "ItemLists", "LabelList", "LabelLists", "Learner", "MixUp", "MixUpCallback", "MultiCategory", "MultiCategoryList",
    "OneCycleScheduler", "Path", "Recorder", "ReduceLROnPlateau", "ReduceLROnPlateauCallback", "SaveModelCallback",
    "StageComparison", "TensorDataset", "URLs", "accuracy", "accuracy_thresh", "array", "defaults", "download_data",
    "error_rate", "fbeta", "gc", "get_files", "gzip", "itemgetter", "load_data", "load_learner", "lr_find", "math",
    "nn", "noop", "np", "optim", "os", "partial", "pickle", "re", "set_seed", "tensor", "top_k_accuracy", "torch",
    "two_stages", "untar_data",
]
__getattr__, __dir__ = notebook_namespace(__name__, __all__, lazy=PLOTTING)
