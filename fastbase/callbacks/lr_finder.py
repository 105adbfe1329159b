"""Layer 4: the learning-rate finder as a callback: an exponential lr sweep over training
batches, stopped on divergence, and the suggestions read from it."""
from __future__ import annotations

import math
from collections import namedtuple

import numpy as np

from ..callback import (
    Callback,
    CancelFitException,
    CancelValidException,
    Order,
    annealing_exp,
)
from ..core import FastbaseError

__all__ = ["LRFinder", "LRFinderError", "LRSuggestions", "suggest_lrs"]


class LRFinder(Callback):
    """Raises the lr exponentially from `start_lr` to `end_lr` over `num_it` training batches
    (no validation), stopping early when the smoothed loss exceeds 4x its best or stops being
    finite (`stop_div`). The first 10% of the sweep (the points the suggestions skip) only warm the
    smoothing up: a trained model's losses are small and noisy, and one lucky early batch would
    otherwise set a best that the next ordinary one is 4x above. `Learner.lr_find` runs it as a
    probe (`Learner.probe`): weights, optimizer and random state are put back afterwards; the
    Recorder keeps the sweep."""
    order = Order.LR_FINDER

    def __init__(self, start_lr=1e-7, end_lr=10, num_it: int = 100, stop_div: bool = True, wd=None):
        self.start_lr = start_lr
        self.end_lr = end_lr
        self.num_it = num_it
        self.stop_div = stop_div
        self.wd = wd

    def before_fit(self):
        self.iteration = 0
        self.best = math.inf
        self.diverged = None
        learn = self.learn
        if self.wd is not None:
            learn.opt.wd = self.wd

    def before_batch(self):
        if self.learn.training:
            pct = self.iteration / max(1, self.num_it - 1)
            self.learn.opt.lr = annealing_exp(self.start_lr, self.end_lr, pct)

    def before_validate(self):
        raise CancelValidException  # lr_find costs its iterations only

    def after_batch(self):
        if not self.learn.training:
            return
        self.iteration += 1
        if self.stop_div:
            loss = self.learn.recorder.smooth_loss  # one device read per iteration
            if not math.isfinite(loss) or loss > 4 * self.best:
                self.diverged = (self.iteration, self.learn.opt.lr)
                raise CancelFitException
            if self.iteration > self.num_it // 10:  # past the warm-up (see the class docstring)
                self.best = min(self.best, loss)
        if self.iteration >= self.num_it:
            raise CancelFitException

    def suggestions(self) -> LRSuggestions:
        """Suggestions from the sweep the Recorder holds (raises LRFinderError with too few points);
        also kept as `recorder.lr_suggestions` for `recorder.plot(suggestion=True)`."""
        recorder = self.learn.recorder
        recorder.lr_suggestions = suggest_lrs(recorder.lrs, recorder.smooth_losses)
        return recorder.lr_suggestions


LRSuggestions = namedtuple("LRSuggestions", ["valley", "steep", "minimum"])
LRSuggestions.__doc__ = ("Learning rates suggested by lr_find: `valley` (in the longest descent of the loss, "
                         "the default pick), `steep` (steepest descent against log10(lr)), `minimum` (lr at the "
                         "lowest loss, divided by 10).")


class LRFinderError(FastbaseError):
    """lr_find could not suggest a learning rate (e.g. too few usable points)."""


def suggest_lrs(lrs, losses, skip_start: float = 0.1, min_points: int = 5) -> LRSuggestions:
    """Suggestions from an lr sweep: drops the first `skip_start` fraction of points and every
    non-finite loss, then works against log10(lr), so the exponential spacing counts. `steep` is
    sought before the lowest loss, so noise in a diverging tail cannot win."""
    lrs, losses = np.asarray(lrs, dtype=float), np.asarray(losses, dtype=float)
    if lrs.ndim != 1 or lrs.shape != losses.shape:
        raise LRFinderError(f"Expected as many learning rates as losses, got {lrs.shape} and {losses.shape}.")
    skip = int(len(lrs) * skip_start)
    lrs, losses = lrs[skip:], losses[skip:]
    keep = np.isfinite(losses) & np.isfinite(lrs) & (lrs > 0)
    lrs, losses = lrs[keep], losses[keep]
    if len(lrs) < min_points:
        raise LRFinderError(
            f"Only {len(lrs)} usable points after dropping the first {skip_start:.0%} and non-finite losses; "
            f"at least {min_points} are needed. Use more iterations (num_it), a lower start_lr, or stop_div=False.")
    log_lrs = np.log10(lrs)
    if np.any(np.diff(log_lrs) <= 0):
        raise LRFinderError("The learning rates must increase at every step to suggest one.")
    descent = max(2, int(np.argmin(losses)) + 1)  # the steepest slope is sought on the way down only
    steep = lrs[int(np.argmin(np.diff(losses[:descent]) / np.diff(log_lrs[:descent])))]
    minimum = lrs[int(np.argmin(losses))] / 10
    return LRSuggestions(float(lrs[_valley_index(losses)]), float(steep), float(minimum))


def _valley_index(losses: np.ndarray) -> int:
    """Index a little past the middle of the longest decreasing run of losses (fastai v2's 'valley')."""
    n = len(losses)
    lds = np.ones(n, dtype=int)  # length of the longest decreasing subsequence ending at i
    for i in range(1, n):
        earlier = lds[:i][losses[:i] > losses[i]]
        if earlier.size:
            lds[i] = earlier.max() + 1
    end = int(np.argmax(lds))
    start = end - lds[end] + 1
    sections = (end - start) / 3
    return min(n - 1, start + int(sections) + int(sections / 2))
