"""Layer 6: the models of lesson 7's GANs: `basic_generator` and `basic_critic` (DCGAN's pair, for
the WGAN notebook), `gan_critic` (the critic of the super-resolution GAN: spectral normalisation,
dropout, a residual block and self-attention), and `GANModule`, which holds a generator and a critic
and runs one of them according to its mode."""
from __future__ import annotations

import math

import torch
from torch import nn

from ...core import FastbaseError
from ...layers import Flatten, NormType, conv_layer, res_block

__all__ = ["GANModule", "basic_critic", "basic_generator", "gan_critic"]


def _check_size(in_size: int, what: str) -> int:
    """The number of halvings from `in_size` down to 4 pixels; `in_size` must be 4 times a power of 2."""
    n = math.log2(in_size / 4) if in_size >= 4 else -1
    if n < 0 or n != int(n):
        raise FastbaseError(f"{what}: in_size must be 4 times a power of 2 (8, 16, 32, 64...), got {in_size}.")
    return int(n)


def basic_critic(in_size: int, n_channels: int, n_features: int = 64, n_extra_layers: int = 0,
                 **conv_kwargs) -> nn.Sequential:
    """DCGAN's critic for `in_size` images of `n_channels`: stride-2 convolutions (leaky ReLU 0.2,
    BatchNorm after the first) doubling the features while halving the size down to 4 pixels, then a
    4x4 convolution to one score: (bs, n_channels, in_size, in_size) -> (bs, 1)."""
    n_down = _check_size(in_size, "basic_critic")
    layers = [conv_layer(n_channels, n_features, 4, 2, 1, leaky=0.2, norm_type=None, **conv_kwargs)]
    layers += [conv_layer(n_features, n_features, 3, 1, leaky=0.2, **conv_kwargs) for _ in range(n_extra_layers)]
    nf = n_features
    for _ in range(n_down - 1):
        layers.append(conv_layer(nf, nf * 2, 4, 2, 1, leaky=0.2, **conv_kwargs))
        nf *= 2
    layers += [nn.Conv2d(nf, 1, 4, padding=0), Flatten()]
    return nn.Sequential(*layers)


def basic_generator(in_size: int, n_channels: int, noise_sz: int = 100, n_features: int = 64,
                    n_extra_layers: int = 0, **conv_kwargs) -> nn.Sequential:
    """DCGAN's generator: noise (bs, noise_sz, 1, 1) through a 4x4 transposed convolution, then
    stride-2 transposed convolutions (ReLU, BatchNorm) halving the features while doubling the size
    up to `in_size`, and tanh: (bs, noise_sz, 1, 1) -> (bs, n_channels, in_size, in_size) in [-1, 1]."""
    n_up = _check_size(in_size, "basic_generator")
    nf = n_features * 2 ** max(n_up - 1, 0)
    layers = [conv_layer(noise_sz, nf, 4, 1, transpose=True, **conv_kwargs)]
    for _ in range(n_up - 1):
        layers.append(conv_layer(nf, nf // 2, 4, 2, 1, transpose=True, **conv_kwargs))
        nf //= 2
    layers += [conv_layer(nf, nf, 3, 1, 1, transpose=True, **conv_kwargs) for _ in range(n_extra_layers)]
    layers += [nn.ConvTranspose2d(nf, n_channels, 4, 2, 1, bias=False), nn.Tanh()]
    return nn.Sequential(*layers)


def gan_critic(n_channels: int = 3, nf: int = 128, p: float = 0.15) -> nn.Sequential:
    """The critic of lesson 7's super-resolution GAN: spectral-normalised convolutions with leaky ReLU
    (0.2) and 2-D dropout; a stride-2 stem and a residual block, two stride-2 stages doubling the
    features (self-attention after the first), and a 4x4 convolution to one score per window:
    (bs, n_channels, H, W) -> (bs, n) scores, n growing with the size (32 px: one; `AdaptiveLoss`
    compares each with the image's label). Images of at least 32 pixels."""
    def conv(ni, nf_out, ks=3, stride=1, **kwargs):
        return conv_layer(ni, nf_out, ks=ks, stride=stride, norm_type=NormType.Spectral, leaky=0.2, **kwargs)

    layers = [conv(n_channels, nf, ks=4, stride=2), nn.Dropout2d(p / 2),
              res_block(nf, dense=False, norm_type=NormType.Spectral, leaky=0.2)]
    for attention in (True, False):
        layers += [nn.Dropout2d(p), conv(nf, nf * 2, ks=4, stride=2, self_attention=attention)]
        nf *= 2
    layers += [conv(nf, 1, ks=4, bias=False, padding=0, use_activ=False), Flatten()]
    return nn.Sequential(*layers)


class GANModule(nn.Module):
    """A generator and a critic; `forward` runs the generator in generator mode (`gen_mode`), the
    critic otherwise. `switch(gen_mode)` sets the mode (None: the other one)."""

    def __init__(self, generator: nn.Module, critic: nn.Module, gen_mode: bool = False):
        super().__init__()
        self.generator, self.critic, self.gen_mode = generator, critic, gen_mode

    def forward(self, *args) -> torch.Tensor:
        return self.generator(*args) if self.gen_mode else self.critic(*args)

    def switch(self, gen_mode: bool | None = None) -> None:
        self.gen_mode = (not self.gen_mode) if gen_mode is None else bool(gen_mode)
