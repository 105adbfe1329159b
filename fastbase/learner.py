"""Layer 5: the Learner: the training loop over a model and a DataBunch, fitting (plain, one-cycle,
lr_find) and freezing layer groups; evaluation, inference, saving and export come from its base
class (`fastbase.inference.Inference`), and `load_learner` rebuilds any Learner from an export.
Its helpers: the optimizer wrapper and layer groups (`fastbase.optimizer`), metrics and losses
(`fastbase.metrics`).

The loop fires the events of `fastbase.callback` (read `_do_fit` down to `_one_batch`): all the
optional parts of training (schedules, recording, progress, the LR finder, Ctrl-C handling,
frozen BatchNorm statistics) are callbacks. Nothing is read from the device per batch.
"""
from __future__ import annotations

import math
import pathlib
import warnings

import numpy as np
import torch
from torch import nn

from . import debug, finetune, sanity
from .callback import DeferredInterrupt, ValidationStats
from .callbacks.bn_stats import BN_STATS_MODES, bn_freeze_for
from .callbacks.channels_last import ChannelsLast, to_memory_format
from .callbacks.checkpoint import ResumeCallback
from .callbacks.distributed import to_distributed, wants_distributed
from .callbacks.general_sched import FlatCosAnnealScheduler
from .callbacks.gradients import GradientClipping
from .callbacks.lr_finder import LRFinder, LRFinderError, LRSuggestions
from .callbacks.mixed_precision import MixedPrecision, as_fp32
from .callbacks.mixup import MixUp
from .callbacks.one_cycle import OneCycleScheduler
from .callbacks.progress import ProgressCallback, progress_disabled
from .core import FastbaseError, Path, PrettyString, ifnone, listify, num_distrib
from .export import read_export
from .inference import Inference
from .loop import split_batch
from .metrics import as_metric, default_loss
from .optimizer import (
    Adam,
    OptimWrapper,
    check_layer_groups,
    freeze_layer_groups,
    layer_groups_summary,
    lr_range,
)
from .recorder import Recorder

__all__ = ["DEFAULT_LR", "Learner", "load_learner"]

DEFAULT_LR = slice(3e-3)  # fastai v1's default: 3e-3 for the last layer group, 3e-4 for the others


class Learner(Inference):
    """Trains `model` on `data`: `fit`, `fit_one_cycle`, `lr_find`, then `validate`, `get_preds`,
    `predict`, `save`/`load`, `export`.

    `layer_groups` (default: the whole model as one group) are the units of `freeze_to` and of
    discriminative learning rates (`lr=slice(1e-5, 1e-3)`). `bn_wd=False` (unlike fastai v1's
    default) keeps weight decay off BatchNorm and bias parameters, which it only harms; `true_wd`
    decouples weight decay from the gradient (AdamW). `train_bn` keeps BatchNorm parameters of
    frozen groups trainable; `freeze_bn_stats=True` fixes their running statistics (eval mode), and
    `freeze_bn_stats="finetune"` also fixes those of every group once none is frozen (see `BnFreeze`):
    fine-tuning a pretrained body on a small set, only the new head learns statistics, while the
    body is frozen. `model_spec` = {'factory': 'module:name', 'kwargs': {...}} says how to rebuild
    the model, for `export`. `silent` (default: `defaults.silent` or `FASTBASE_NO_BAR=1`) turns
    progress output off. `clip` bounds the gradients' global norm before each step; `feature_cache =
    False` turns off cnn_learner's automatic `FeatureCache`.
    """

    def __init__(self, data, model: nn.Module, opt_func=Adam, loss_func=None, metrics=None, true_wd: bool = True,
                 bn_wd: bool = False, wd: float = 1e-2, train_bn: bool = True, path=None, model_dir="models",
                 callback_fns=None, callbacks=None, layer_groups=None, silent: bool | None = None,
                 freeze_bn_stats: bool | str = False, model_spec: dict | None = None, clip: float | None = None):
        if freeze_bn_stats not in BN_STATS_MODES:
            choices = "; ".join(f"{mode!r}: {what}" for mode, what in BN_STATS_MODES.items())
            raise FastbaseError(f"freeze_bn_stats={freeze_bn_stats!r} is not a setting. Use one of {choices}.")
        self.data = data
        self.model = model.to(data.device)
        # how the parameters train
        self.opt_func = opt_func
        self.true_wd = true_wd
        self.bn_wd = bn_wd
        self.wd = wd
        self.train_bn = train_bn
        self.freeze_bn_stats = freeze_bn_stats
        self.clip = clip
        self.loss_func = default_loss(data) if loss_func is None else loss_func
        self.metrics = listify(metrics)
        self.path = Path(ifnone(path, data.path))
        self.model_dir = model_dir
        self.callback_fns = listify(callback_fns)
        self.callbacks = listify(callbacks)
        self.silent = silent
        self.model_spec = model_spec
        self.feature_cache = True
        self.opt = None
        self.n_frozen = 0
        self.recorder = Recorder()
        self.recorder.learn = self
        self.layer_groups = check_layer_groups(self.model, ifnone(layer_groups, [self.model]))
        self._init_loop()

    # --- training ---------------------------------------------------------------------------
    def fit(self, epochs: int, lr=DEFAULT_LR, wd: float | None = None, callbacks=None, start_epoch: int = 0,
            resume=None) -> None:
        """Train for `epochs` at `lr` (float, list/array or slice over layer groups) with weight decay
        `wd` (default `self.wd`); `callbacks` apply to this fit only. Ctrl-C stops cleanly. `resume`: a
        checkpoint written by `Checkpoint` (name, Path, or True for the default 'checkpoint') to continue
        from, exactly where it was saved; a damaged newest file falls back to the previous one it kept."""
        if resume is not None and resume is not False:
            resumer = ResumeCallback(resume, self, epochs)  # checks the file now, before anything changes
            callbacks, start_epoch = [resumer, *listify(callbacks)], resumer.start_epoch
        if self.opt is None:
            self.create_opt(lr, ifnone(wd, self.wd))
        else:
            self.opt.lr, self.opt.wd = self.lr_range(lr), ifnone(wd, self.wd)
        self._fit(epochs, callbacks, start_epoch)

    def _fit(self, epochs: int, callbacks=None, start_epoch: int = 0, table: bool = True) -> None:
        if self.data.inference_only:
            raise FastbaseError("This Learner was loaded for inference (load_learner): it has no training data. "
                                "Build a Learner on a DataBunch of your data to train.")
        if wants_distributed(self):  # started by torchrun: train as one of its processes
            self.to_distributed()
        self.n_epochs = epochs
        self.start_epoch = start_epoch
        self.epoch = start_epoch
        self.iter = None
        self.opt.zero_grad()
        cbs = [DeferredInterrupt(), ValidationStats([as_metric(m) for m in self.metrics]), self.recorder,
               *self._own_callbacks(), *listify(callbacks)]
        bn_freeze = bn_freeze_for(self.freeze_bn_stats, self.n_frozen, len(self.layer_groups))
        if bn_freeze is not None:
            cbs.append(bn_freeze)
        if self.clip:
            cbs.append(GradientClipping(self.clip))
        if not (progress_disabled() if self.silent is None else self.silent):
            cbs.append(ProgressCallback(show_table=table))
        with self._using(cbs):
            try:
                self._do_fit()
            finally:
                self.cb("cleanup_fit")

    def fit_one_cycle(self, cyc_len: int, max_lr=DEFAULT_LR, moms=(0.95, 0.85), div_factor: float = 25.0,
                      pct_start: float = 0.3, final_div: float | None = None, wd: float | None = None,
                      callbacks=None, start_epoch: int | None = None, resume=None) -> None:
        """Fit `cyc_len` epochs on the one-cycle schedule (see `OneCycleScheduler`): lr warms up from
        `max_lr/div_factor` to `max_lr` over `pct_start` of the iterations, then anneals to
        `max_lr/final_div` (default `div_factor*1e4`); momentum moves the opposite way within `moms`.
        `resume`: continue from a `Checkpoint` file, with the same arguments as the run that wrote it."""
        max_lr = self.lr_range(max_lr)
        sched = OneCycleScheduler(max_lr, moms=moms, div_factor=div_factor, pct_start=pct_start,
                                  final_div=final_div, start_epoch=start_epoch)
        self.fit(cyc_len, max_lr, wd=wd, callbacks=[sched, *listify(callbacks)], start_epoch=ifnone(start_epoch, 0),
                 resume=resume)

    def fit_fc(self, tot_epochs: int = 1, lr=DEFAULT_LR, moms=(0.95, 0.85), start_pct: float = 0.72,
               wd: float | None = None, callbacks=None) -> None:
        """Fit `tot_epochs` at a flat `lr` (momentum `moms[0]`) for the first `start_pct` of the
        batches, then anneal it to 0 along a cosine (momentum `moms[1]`): fastai v1's flat-cosine
        schedule (`FlatCosAnnealScheduler`)."""
        lr = self.lr_range(lr)
        sched = FlatCosAnnealScheduler(self, lr, tot_epochs=tot_epochs, moms=moms, start_pct=start_pct)
        self.fit(tot_epochs, lr, wd=wd, callbacks=[sched, *listify(callbacks)])

    def fine_tune(self, epochs: int, base_lr: float = 2e-3, freeze_epochs: int = 1, lr_mult: float = 100,
                  pct_start: float = 0.3, div: float = 5.0, keep_best: bool = False, monitor: str | None = None,
                  **kwargs) -> finetune.StageComparison:
        """fastai 2's recipe: `freeze_epochs` on the head, `unfreeze()`, `epochs` at `slice(base_lr/2/lr_mult,
        base_lr/2)`. Says whether the unfrozen stage improved `monitor` (default: the first metric);
        `keep_best=True` puts the frozen stage's weights back when it did not (`finetune.fine_tune`)."""
        return finetune.fine_tune(self, epochs, base_lr, freeze_epochs, lr_mult, pct_start, div, keep_best, monitor,
                                  **kwargs)

    def lr_find(self, start_lr=1e-7, end_lr=10, num_it: int = 100, stop_div: bool = True,
                wd: float | None = None) -> LRSuggestions | None:
        """Train `num_it` batches with the lr rising exponentially from `start_lr` to `end_lr` (no
        validation), then restore weights, optimizer state and random state. Returns the suggestions
        (valley, steep, minimum); `learn.recorder.plot(suggestion=True)` draws them. When the loss
        diverged too early to suggest anything, warns (saying at which lr) and returns None: the
        sweep is still in the Recorder for `recorder.plot()`."""
        if self.opt is None:
            self.create_opt(DEFAULT_LR, self.wd)
        start_lr, end_lr = (np.asarray(v, dtype=float) if np.ndim(v) else v
                            for v in (self.lr_range(start_lr), self.lr_range(end_lr)))
        finder = LRFinder(start_lr, end_lr, num_it, stop_div, wd=wd)
        with self.probe(keep_recorder=True):  # the sweep stays in the recorder, for recorder.plot()
            self._fit(math.ceil(num_it / max(1, len(self.data.train_dl) // num_distrib())), callbacks=[finder],
                      table=False)
        try:
            return finder.suggestions()
        except LRFinderError as e:
            if finder.diverged is None:
                raise
            iteration, lr = finder.diverged
            warnings.warn(f"lr_find stopped at iteration {iteration} (lr {lr:.2g}): the smoothed loss diverged, "
                          f"so no lr is suggested ({e}). `learn.recorder.plot()` shows the sweep; try a lower "
                          f"start_lr or stop_div=False.", stacklevel=2)
            return None

    def overfit(self, n_items: int = 10, steps: int = 100, lr: float = 1e-3, threshold: float = 0.05,
                seed: int | None = 0, restore: bool = True) -> debug.OverfitResult:
        """Diagnostic: can the model fit `n_items` training items (one batch, no augmentation)? Trains up to
        `steps` steps; the result says whether the loss fell below `threshold`, with the loss curve. The
        data are untouched; weights, optimizer and recorder are restored unless `restore=False`."""
        return debug.overfit(self, n_items, steps, lr, threshold, seed, restore)

    def sanity_check(self, n_steps: int = 40, lr: float = 1e-2, n_items: int = 8, show: bool = True
                     ) -> sanity.SanityReport:
        """Karpathy's recipe checks before a long run: inputs vary, labels are not one class, augmentation
        keeps labels, the initial loss is near ln(n_classes), one batch of `n_items` can be overfit in
        `n_steps`. Prints (`show`) and returns the report; the Learner is left as it was."""
        return sanity.sanity_check(self, n_steps=n_steps, lr=lr, n_items=n_items, show=show)

    def to_distributed(self, backend: str | None = None, find_unused_parameters: bool = False) -> Learner:
        """Train with DistributedDataParallel over the processes torchrun started (`fit` calls it by itself
        under torchrun): NCCL on CUDA, gloo on the CPU. See `fastbase.callbacks.distributed`. Returns self."""
        return to_distributed(self, backend, find_unused_parameters)

    def to_fp16(self, dtype=None, loss_scale: bool | None = None, **scaler_kwargs) -> Learner:
        """Mixed precision from now on (`MixedPrecision`): float16 with loss scaling on CUDA, bfloat16
        on the CPU (slower on CPUs without native bfloat16). Weights stay float32. Returns self."""
        return self._swap_callback(MixedPrecision, MixedPrecision(dtype, loss_scale, **scaler_kwargs))

    def to_fp32(self) -> Learner:
        """Full precision again: drops `MixedPrecision` and checks that every parameter is float32."""
        as_fp32(self.model)
        return self._swap_callback(MixedPrecision)

    def to_channels_last(self) -> Learner:
        """Keep the model's weights and the input batches in the channels-last (NHWC) memory format from
        now on (`ChannelsLast`): faster convolutions on CPUs with oneDNN and on GPUs with mixed precision;
        same values up to float rounding. Measured in `bench/cpu_speed.py`. Returns self."""
        to_memory_format(self.model)
        return self._swap_callback(ChannelsLast, ChannelsLast())

    def to_contiguous(self) -> Learner:
        """Back to the default (NCHW) memory format: drops `ChannelsLast` and converts the model. Returns self."""
        to_memory_format(self.model, torch.contiguous_format)
        return self._swap_callback(ChannelsLast)

    def mixup(self, alpha: float = 0.4, stack_x: bool = False, stack_y: bool = True) -> Learner:
        """Train with mixup from now on (`MixUp`); validation is untouched. Returns self."""
        return self._swap_callback(MixUp, MixUp(alpha, stack_x, stack_y))

    def _swap_callback(self, kind, new=None) -> Learner:
        self.callbacks = [cb for cb in self.callbacks if not isinstance(cb, kind)] + ([new] if new else [])
        return self

    def create_opt(self, lr=DEFAULT_LR, wd: float | None = None) -> OptimWrapper:
        """(Re)build the optimizer over the layer groups; this drops its state (moments)."""
        self.opt = OptimWrapper(self.opt_func, self.layer_groups, lr=self.lr_range(lr), wd=ifnone(wd, self.wd),
                                true_wd=self.true_wd, bn_wd=self.bn_wd)
        return self.opt

    def lr_range(self, lr):
        """A value per layer group from a slice (fastai v1 rule, see `fastbase.optimizer.lr_range`)."""
        return lr_range(lr, len(self.layer_groups))

    @property
    def metric_names(self) -> list[str]:
        return [as_metric(m).name for m in self.metrics]

    # --- layer groups and freezing ------------------------------------------------------------
    def split(self, layer_groups) -> Learner:
        """Set new layer groups (modules, or a function model -> modules); rebuilds the optimizer at the next fit."""
        groups = layer_groups(self.model) if callable(layer_groups) and not isinstance(layer_groups, nn.Module) \
            else layer_groups
        self.layer_groups = check_layer_groups(self.model, groups)
        self.opt = None  # rebuilt over the new groups at the next fit
        self.n_frozen = 0
        return self

    def freeze_to(self, n: int) -> None:
        """Freeze the first `n` layer groups (negative: all but the last -n) and unfreeze the rest.
        BatchNorm parameters in frozen groups stay trainable when `train_bn`. The optimizer is kept."""
        self.n_frozen = freeze_layer_groups(self.layer_groups, n, self.train_bn)
        for cb in self.callbacks:  # e.g. FeatureCache drops the features of a body that now trains
            getattr(cb, "after_freeze", lambda: None)()

    def freeze(self) -> None:
        """Freeze every layer group but the last (the head)."""
        if len(self.layer_groups) < 2:
            raise FastbaseError("freeze() needs at least two layer groups (a body to freeze, a head to train); this "
                                "Learner has one. Pass layer_groups=[body, head] (cnn_learner does) or use freeze_to.")
        self.freeze_to(-1)

    def unfreeze(self) -> None:
        """Make every layer group trainable."""
        self.freeze_to(0)

    def summary(self) -> PrettyString:
        """Layers with output shapes (from one batch, without the batch dimension), parameter counts,
        trainable or frozen, and totals per layer group. Returned as text that a notebook shows once as
        the cell's value, and `print(learn.summary())` prints once (as fastai v1)."""
        xb = None if self.data.inference_only else split_batch(next(iter(self.data.train_dl)))[0]
        bn = (f"BatchNorm: train_bn={self.train_bn}, freeze_bn_stats={self.freeze_bn_stats!r} "
              f"({BN_STATS_MODES.get(self.freeze_bn_stats, 'see BnFreeze')})")
        lines = [layer_groups_summary(self.model, self.layer_groups, xb), bn,
                 f"Optimizer: {self.opt!r}", f"Loss: {self.loss_func!r}  Metrics: {self.metric_names}"]
        return PrettyString("\n".join(lines))

    def __repr__(self):
        return (f"Learner(data={self.data!r}, model={type(self.model).__name__}, "
                f"layer_groups={len(self.layer_groups)}, "
                f"frozen={self.n_frozen}, loss_func={self.loss_func!r}, metrics={self.metric_names})")


def load_learner(path, file="export.pkl", test=None, device=None, fname=None) -> Learner:
    """The Learner that `export` wrote, ready for `predict`, as fastai v1: `path` is the file or its
    folder (`file`, or `fname`, names it there). The export records its Learner's class, so a task's
    Learner comes back as itself (a `CollabLearner` with its names). With `test` (a folder, a list of
    items, or what the data's `add_test` takes), those items are the test set for
    `learn.get_preds(ds_type=DatasetType.Test)`."""
    path = pathlib.Path(path)
    file = path if path.is_file() else path / (fname or file)
    model, data, loss, spec, learner_cls = read_export(file, device)
    learner_cls = learner_cls or Learner
    if not (isinstance(learner_cls, type) and issubclass(learner_cls, Learner)):
        raise FastbaseError(f"{file} names {learner_cls!r} as its Learner, which is not a fastbase Learner class.")
    learn = learner_cls(data, model, loss_func=loss, path=file.parent, model_spec=spec, silent=True)
    learn.model.eval()
    if test is not None:
        learn.data.add_test(test)
    return learn
