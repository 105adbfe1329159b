"""Layer 4: the optional parts of training, each a callback: one-cycle schedule, LR finder,
trackers, mixed precision, mixup, loggers, checkpoints."""
from .lr_finder import LRFinder, LRFinderError, LRSuggestions, suggest_lrs
from .one_cycle import OneCycleScheduler
from .progress import ProgressCallback, progress_disabled, progress_mode

__all__ = ["LRFinder", "LRFinderError", "LRSuggestions", "OneCycleScheduler", "ProgressCallback", "progress_disabled",
           "progress_mode", "suggest_lrs"]
