"""Layer 5, a public namespace: what fastai v1's `from fastai.basics import *` gives, for notebooks
that train any model (lesson 5's SGD on MNIST): the data block API, DataBunch, Learner, callbacks
and schedules, every metric of `fastbase.metrics`, `lr_find`, `fit_fc`, interpretation, the datasets
and config, plus `np`, `torch`, `nn`, `F`, `optim`, `tensor`, `TensorDataset`, `Path`, `gzip`,
`pickle`, `partial`, `plt` and `pd` (these two loaded on first use). Nothing image-specific: that
is `fastbase.vision`.
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

from . import metrics
from .callback import Callback, annealing_cos, annealing_exp, annealing_linear, annealing_no, annealing_poly
from .callbacks import (
    CSVLogger,
    EarlyStopping,
    EarlyStoppingCallback,
    FlatCosAnnealScheduler,
    GeneralScheduler,
    LearnerTensorboardWriter,
    MixUp,
    MixUpCallback,
    MLFlowTracker,
    OneCycleScheduler,
    OverSamplingCallback,
    PeakMemMetric,
    ReduceLROnPlateau,
    ReduceLROnPlateauCallback,
    SaveModelCallback,
    ShowGraph,
    StopAfterNBatches,
    TerminateOnNaNCallback,
    TrainingPhase,
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
from .interpret import ClassConfusion, ClassificationInterpretation, MultiLabelClassificationInterpretation
from .learner import Learner, load_learner
from .metrics import accuracy, accuracy_thresh, error_rate, fbeta, top_k_accuracy
from .namespace import PLOTTING, doc, notebook_namespace
from .recorder import Recorder
from .train import fit_fc, lr_find

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
__all__ += [  # fastai v1's schedules, callbacks and interpretations (its metrics: all of fastbase.metrics, below)
    "ClassConfusion", "ClassificationInterpretation", "FlatCosAnnealScheduler", "GeneralScheduler",
    "LearnerTensorboardWriter", "MLFlowTracker", "MultiLabelClassificationInterpretation", "OverSamplingCallback",
    "PeakMemMetric", "ShowGraph", "StopAfterNBatches", "TerminateOnNaNCallback", "TrainingPhase", "annealing_cos",
    "annealing_exp", "annealing_linear", "annealing_no", "annealing_poly", "doc", "fit_fc",
]
# Every name of `fastbase.metrics` (fastai v1's `from fastai.metrics import *`), read from there on first use.
_METRICS = {name: f"{metrics.__name__}:{name}" for name in metrics.__all__}
__getattr__, __dir__ = notebook_namespace(__name__, __all__, lazy={**PLOTTING, **_METRICS})
