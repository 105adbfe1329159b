"""Layer 2: the generic data layer (nothing image-specific): the DataBunch of loaders, the device
loader and its batch transforms, the data errors. Task packages (`fastbase.vision`) build on it.

Modules: `base` (DatasetType, errors, normalisation statistics), `loader` (DeviceDataLoader,
Normalizer, worker count), `bunch` (DataBunch). This namespace gathers their public names.
"""
from .base import (
    BadFilesError,
    DataError,
    DatasetType,
    EmptyDatasetError,
    LabelError,
    cifar_stats,
    imagenet_stats,
    mnist_stats,
)
from .bunch import DataBunch
from .loader import (
    CollateThenTransform,
    DeviceDataLoader,
    Normalizer,
    TfmOrder,
    apply_tfms,
    resolve_num_workers,
)

__all__ = ["BadFilesError", "CollateThenTransform", "DataBunch", "DataError", "DatasetType", "DeviceDataLoader",
           "EmptyDatasetError", "LabelError", "Normalizer", "TfmOrder", "apply_tfms", "cifar_stats", "imagenet_stats",
           "mnist_stats", "resolve_num_workers"]
