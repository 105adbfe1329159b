"""Layer 4: the callbacks built on hooks: `HookCallback` (hook layers for the length of a fit) and
`ActivationStats` (the mean and std of each layer's output, batch after batch).

The hooks themselves (`Hook`, `Hooks`, `hook_output(s)`) and the shape probes (`model_sizes`,
`dummy_eval`, `num_features_model`) live in `fastbase.hooks`, beside the layers; they are re-exported
here so that fastai v1's `from fastai.callbacks.hooks import *` works as
`from fastbase.callbacks.hooks import *`.
"""
from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from ..callback import Callback
from ..core import FastbaseError
from ..figures import finish_figure, subplots
from ..hooks import Hook, Hooks, dummy_batch, dummy_eval, hook_output, hook_outputs, model_sizes, num_features_model
from ..layers import flatten_model

__all__ = ["ActivationStats", "Hook", "HookCallback", "Hooks", "dummy_batch", "dummy_eval", "hook_output",
           "hook_outputs", "model_sizes", "num_features_model"]


# --- callbacks ------------------------------------------------------------------------------------
class HookCallback(Callback):
    """Hooks `modules` (default: every layer of the model with a `weight`) for the length of a fit,
    calling `self.hook(module, input, output)` (detached) on each forward pass; subclasses define
    `hook`. The hooks come off when the fit ends, however it ends (`do_remove=False` leaves them on).

    Not a step-changing callback (`changes_step` False), so probe runs (lr_find, overfit,
    sanity_check) leave it out."""

    def __init__(self, modules: Iterable[nn.Module] | None = None, do_remove: bool = True):
        self.modules, self.do_remove = (None if modules is None else list(modules)), do_remove
        self.hooks, self.hooked = None, []

    def hooked_modules(self) -> list[nn.Module]:
        """`modules` if given, else the leaf layers of the model that have a `weight`."""
        if self.modules is not None:
            return self.modules
        found = [m for m in flatten_model(self.learn.model) if hasattr(m, "weight")]
        if not found:
            raise FastbaseError(f"{type(self).__name__}: the model has no layer with a weight to hook; pass "
                                "modules=[...] with the layers to watch.")
        return found

    def before_fit(self):
        self.remove()
        self.hooked = self.hooked_modules()
        self.hooks = Hooks(self.hooked, self.hook)

    def hook(self, module: nn.Module, input, output):
        raise NotImplementedError(f"{type(self).__name__} must define hook(module, input, output).")

    def cleanup_fit(self):
        if self.do_remove:
            self.remove()

    def remove(self) -> None:
        if self.hooks is not None:
            self.hooks.remove()


class ActivationStats(HookCallback):
    """Mean and standard deviation of each hooked layer's output for every training batch: `stats`,
    a tensor (2, n_layers, n_batches) on the CPU after the fit (stats[0]: means, stats[1]: stds).

    Healthy layers keep their means near 0 and stds near 1; stds that collapse towards 0 or grow
    layer after layer show a poor initialisation or too high a learning rate. `plot()` draws them.
    Values stay on the device during the fit and are read once at its end."""

    def __init__(self, modules: Iterable[nn.Module] | None = None, do_remove: bool = True):
        super().__init__(modules, do_remove)
        self.stats = None
        self.layer_names = []
        self._batches = []

    def before_fit(self):
        super().before_fit()
        names = {id(m): name for name, m in self.learn.model.named_modules()}
        self.layer_names = [f"{names.get(id(h_m), '?')} {type(h_m).__name__}" for h_m in self.hooked]
        self.stats, self._batches = None, []

    def hook(self, module, input, output):
        if not self.learn.training:
            return None
        out = output[0] if isinstance(output, (list, tuple)) else output
        out = out.float()
        return torch.stack([out.mean(), out.std()])

    def before_batch(self):
        for h in self.hooks or ():
            h.stored = None

    def after_batch(self):
        if not self.learn.training or self.hooks is None:
            return
        stored = self.hooks.stored
        if all(s is None for s in stored):  # the batch was skipped before the forward pass
            return
        ref = next(s for s in stored if s is not None)
        self._batches.append(torch.stack([ref.new_full((2,), float("nan")) if s is None else s for s in stored]))

    def cleanup_fit(self):
        n_layers = len(self.hooks) if self.hooks is not None else 0
        self.stats = (torch.stack(self._batches).permute(2, 1, 0).cpu() if self._batches
                      else torch.empty(2, n_layers, 0))
        self._batches = []
        super().cleanup_fit()

    def plot(self, layers: Iterable[int] | None = None, return_fig: bool | None = None, save_to=None):
        """Means (left) and standard deviations (right) of the chosen hooked `layers` (indexes; default
        all) over the training batches of the last fit. Returns the Figure (`fastbase.figures.finish_figure`)."""
        if self.stats is None:
            raise FastbaseError("ActivationStats has no statistics yet: pass it to a fit first, e.g. "
                                "`learn.fit(1, callbacks=[stats])`.")
        n_layers = self.stats.shape[1]
        layers = list(range(n_layers)) if layers is None else list(layers)
        outside = [i for i in layers if not -n_layers <= i < n_layers]
        if outside:
            raise FastbaseError(f"layers={outside}: {n_layers} layers were hooked, so indexes go from 0 to "
                                f"{n_layers - 1}.")
        fig, axes = subplots(1, 2, figsize=(10, 3.5))
        for ax, row, title in zip(axes, self.stats, ("mean", "std")):
            for i in layers:
                ax.plot(row[i].numpy(), label=self.layer_names[i] if i < len(self.layer_names) else str(i))
            ax.set_title(f"activation {title}")
            ax.set_xlabel("training batch")
        if len(layers) <= 12:
            axes[1].legend(fontsize=7)
        fig.tight_layout()
        return finish_figure(fig, return_fig, save_to)
