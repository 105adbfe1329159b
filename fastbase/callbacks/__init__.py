"""Layer 4: the optional parts of training, each a callback: one-cycle and general schedules, LR
finder, trackers, mixed precision, mixup, oversampling, loggers (CSV, TensorBoard, MLflow), memory
and loss-curve displays, checkpoints, BatchNorm recalibration; and hooks on layers (`hook_output`,
`ActivationStats`)."""
from .bn_stats import BnFreeze, RecalibrateBN, recompute_bn_stats
from .channels_last import ChannelsLast, to_memory_format
from .checkpoint import Checkpoint, CheckpointError, ResumeCallback
from .distributed import DistributedError, DistributedTrainer
from .general_sched import FlatCosAnnealScheduler, GeneralScheduler, TrainingPhase
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
from .loggers import CSVLogger
from .loss_metrics import LossMetrics
from .lr_finder import LRFinder, LRFinderError, LRSuggestions, suggest_lrs
from .mem import PeakMemMetric
from .misc import StopAfterNBatches
from .mixed_precision import MixedPrecision, as_fp32, autocast_dtype
from .mixup import MixUp, MixUpLoss
from .mlflow import MLFlowTracker
from .one_cycle import OneCycleScheduler
from .oversampling import OverSamplingCallback
from .progress import ProgressCallback, progress_disabled, progress_mode
from .show_graph import ShowGraph
from .tensorboard import LearnerTensorboardWriter, TensorBoardLogger
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
TerminateOnNaNCallback = TerminateOnNaN

__all__ = ["AccumulateScheduler", "ActivationStats", "BnFreeze", "CSVLogger", "ChannelsLast", "Checkpoint",
           "CheckpointError", "DistributedError", "DistributedTrainer", "EarlyStopping", "EarlyStoppingCallback",
           "FlatCosAnnealScheduler", "GeneralScheduler", "GradientAccumulation", "GradientClipping", "Hook",
           "HookCallback", "Hooks", "LRFinder", "LRFinderError", "LRSuggestions", "LearnerTensorboardWriter",
           "LossMetrics", "MLFlowTracker", "MixUp", "MixUpCallback", "MixUpLoss", "MixedPrecision",
           "OneCycleScheduler", "OverSamplingCallback", "PeakMemMetric", "ProgressCallback", "RecalibrateBN",
           "ReduceLROnPlateau", "ReduceLROnPlateauCallback", "ResumeCallback", "SaveModelCallback", "ShowGraph",
           "StopAfterNBatches", "TensorBoardLogger", "TerminateOnNaN", "TerminateOnNaNCallback", "TrackerCallback",
           "TrainingDiverged", "TrainingPhase", "as_fp32", "autocast_dtype", "dummy_batch", "dummy_eval",
           "hook_output", "hook_outputs", "model_sizes", "num_features_model", "progress_disabled", "progress_mode",
           "recompute_bn_stats", "suggest_lrs", "to_memory_format"]
