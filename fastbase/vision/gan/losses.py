"""Layer 6: the losses and the metric of lesson 7's GANs. `GANLoss` is the Learner's loss: in
generator mode it scores the generated images with the critic (`gen_loss_func(fake_pred, output,
target)`), in critic mode it generates fakes from the noise and compares the critic's scores of real
and fake images (`crit_loss_func(real_pred, fake_pred)`). `gan_loss_from_func` builds both from a
pixel loss and a critic loss (`GANLearner.from_learners`); `NoopLoss` and `WassersteinLoss` are the
WGAN's. `AdaptiveLoss` and `accuracy_thresh_expand` compare a critic's several scores per image with
the image's one label."""
from __future__ import annotations

import torch
from torch import nn

from ...metrics import accuracy_thresh

__all__ = ["AdaptiveLoss", "CriticLoss", "GANLoss", "GeneratorLoss", "NoopLoss", "WassersteinLoss",
           "accuracy_thresh_expand", "gan_loss_from_func"]


def _expand(target: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
    """The label of each image (bs,) repeated for each of its scores, as float (bs, n)."""
    return target.reshape(-1, *[1] * (output.dim() - 1)).expand_as(output).float()


class AdaptiveLoss(nn.Module):
    """`crit(output, target)` with the (bs,) labels repeated for each of the critic's (bs, n) scores."""

    def __init__(self, crit):
        super().__init__()
        self.crit = crit

    def forward(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.crit(output, _expand(target, output))


def accuracy_thresh_expand(y_pred: torch.Tensor, y_true: torch.Tensor, thresh: float = 0.5,
                           sigmoid: bool = True) -> torch.Tensor:
    """`accuracy_thresh` of a critic's (bs, n) scores against each image's (bs,) label, repeated."""
    return accuracy_thresh(y_pred, _expand(y_true, y_pred), thresh=thresh, sigmoid=sigmoid)


class NoopLoss(nn.Module):
    """The WGAN generator's loss: the mean of the critic's scores of its images."""

    def forward(self, output: torch.Tensor, *args) -> torch.Tensor:
        return output.mean()


class WassersteinLoss(nn.Module):
    """The WGAN critic's loss: mean score of the real images minus that of the fakes."""

    def forward(self, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        return real.mean() - fake.mean()


class GeneratorLoss(nn.Module):
    """`weights_gen[0] * loss_crit(fake_pred, 1) + weights_gen[1] * loss_gen(output, target)`: fool the
    critic, and stay close to the target (lesson 7's `weights_gen=(1., 50.)`)."""

    def __init__(self, loss_gen, loss_crit, weights_gen=None):
        super().__init__()
        self.loss_gen, self.loss_crit = loss_gen, loss_crit
        self.weights_gen = tuple(weights_gen) if weights_gen is not None else (1.0, 1.0)

    def forward(self, fake_pred: torch.Tensor, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        ones = fake_pred.new_ones(fake_pred.shape[0])
        return (self.weights_gen[0] * self.loss_crit(fake_pred, ones)
                + self.weights_gen[1] * self.loss_gen(output, target))


class CriticLoss(nn.Module):
    """`(loss_crit(real_pred, 1) + loss_crit(fake_pred, 0)) / 2`: tell real images from generated ones."""

    def __init__(self, loss_crit):
        super().__init__()
        self.loss_crit = loss_crit

    def forward(self, real_pred: torch.Tensor, fake_pred: torch.Tensor) -> torch.Tensor:
        ones, zeros = real_pred.new_ones(real_pred.shape[0]), fake_pred.new_zeros(fake_pred.shape[0])
        return (self.loss_crit(real_pred, ones) + self.loss_crit(fake_pred, zeros)) / 2


def gan_loss_from_func(loss_gen, loss_crit, weights_gen=None) -> tuple[GeneratorLoss, CriticLoss]:
    """The generator's and the critic's GAN losses from a generator loss (pixels, features) and a
    critic loss (e.g. `AdaptiveLoss(nn.BCEWithLogitsLoss())`)."""
    return GeneratorLoss(loss_gen, loss_crit, weights_gen), CriticLoss(loss_crit)


class GANLoss:
    """The loss of a `GANModule` (`gan_model`), in the mode the module is in. Generator mode:
    `loss(output, target)` = `gen_loss_func(critic(output), output, target)`. Critic mode (the batch's
    real images are the input, the noise or small images the target): `loss(real_pred, noise)` =
    `crit_loss_func(real_pred, critic(generator(noise)))`, the generator not trained. A plain object,
    not a module: it reads the GAN's models, it does not own them."""

    def __init__(self, gen_loss_func, crit_loss_func, gan_model):
        self.gen_loss_func, self.crit_loss_func, self.gan_model = gen_loss_func, crit_loss_func, gan_model

    def __call__(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        model = self.gan_model
        if model.gen_mode:
            return self.gen_loss_func(model.critic(output), output, target)
        with torch.no_grad():
            fake = model.generator(target)
        return self.crit_loss_func(output, model.critic(fake))

    def __repr__(self):
        mode = "generator" if self.gan_model.gen_mode else "critic"
        return f"GANLoss({self.gen_loss_func!r}, {self.crit_loss_func!r}, mode={mode})"
