"""Layer 4: `TensorBoardLogger` (and fastai v1's `LearnerTensorboardWriter`, under
`fastbase.callbacks.tensorboard` as in fastai): a run in TensorBoard's event files: losses, learning
rates and metrics; histograms of the weights and their gradients; a few input images; the model's
graph. Needs the `tensorboard` package (`pip install 'fastbase[tensorboard]'`).

Scalars are read from the Recorder once per epoch (no device read per batch); histograms read the
parameters every `hist_iters` batches, images and the graph once per fit. The logger stays out of
`lr_find` runs, and under torchrun only rank 0 writes.
"""
from __future__ import annotations

import math
import pathlib
import time
import warnings

import torch

from ..callback import Callback, Order
from ..core import FastbaseError, is_main_process

__all__ = ["LearnerTensorboardWriter", "TensorBoardLogger"]


class TensorBoardLogger(Callback):
    """Writes TensorBoard event files under `log_dir` (default `learn.path/runs/{name}`, `name`
    default a timestamp): per training batch `train/loss` and `train/lr` (and `train/mom`), per
    epoch `epoch/train_loss`, `epoch/valid_loss` and `epoch/<metric>`; every `hist_iters` training
    batches (0: never) the histograms `weights/<parameter>` and `grads/<parameter>`; at the first
    batch of each fit, with `images`, up to `n_images` inputs (`images/train`, denormalised, when
    the inputs are images of 1 or 3 channels) and, with `graph`, the model's graph (traced in eval
    mode, so BatchNorm statistics are untouched). Batch scalars are written at the end of each epoch
    from the Recorder. The step count goes on across fits and is in `state_dict()`."""
    order = Order.TENSORBOARD_LOGGER

    def __init__(self, log_dir=None, name: str | None = None, hist_iters: int = 500, images: bool = True,
                 graph: bool = True, n_images: int = 8):
        self.log_dir, self.run_name = log_dir, name
        self.hist_iters, self.images, self.graph, self.n_images = int(hist_iters), images, graph, n_images
        self.step = 0
        self.epochs = 0
        self.writer = None

    def _open(self):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as e:
            raise FastbaseError("TensorBoardLogger needs the tensorboard package: pip install tensorboard "
                                "(or pip install 'fastbase[tensorboard]').") from e
        if self.log_dir is None:
            self.run_name = self.run_name or time.strftime("%Y%m%d-%H%M%S")
            self.log_dir = pathlib.Path(self.learn.path) / "runs" / self.run_name
        return SummaryWriter(log_dir=str(self.log_dir))

    def before_fit(self):
        if not is_main_process():
            return
        if self.writer is None:
            self.writer = self._open()
        self._seen = 0  # the Recorder starts afresh each fit
        self._batches = 0  # training batches since the last epoch's scalars were written
        self._first = True

    def after_backward(self):
        """Histograms while the gradients of this batch are there (the step zeroes them)."""
        if self.writer is None or not self.hist_iters:
            return
        step = self.step + self._batches  # the batch's global step, as the scalars will be written
        if step % self.hist_iters:
            return
        for name, param in self.learn.model.named_parameters():
            self.writer.add_histogram(f"weights/{name}", param.detach().float().cpu(), step)
            if param.grad is not None:
                self.writer.add_histogram(f"grads/{name}", param.grad.detach().float().cpu(), step)

    def after_batch(self):
        if self.writer is None or not self.learn.training:
            return
        if self._first:
            self._first = False
            xb = self.learn.xb[0] if self.learn.xb else None
            if self.images and isinstance(xb, torch.Tensor) and xb.dim() == 4 and xb.shape[1] in (1, 3):
                shown = self.learn.data.denorm(xb[: self.n_images].detach()).float().clamp(0, 1).cpu()
                self.writer.add_images("images/train", shown, self.step)
            if self.graph:
                self._add_graph()
        self._batches += 1

    def _add_graph(self) -> None:
        model, training = self.learn.model, self.learn.model.training
        try:
            model.eval()
            with torch.no_grad():
                self.writer.add_graph(model, tuple(self.learn.xb))
        except Exception as e:  # noqa: BLE001 -- tracing fails on some models; the run goes on without the graph
            warnings.warn(f"TensorBoardLogger could not trace the model's graph ({type(e).__name__}: {e}); "
                          "pass graph=False to skip it.", stacklevel=2)
        finally:
            model.train(training)

    def after_epoch(self):
        learn = self.learn
        if self.writer is None:
            return
        recorder, writer = learn.recorder, self.writer
        losses = recorder.losses  # one read of the device for the whole epoch
        for i in range(self._seen, len(losses)):
            writer.add_scalar("train/loss", losses[i], self.step)
            writer.add_scalar("train/lr", recorder.lrs[i], self.step)
            if recorder.moms[i] is not None:
                writer.add_scalar("train/mom", recorder.moms[i], self.step)
            self.step += 1
        self._batches = 0
        self._seen = len(losses)
        if recorder.values:
            names = recorder.value_names
            self.epochs += 1
            for name, value in zip(names, recorder.values[-1]):
                if not math.isnan(value):
                    writer.add_scalar(f"epoch/{name}", value, self.epochs)
        writer.flush()

    def cleanup_fit(self):
        if self.writer is not None:
            self.writer.flush()

    def close(self) -> None:
        """Close the event file; a later fit opens a new one in the same folder."""
        if self.writer is not None:
            self.writer.close()
            self.writer = None

    def state_dict(self) -> dict:
        return {"step": self.step, "epochs": self.epochs}

    def load_state_dict(self, state: dict) -> None:
        self.step, self.epochs = int(state["step"]), int(state["epochs"])


def LearnerTensorboardWriter(learn=None, base_dir=None, name: str | None = None, loss_iters: int = 25,
                             hist_iters: int = 500, stats_iters: int = 100) -> TensorBoardLogger:
    """fastai v1's TensorBoard writer: a `TensorBoardLogger` writing under `base_dir/name` (default
    `learn.path/runs/{name}`). Losses are written for every batch, so `loss_iters` and `stats_iters`
    are accepted and unused; `hist_iters` spaces the histograms."""
    log_dir = None if base_dir is None else pathlib.Path(base_dir) / (name or time.strftime("%Y%m%d-%H%M%S"))
    return TensorBoardLogger(log_dir=log_dir, name=name, hist_iters=hist_iters)
