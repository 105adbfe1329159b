"""Layer 2: the generic data layer (nothing image-specific): the DataBunch of loaders, the device
loader and its batch transforms, the data errors. Task packages (`fastbase.vision`) build on it.

Modules: `base` (DatasetType, errors, normalisation statistics), `loader` (DeviceDataLoader,
Normalizer), `workers` (how many loader processes), `bunch` (DataBunch); the data block API:
`items` (Category, MultiCategory, FloatItem), `labels` (CategoryList, MultiCategoryList,
FloatList), `item_list` (ItemList), `splits` (its split methods), `label_lists` (ItemLists,
LabelList, LabelLists); `categories` (names of a table column as codes). This namespace gathers
their public names.
"""
from .base import (
    BadFilesError,
    DataError,
    DatasetType,
    EmptyDatasetError,
    LabelError,
    cifar_stats,
    format_list,
    imagenet_stats,
    mnist_stats,
)
from .bunch import DataBunch
from .item_list import ItemList, get_files
from .items import Category, EmptyLabel, FloatItem, ItemBase, MultiCategory
from .label_lists import ItemLists, LabelList, LabelLists, data_collate, load_data
from .labels import CategoryList, EmptyLabelList, FloatList, MultiCategoryList
from .loader import (
    CollateThenTransform,
    DeviceDataLoader,
    Normalizer,
    TfmOrder,
    apply_tfms,
)
from .workers import default_num_workers, resolve_num_workers

__all__ = [
    "BadFilesError", "Category", "CategoryList", "CollateThenTransform", "DataBunch", "DataError", "DatasetType",
    "DeviceDataLoader", "EmptyDatasetError", "EmptyLabel", "EmptyLabelList", "FloatItem", "FloatList", "ItemBase",
    "ItemList", "ItemLists", "LabelError", "LabelList", "LabelLists", "MultiCategory", "MultiCategoryList",
    "Normalizer", "TfmOrder", "apply_tfms", "cifar_stats", "data_collate", "default_num_workers", "format_list",
    "get_files", "imagenet_stats", "load_data", "mnist_stats", "resolve_num_workers",
]
