"""Layer 2: what every data module shares: the kinds of loader (`DatasetType`), the data errors
and the usual normalisation statistics."""
from __future__ import annotations

from enum import IntEnum

from ..core import FastbaseError

__all__ = ["BadFilesError", "DataError", "DatasetType", "EmptyDatasetError", "LabelError", "cifar_stats",
           "format_list", "imagenet_stats", "mnist_stats"]

imagenet_stats = ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
cifar_stats = ([0.491, 0.482, 0.447], [0.247, 0.243, 0.261])
mnist_stats = ([0.15, 0.15, 0.15], [0.15, 0.15, 0.15])


class DatasetType(IntEnum):
    """Which of a DataBunch's loaders: `Fix` is the training set in order, without augmentation
    drops, for predictions on the training data; `Single` is one item for `predict`."""
    Train = 0
    Valid = 1
    Test = 2
    Fix = 3
    Single = 4


class DataError(FastbaseError, ValueError):
    """Data that cannot be trained on: the message names the file or value and what to do.

    A message that suggests a setting spells it as a Python argument (`skip_bad=True`) and lists it in
    `options` ({"skip_bad": True}), so that `message_for` can spell it as the user's context does (the
    command line: `--skip-bad`)."""

    def __init__(self, *args, options: dict | None = None):
        super().__init__(*args)
        self.options = dict(options or {})

    def message_for(self, spell) -> str:
        """The message with each option's Python spelling replaced by `spell(name, value)` (kept where
        that returns None)."""
        message = str(self)
        for name, value in self.options.items():
            other = spell(name, value)
            if other is not None:
                message = message.replace(f"{name}={value!r}", other)
        return message


class EmptyDatasetError(DataError):
    """A training or validation set without items, caught when the DataBunch is created."""


class LabelError(DataError):
    """Labels that do not fit the items: a pattern that does not match, a class only the validation
    set has, a label file naming files that do not exist."""


class BadFilesError(DataError):
    """Files that cannot be read as items; `bad` lists `(path, reason)` for every one found."""

    def __init__(self, message: str, bad=(), options: dict | None = None):
        super().__init__(message, options=options)
        self.bad = list(bad)



def format_list(things, n: int = 5) -> str:
    """The first `n` of `things`, then how many more: for error messages that name files or values."""
    things = [str(t) for t in things]
    more = f" and {len(things) - n} more" if len(things) > n else ""
    return ", ".join(things[:n]) + more
