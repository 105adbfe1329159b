"""Layer 4: the optional parts of training, each a callback: one-cycle schedule, LR finder,
trackers, mixed precision, mixup, loggers, checkpoints."""
