"""Layer 5: transfer learning's two stages, and whether the second one helped.

Lesson 1 trains the new head with the body frozen, then unfreezes and trains everything a little
more at smaller rates. The second stage usually helps, but on a small set it can make the model
worse, and nothing in a plain `fit_one_cycle` says so. `two_stages` runs both stages, reads the
monitored value (the first metric, else the validation loss) after each, says whether the
unfrozen stage improved it and, with `keep_best=True`, puts back the frozen stage's weights when
it did not. `fine_tune` is fastai 2's spelling of the recipe on top of it; `fastbase train` uses
`two_stages` too (`--keep-best`).
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from .callbacks.trackers import monitor_mode
from .core import FastbaseError, is_main_process
from .progress import progress_disabled
from .state import copy_state

__all__ = ["StageComparison", "fine_tune", "two_stages"]


@dataclass(frozen=True)
class StageComparison:
    """The monitored value after each stage, whether the unfrozen stage improved it, and which
    stage's weights the model holds now ('unfrozen', or 'frozen' when `keep_best` put them back)."""
    monitor: str
    mode: str
    frozen: float
    unfrozen: float
    kept: str

    @property
    def helped(self) -> bool:
        """Did the unfrozen stage improve the monitored value? (False when either is NaN.)"""
        if math.isnan(self.frozen) or math.isnan(self.unfrozen):
            return False
        return self.unfrozen < self.frozen if self.mode == "min" else self.unfrozen > self.frozen

    @property
    def message(self) -> str:
        change = "improved" if self.helped else ("did not change" if self.unfrozen == self.frozen else "worsened")
        text = (f"The unfrozen stage {change} {self.monitor}: {self.frozen:.4f} after the frozen stage, "
                f"{self.unfrozen:.4f} after the unfrozen one.")
        if self.kept == "frozen":
            text += " keep_best: the frozen stage's weights were put back."
        elif not self.helped:
            text += " keep_best=True would have kept the frozen stage's weights."
        return text


def _monitored(learn, monitor: str | None) -> tuple[str, float]:
    recorder = learn.recorder
    if monitor is None:
        monitor = recorder.metric_names[0] if recorder.metric_names else "valid_loss"
    if monitor not in recorder.value_names:
        raise FastbaseError(f"Cannot compare the stages on {monitor!r}: this Learner records "
                            f"{recorder.value_names}. Pass monitor= one of them.")
    return monitor, recorder.last_value(monitor)


def two_stages(learn, frozen_fit: Callable[[], None] | None, unfrozen_fit: Callable[[], None], keep_best: bool = False,
               monitor: str | None = None, mode: str = "auto", say: bool | None = None) -> StageComparison:
    """`frozen_fit()` with the body frozen (None: no frozen stage), then `unfreeze()` and `unfrozen_fit()`; compares the
    monitored value after each (`monitor`: a metric's name or 'valid_loss'; default the first
    metric, else the validation loss). With `keep_best`, the frozen stage's weights come back when
    the unfrozen stage did not improve it (the Learner stays unfrozen). Prints the outcome (`say`;
    default: unless the Learner is silent) and returns it."""
    learn.freeze()
    if frozen_fit is not None:
        frozen_fit()
        name, before = _monitored(learn, monitor)
    else:  # no frozen stage (fine_tune(freeze_epochs=0)): nothing to compare with
        name, before = _monitored(learn, monitor)[0], math.nan
    saved = copy_state(learn.model) if keep_best else None
    learn.unfreeze()
    unfrozen_fit()
    _, after = _monitored(learn, name)
    result = StageComparison(name, monitor_mode(name, mode), before, after, "unfrozen")
    if keep_best and not result.helped and not math.isnan(before):
        learn.model.load_state_dict(saved)
        result = StageComparison(name, result.mode, before, after, "frozen")
    if say is None:
        say = not (progress_disabled() if learn.silent is None else learn.silent)
    if say and is_main_process():
        print(result.message, flush=True)
    return result


def fine_tune(learn, epochs: int, base_lr: float = 2e-3, freeze_epochs: int = 1, lr_mult: float = 100,
              pct_start: float = 0.3, div: float = 5.0, keep_best: bool = False, monitor: str | None = None,
              **kwargs) -> StageComparison:
    """fastai 2's `fine_tune`: `freeze_epochs` of one-cycle on the head at `base_lr` (warming up for
    almost the whole fit), then `unfreeze()` and `epochs` of one-cycle at `slice(base_lr/2/lr_mult,
    base_lr/2)`, starting at a fifth of it (`div`). Other keyword arguments go to both
    `fit_one_cycle` calls. Returns the `StageComparison` of `two_stages` (and `keep_best` as there)."""
    def frozen_fit():
        learn.fit_one_cycle(freeze_epochs, slice(base_lr), pct_start=0.99, **kwargs)

    def unfrozen_fit():
        lr = base_lr / 2
        learn.fit_one_cycle(epochs, slice(lr / lr_mult, lr), pct_start=pct_start, div_factor=div, **kwargs)

    return two_stages(learn, frozen_fit if freeze_epochs else None, unfrozen_fit, keep_best=keep_best,
                      monitor=monitor)
