"""Layer 4: the channels-last memory format (NHWC) for convolutional models, as a callback
(`learn.to_channels_last()`).

oneDNN's convolutions on the CPU, and cuDNN's with mixed precision on recent GPUs, work in NHWC;
given NCHW tensors they reorder to NHWC and back around each convolution. Storing the weights and
the input batches channels-last saves those reorders. The shapes, the values (up to float rounding)
and the state dict's keys stay the same: only the strides change, so saved files load either way.
What it gains on this machine's CPU: `python bench/cpu_speed.py`.
"""
from __future__ import annotations

import torch
from torch import nn

from ..callback import Callback, Order

__all__ = ["ChannelsLast", "to_memory_format"]


def to_memory_format(model: nn.Module, memory_format=torch.channels_last) -> nn.Module:
    """Store `model`'s 4-d parameters and buffers in `memory_format`, in place (the Parameter objects
    stay the same, so an optimizer keeps working). Returns `model`."""
    return model.to(memory_format=memory_format)


def _convert(x, memory_format):
    if isinstance(x, torch.Tensor) and x.dim() == 4 and x.is_floating_point():
        return x.contiguous(memory_format=memory_format)
    return x


class ChannelsLast(Callback):
    """Keeps the model channels-last and makes every 4-d float input batch channels-last (3-d and
    5-d inputs, targets and integer tensors are left alone), in training and in validation."""
    order = Order.CHANNELS_LAST
    changes_step = True

    def __init__(self, memory_format=torch.channels_last):
        self.memory_format = memory_format

    def before_fit(self):
        to_memory_format(self.learn.model, self.memory_format)

    def before_validate(self):  # also for `validate` and `get_preds` outside fit
        # validation runs under inference mode: a parameter copied there (a weight-norm `g` of shape
        # (n, 1, 1, 1) is copied, not kept) would become an inference tensor that training cannot use
        with torch.inference_mode(False):
            to_memory_format(self.learn.model, self.memory_format)

    def before_batch(self):
        learn = self.learn
        learn.xb = tuple(_convert(x, self.memory_format) for x in learn.xb)
