"""Layer 6: images: opening and decoding, transforms, ImageDataBunch, models and cnn_learner.

This package's namespace is also the public one for notebooks: `from fastbase.vision import *`
gives what course-v3 lessons use (the API from `untar_data` to `ClassificationInterpretation`,
plus `np`, `torch`, `nn`, `F`, `plt`, `pd`, `Path`, `re` and `doc`; the data block API from
`ImageList` to `LabelLists`; and the rest of fastai v1's notebook vocabulary: `gc`, `gzip`,
`pickle`, `PIL`, `array`, `tensor`, `optim`, `TensorDataset`, `itemgetter`, `noop`...), through the explicit
`__all__` below, completed by the names of `fastbase.basics` it does not define itself. Library code
never star-imports; it imports from the modules themselves.
`plt` and `pd` are loaded on first use (PEP 562 `__getattr__`), so `import fastbase.vision`
does not pay for matplotlib's pyplot or pandas; `import *` asks for them, and then gets them.
"""
import gc
import gzip
import math
import os
import pickle
import random
import re
from functools import partial
from operator import itemgetter

import numpy as np
import PIL
import torch
import torch.nn.functional as F
from numpy import array
from torch import nn, optim, tensor
from torch.utils.data import TensorDataset

from .. import basics
from ..callback import Callback, Order
from ..callbacks import (
    AccumulateScheduler,
    ActivationStats,
    BnFreeze,
    Checkpoint,
    CSVLogger,
    EarlyStopping,
    EarlyStoppingCallback,
    GradientAccumulation,
    GradientClipping,
    Hook,
    Hooks,
    LossMetrics,
    LRFinder,
    MixedPrecision,
    MixUp,
    MixUpCallback,
    MixUpLoss,
    OneCycleScheduler,
    ProgressCallback,
    RecalibrateBN,
    ReduceLROnPlateau,
    ReduceLROnPlateauCallback,
    SaveModelCallback,
    TensorBoardLogger,
    TerminateOnNaN,
    dummy_eval,
    hook_output,
    hook_outputs,
    model_sizes,
    num_features_model,
)
from ..core import Config, FastbaseError, Path, defaults, noop, set_seed
from ..data import (
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
    cifar_stats,
    get_files,
    imagenet_stats,
    load_data,
    mnist_stats,
)
from ..datasets import URLs, download_data, untar_data
from ..finetune import StageComparison, two_stages
from ..interpret import ClassificationInterpretation
from ..layers import (
    AdaptiveConcatPool2d,
    Flatten,
    Lambda,
    MergeLayer,
    NormType,
    PixelShuffle_ICNR,
    PoolFlatten,
    SelfAttention,
    SequentialEx,
    SigmoidRange,
    batchnorm_2d,
    bn_drop_lin,
    children,
    conv_layer,
    flatten_model,
    icnr,
    in_channels,
    init_default,
    relu,
    requires_grad,
    res_block,
    simple_cnn,
)
from ..learner import Learner, load_learner
from ..losses import (
    BCEFlat,
    BCEWithLogitsFlat,
    CrossEntropyFlat,
    FlattenedLoss,
    L1LossFlat,
    LabelSmoothingCrossEntropy,
    MSELossFlat,
)
from ..metrics import accuracy, accuracy_thresh, error_rate, fbeta, top_k_accuracy
from ..namespace import PLOTTING, doc, notebook_namespace
from ..parallel import parallel
from ..recorder import Recorder
from ..train import lr_find
from . import gan, models
from .activations import show_activations, show_filters
from .compare import compare_archs, plot_compare
from .coords import FlowField
from .data import ImageDataBunch, ImageList
from .detection import (
    DetectionLoss,
    Detector,
    ImageBBox,
    MeanAP,
    ObjectCategoryList,
    ObjectDataBunch,
    ObjectDetectionInterpretation,
    ObjectItemList,
    bb_pad_collate,
    detection_learner,
    get_annotations,
)
from .encoder import Encoder, PyramidEncoder, SequentialEncoder, as_encoder
from .gan import (
    AdaptiveGANSwitcher,
    AdaptiveLoss,
    FixedGANSwitcher,
    GANDataBunch,
    GANDiscriminativeLR,
    GANItemList,
    GANLearner,
    GANLoss,
    GANModule,
    GANTrainer,
    NoisyItem,
    NoopLoss,
    WassersteinLoss,
    accuracy_thresh_expand,
    basic_critic,
    basic_generator,
    gan_critic,
)
from .image import Image, ResizeMethod, get_image_files, open_image, resize_to
from .image2image import ImageImageDataBunch, ImageImageList
from .interpret import grad_cam
from .learner import cnn_learner, create_body, create_cnn, create_head
from .points import ImagePoints, PointsDataBunch, PointsItemList, PointsLabelList, PointsProcessor
from .rand_pad import RandPad, rand_pad
from .segmentation import (
    DynamicUnet,
    ImageSegment,
    MeanIoU,
    SegmentationDataBunch,
    SegmentationInterpretation,
    SegmentationItemList,
    SegmentationLabelList,
    UnetBlock,
    acc_segmentation,
    dice,
    foreground_acc,
    open_mask,
    show_mask,
    unet_learner,
)
from .show import plot_multi, show_image
from .tfm_funcs import (
    brightness,
    contrast,
    crop,
    crop_pad,
    cutout,
    dihedral,
    flip_lr,
    jitter,
    pad,
    perspective_warp,
    rand_crop,
    rand_resize_crop,
    rand_zoom,
    rgb_randomize,
    rotate,
    skew,
    squish,
    symmetric_warp,
    tilt,
    zoom,
    zoom_crop,
)
from .timm_models import timm_arch, timm_features_encoder
from .transforms import (
    Brightness,
    Contrast,
    Dihedral,
    Flip,
    Rotate,
    Warp,
    Zoom,
    get_transforms,
)
from .web_images import download_images, verify_images

__all__ = [  # sorted; see the module docstring for what they are
    "PIL", "AccumulateScheduler", "BnFreeze", "Brightness", "CSVLogger", "Callback", "Category", "CategoryList",
    "Checkpoint", "ClassificationInterpretation", "Config", "Contrast", "DataBunch", "DatasetType", "Dihedral",
    "EarlyStopping", "EarlyStoppingCallback", "F", "FastbaseError", "Flip", "FloatItem", "FloatList",
    "GradientAccumulation", "GradientClipping", "Image", "ImageDataBunch", "ImageList", "ItemBase", "ItemList",
    "ItemLists", "LRFinder", "LabelList", "LabelLists", "LabelSmoothingCrossEntropy", "Learner", "MixUp",
    "MixUpCallback", "MixUpLoss", "MixedPrecision", "MultiCategory", "MultiCategoryList", "OneCycleScheduler",
    "Order", "Path", "ProgressCallback", "RandPad", "RecalibrateBN", "Recorder", "ReduceLROnPlateau",
    "ReduceLROnPlateauCallback", "ResizeMethod", "Rotate", "SaveModelCallback", "TensorBoardLogger", "TensorDataset",
    "TerminateOnNaN", "URLs", "Warp", "Zoom", "accuracy", "accuracy_thresh", "array", "cifar_stats", "cnn_learner",
    "compare_archs", "create_body", "create_cnn", "create_head", "defaults", "doc", "download_data",
    "download_images", "error_rate", "fbeta", "gc", "get_files", "get_image_files", "get_transforms", "grad_cam",
    "gzip", "imagenet_stats", "itemgetter", "load_data", "load_learner", "lr_find", "math", "mnist_stats", "models",
    "nn", "noop", "np", "open_image", "optim", "os", "partial", "pickle", "plot_compare", "plot_multi", "plt",
    "rand_pad", "re", "set_seed", "show_activations", "show_filters", "show_image", "tensor", "top_k_accuracy",
    "torch", "untar_data", "verify_images",
]
__all__ += [  # hooks and model building blocks (fastbase.hooks, fastbase.layers); sorted
    "ActivationStats", "AdaptiveConcatPool2d", "Flatten", "Hook", "Hooks", "Lambda", "MergeLayer", "NormType",
    "PixelShuffle_ICNR", "PoolFlatten", "SelfAttention", "SequentialEx", "batchnorm_2d", "bn_drop_lin", "children",
    "conv_layer", "dummy_eval", "flatten_model", "hook_output", "hook_outputs", "icnr", "in_channels", "init_default",
    "model_sizes", "num_features_model", "relu", "requires_grad", "res_block", "simple_cnn",
]
__all__ += [  # segmentation models, loss and metrics (fastbase.vision.segmentation, fastbase.losses); sorted
    "CrossEntropyFlat", "DynamicUnet", "MeanIoU", "SigmoidRange", "UnetBlock", "acc_segmentation", "dice",
    "foreground_acc", "unet_learner",
]
__all__ += ["SegmentationInterpretation", "show_mask"]  # segmentation plots and interpretation
__all__ += ["ImageSegment", "SegmentationDataBunch", "SegmentationItemList", "SegmentationLabelList",
            "open_mask"]  # segmentation data
__all__ += ["StageComparison", "two_stages"]  # lesson 1's two stages compared (fastbase.finetune)
__all__ += ["BCEFlat", "BCEWithLogitsFlat", "FlattenedLoss", "ImageImageDataBunch", "ImageImageList", "L1LossFlat",
            "LossMetrics", "parallel", "random", "resize_to"]  # lesson 7: images as targets
__all__ += ["AdaptiveGANSwitcher", "AdaptiveLoss", "FixedGANSwitcher", "GANDataBunch", "GANDiscriminativeLR",
            "GANItemList", "GANLearner", "GANLoss", "GANModule", "GANTrainer", "NoisyItem", "NoopLoss",
            "WassersteinLoss", "accuracy_thresh_expand", "basic_critic", "basic_generator", "gan",
            "gan_critic"]  # lesson 7: GANs (fastbase.vision.gan)
__all__ += [  # fastai v1's transform functions (fastbase.vision.tfm_funcs); sorted
    "brightness", "contrast", "crop", "crop_pad", "cutout", "dihedral", "flip_lr", "jitter", "pad",
    "perspective_warp", "rand_crop", "rand_resize_crop", "rand_zoom", "rgb_randomize", "rotate", "skew", "squish",
    "symmetric_warp", "tilt", "zoom", "zoom_crop",
]
__all__ += ["FlowField", "ImagePoints", "MSELossFlat", "PointsDataBunch", "PointsItemList", "PointsLabelList",
            "PointsProcessor"]  # points as targets (fastbase.vision.points, fastbase.vision.coords)
__all__ += ["ImageBBox", "ObjectCategoryList", "ObjectDataBunch", "ObjectItemList", "bb_pad_collate",
            "get_annotations"]  # boxes as targets (fastbase.vision.detection)
__all__ += ["DetectionLoss", "Detector", "MeanAP", "ObjectDetectionInterpretation",
            "detection_learner"]  # the detector (fastbase.vision.detection)
__all__ += ["timm_arch", "timm_features_encoder"]  # timm backbones (fastbase.vision.timm_models; needs timm when used)
__all__ += ["Encoder", "PyramidEncoder", "SequentialEncoder", "as_encoder"]  # the body interface (vision.encoder)
# Loaded on first use (fastbase.namespace): `plt` and `pd`, so that importing fastbase does not pay for
# pyplot or pandas. The rest of `fastbase.basics` (fastai v1's metrics, schedules, callbacks, `fit_fc`...)
# comes with it, read from there on first use.
_LAZY = {**PLOTTING}
__getattr__, __dir__ = notebook_namespace(__name__, __all__, lazy=_LAZY, base=basics)

