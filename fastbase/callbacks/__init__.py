"""Layer 4: the optional parts of training, each a callback: one-cycle schedule, LR finder,
trackers, mixed precision, mixup, loggers, checkpoints, BatchNorm recalibration; and hooks on
layers (`hook_output`, `ActivationStats`)."""
from .bn_stats import BnFreeze, RecalibrateBN, recompute_bn_stats
from .channels_last import ChannelsLast, to_memory_format
from .checkpoint import Checkpoint, CheckpointError, ResumeCallback
from .distributed import DistributedError, DistributedTrainer
from .gradients import AccumulateScheduler, GradientAccumulation, GradientClipping
from .hooks import (
    ActivationStats,
    Hook,
    HookCallback,
    Hooks,
    dummy_batch,
    dummy_eval,
    hook_output,
    hook_outputs,
    model_sizes,
    num_features_model,
)
from .loggers import CSVLogger, TensorBoardLogger
from .loss_metrics import LossMetrics
from .lr_finder import LRFinder, LRFinderError, LRSuggestions, suggest_lrs
from .mixed_precision import MixedPrecision, as_fp32, autocast_dtype
from .mixup import MixUp, MixUpLoss
from .one_cycle import OneCycleScheduler
from .progress import ProgressCallback, progress_disabled, progress_mode
from .trackers import (
    EarlyStopping,
    ReduceLROnPlateau,
    SaveModelCallback,
    TerminateOnNaN,
    TrackerCallback,
    TrainingDiverged,
)

# fastai v1's names for the same callbacks, so course code such as
# `callback_fns=[partial(SaveModelCallback, monitor='accuracy')]` runs unchanged
EarlyStoppingCallback = EarlyStopping
ReduceLROnPlateauCallback = ReduceLROnPlateau
MixUpCallback = MixUp

__all__ = ["AccumulateScheduler", "ActivationStats", "BnFreeze", "CSVLogger", "ChannelsLast", "Checkpoint",
           "CheckpointError", "DistributedError", "DistributedTrainer", "EarlyStopping", "EarlyStoppingCallback",
           "GradientAccumulation", "GradientClipping", "Hook", "HookCallback", "Hooks", "LRFinder",
           "LRFinderError", "LRSuggestions", "LossMetrics", "MixUp", "MixUpCallback", "MixUpLoss", "MixedPrecision",
           "OneCycleScheduler", "ProgressCallback", "RecalibrateBN", "ReduceLROnPlateau",
           "ReduceLROnPlateauCallback", "ResumeCallback", "SaveModelCallback", "TensorBoardLogger",
           "TerminateOnNaN", "TrackerCallback", "TrainingDiverged", "as_fp32", "autocast_dtype", "dummy_batch",
           "dummy_eval", "hook_output", "hook_outputs", "model_sizes", "num_features_model", "progress_disabled",
           "progress_mode", "recompute_bn_stats", "suggest_lrs", "to_memory_format"]
