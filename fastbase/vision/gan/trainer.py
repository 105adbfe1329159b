"""Layer 6: the callbacks that train a GAN (lesson 7): `GANTrainer` alternates the generator and the
critic (which one trains, which one's BatchNorm stays in eval mode, the critic's weight clipping for a
WGAN, each one's loss as a column of the epoch table), the switchers that decide when to alternate
(`FixedGANSwitcher`: after a number of batches; `AdaptiveGANSwitcher`: when a loss falls below a
threshold), and `GANDiscriminativeLR`, a larger learning rate for the critic.

One optimizer holds both models' parameters: only the model being trained has gradients, and
parameters without a gradient are neither stepped nor decayed, so the two never mix, and saving,
loading and checkpoints keep both models' optimizer state as for any Learner.
"""
from __future__ import annotations

import math
from contextlib import contextmanager

import numpy as np
import torch

from ...callback import Callback, Order
from ...layers import requires_grad

__all__ = ["AdaptiveGANSwitcher", "FixedGANSwitcher", "GANDiscriminativeLR", "GANTrainer"]


class GANTrainer(Callback):
    """Trains a `GANLearner`'s `GANModule` in its current mode: in critic mode the batch's real images
    (its targets) become the input and the noise (or small images) the target, so the critic scores
    real images and `GANLoss` generates the fakes. Only the model in training has gradients; with
    `switch_eval` the other one runs in eval mode (its BatchNorm statistics fixed). `clip` bounds the
    critic's weights to [-clip, clip] before each of its batches (WGAN). The epoch table gains the
    mean training loss of each (`gen_loss`, `disc_loss`). `show_img`: keep the last generated batch's
    first image (`last_gen`, an `Image`-ready tensor) after each epoch."""
    name = "gan_trainer"  # the key of its state in checkpoints (the default would split the capitals)

    def __init__(self, clip: float | None = None, switch_eval: bool = True, show_img: bool = True):
        self.clip, self.switch_eval, self.show_img = clip, switch_eval, show_img
        self.last_gen = None
        self._losses = {True: [], False: []}

    @property
    def gen_mode(self) -> bool:
        return self.learn.model.gen_mode

    def switch(self, gen_mode: bool | None = None) -> None:
        """Train the generator (`gen_mode=True`), the critic (False), or the other one (None)."""
        self.learn.model.switch(gen_mode)
        self._set_trainable()

    @contextmanager
    def generating(self):
        """Generator mode for a while (predictions, drawing), then the mode before."""
        before = self.gen_mode
        self.switch(True)
        try:
            yield
        finally:
            self.switch(before)

    def _set_trainable(self) -> None:
        model = self.learn.model
        requires_grad(model.generator, model.gen_mode)
        requires_grad(model.critic, not model.gen_mode)
        if self.switch_eval and model.training:
            model.generator.train(model.gen_mode)
            model.critic.train(not model.gen_mode)

    def before_train(self):  # the loop has just put the whole model in training mode
        self._losses = {True: [], False: []}
        self._set_trainable()

    def before_batch(self):
        learn = self.learn
        if self.gen_mode:
            return
        if self.clip is not None and learn.training:
            with torch.no_grad():
                for p in learn.model.critic.parameters():
                    p.clamp_(-self.clip, self.clip)
        learn.xb, learn.yb = learn.yb, learn.xb

    def after_loss(self):
        if self.learn.training:
            self._losses[self.gen_mode].append(self.learn.loss)
            if self.gen_mode and self.show_img:
                self._last_pred = self.learn.pred.detach()

    def after_epoch(self):
        means = [torch.stack(ls).float().mean().item() if ls else math.nan
                 for ls in (self._losses[True], self._losses[False])]
        learn = self.learn
        valid = learn.valid_values if learn.valid_values is not None else [math.nan] * (1 + len(learn.metrics))
        learn.valid_values = [*valid, *means]
        pred = getattr(self, "_last_pred", None)
        if pred is not None:
            self.last_gen, self._last_pred = learn.data.denorm_y(pred[:1].detach().float()).clamp(0, 1)[0].cpu(), None

    def state_dict(self) -> dict:
        return {"gen_mode": bool(self.gen_mode)}

    def load_state_dict(self, state: dict) -> None:
        self.switch(state["gen_mode"])


class FixedGANSwitcher(Callback):
    """Alternate after `n_crit` critic batches and `n_gen` generator batches (each an int, or a
    function of the number of generator batches so far, as fastai v1 allows)."""
    name = "fixed_gan_switcher"

    def __init__(self, n_crit=1, n_gen=1):
        self.n_crit, self.n_gen = n_crit, n_gen
        self.n_c = self.n_g = self.gen_iters = 0

    def after_batch(self):
        learn = self.learn
        if not learn.training:
            return
        trainer = learn.gan_trainer
        if trainer.gen_mode:
            self.n_g += 1
            self.gen_iters += 1
            target = self.n_gen(self.gen_iters) if callable(self.n_gen) else self.n_gen
            if self.n_g >= target:
                trainer.switch(False)
                self.n_g = 0
        else:
            self.n_c += 1
            target = self.n_crit(self.gen_iters) if callable(self.n_crit) else self.n_crit
            if self.n_c >= target:
                trainer.switch(True)
                self.n_c = 0

    def state_dict(self) -> dict:
        return {"n_c": self.n_c, "n_g": self.n_g, "gen_iters": self.gen_iters}

    def load_state_dict(self, state: dict) -> None:
        self.n_c, self.n_g, self.gen_iters = state["n_c"], state["n_g"], state["gen_iters"]


class AdaptiveGANSwitcher(Callback):
    """Train the critic until its loss falls below `critic_thresh`, the generator until its loss falls
    below `gen_thresh` (None: alternate after every batch of that model). Reads the loss each batch."""
    name = "adaptive_gan_switcher"

    def __init__(self, gen_thresh: float | None = None, critic_thresh: float | None = None):
        self.gen_thresh, self.critic_thresh = gen_thresh, critic_thresh

    def after_batch(self):
        learn = self.learn
        if not learn.training or learn.loss is None:
            return
        trainer = learn.gan_trainer
        thresh = self.gen_thresh if trainer.gen_mode else self.critic_thresh
        if thresh is None or float(learn.loss) < thresh:
            trainer.switch(not trainer.gen_mode)


class GANDiscriminativeLR(Callback):
    """The critic trains at `mult_lr` times the learning rate of the generator (the schedule's)."""
    name = "gan_discriminative_lr"
    order = Order.GAN_LR

    def __init__(self, mult_lr: float = 5.0):
        self.mult_lr = mult_lr
        self._saved = None

    def before_batch(self):
        learn = self.learn
        if learn.training and not learn.gan_trainer.gen_mode:
            self._saved = learn.opt.lrs
            learn.opt.lr = np.array(self._saved) * self.mult_lr

    def after_batch(self):
        if self._saved is not None:
            self.learn.opt.lr, self._saved = np.array(self._saved), None
