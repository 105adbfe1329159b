"""Layer 6: fastai's XResNet (the "bag of tricks" ResNet of He et al. 2019) and the wide ResNet of
fastai v1's DAWNBench models, both from random weights: `xresnet18/34/50/101/152`, `XResNet`,
`WideResNet`, `wrn_22`. `fastbase.vision.models` gathers them with their `cnn_learner` metadata.

XResNet changes three things in a ResNet: the stem is three 3x3 convolutions (32, 32, 64 channels,
the first with stride 2) instead of one 7x7; a shortcut that halves the size average-pools before
its 1x1 convolution instead of striding it (no input is skipped); and the last BatchNorm of each
residual branch starts at zero, so every block starts as the identity.
"""
from __future__ import annotations

from functools import partial

import torch
from torch import nn

from ..core import FastbaseError
from ..layers import Flatten

__all__ = ["WideResNet", "XResNet", "wrn_22", "xresnet18", "xresnet34", "xresnet50", "xresnet101", "xresnet152"]


def _conv_bn(n_in: int, n_out: int, ks: int = 3, stride: int = 1, zero_bn: bool = False,
             act: bool = True) -> nn.Sequential:
    """Conv (no bias) -> BatchNorm (weight 0 with `zero_bn`, else 1) -> ReLU (with `act`)."""
    bn = nn.BatchNorm2d(n_out)
    nn.init.constant_(bn.weight, 0.0 if zero_bn else 1.0)
    layers = [nn.Conv2d(n_in, n_out, ks, stride=stride, padding=ks // 2, bias=False), bn]
    return nn.Sequential(*layers, nn.ReLU(inplace=True)) if act else nn.Sequential(*layers)


class XResBlock(nn.Module):
    """A residual block: two 3x3 convolutions (`expansion` 1) or a 1x1-3x3-1x1 bottleneck (`expansion`
    4) from `n_in * expansion` to `n_hidden * expansion` channels; the shortcut average-pools when
    `stride` is 2 and projects with a 1x1 convolution when the channels change."""

    def __init__(self, expansion: int, n_in: int, n_hidden: int, stride: int = 1):
        super().__init__()
        n_in, n_out = n_in * expansion, n_hidden * expansion
        if expansion == 1:
            branch = [_conv_bn(n_in, n_hidden, 3, stride), _conv_bn(n_hidden, n_out, 3, zero_bn=True, act=False)]
        else:
            branch = [_conv_bn(n_in, n_hidden, 1), _conv_bn(n_hidden, n_hidden, 3, stride),
                      _conv_bn(n_hidden, n_out, 1, zero_bn=True, act=False)]
        self.convs = nn.Sequential(*branch)
        self.pool = nn.AvgPool2d(stride, ceil_mode=True) if stride != 1 else nn.Identity()
        self.idconv = _conv_bn(n_in, n_out, 1, act=False) if n_in != n_out else nn.Identity()
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.convs(x) + self.idconv(self.pool(x)))


def _kaiming_init(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


class XResNet(nn.Sequential):
    """Stem (three conv-BN-ReLU), max-pool, one stage per entry of `layers` (that many blocks; 64,
    128, 256, 512 hidden channels, each stage after the first halving the size), then average
    pooling, flatten and a linear layer to `c_out`. `expansion` 1 for 18/34 layers, 4 (bottleneck) for 50+."""

    def __init__(self, expansion: int, layers, c_in: int = 3, c_out: int = 1000):
        widths = [c_in, 32, 32, 64]
        stem = [_conv_bn(widths[i], widths[i + 1], stride=2 if i == 0 else 1) for i in range(3)]
        hidden = [64 // expansion, 64, 128, 256, 512]
        stages = []
        for i, n_blocks in enumerate(layers):
            n_in, n_out = hidden[i], hidden[i + 1]
            stages.append(nn.Sequential(*[XResBlock(expansion, n_in if b == 0 else n_out, n_out,
                                                    (1 if i == 0 else 2) if b == 0 else 1) for b in range(n_blocks)]))
        super().__init__(*stem, nn.MaxPool2d(kernel_size=3, stride=2, padding=1), *stages,
                         nn.AdaptiveAvgPool2d(1), Flatten(), nn.Linear(hidden[len(layers)] * expansion, c_out))
        _kaiming_init(self)  # convolutions and the linear layer; the BatchNorms keep their 1 or 0


def _xresnet(expansion: int, layers: list[int], name: str, pretrained: bool = False, c_out: int = 1000,
             **kwargs) -> XResNet:
    if pretrained:
        raise FastbaseError(f"{name} has no pretrained weights in fastbase (fastai v1 published none either): "
                            "pass pretrained=False to start from random weights.")
    return XResNet(expansion, layers, c_out=c_out, **kwargs)


def _xresnet_arch(depth: int, expansion: int, layers: list[int]):
    name = f"xresnet{depth}"
    arch = partial(_xresnet, expansion, layers, name)
    arch.__name__ = arch.__qualname__ = arch.arch_name = name
    arch.__module__ = "fastbase.vision.models"
    arch.__doc__ = f"XResNet-{depth} from random weights: `{name}(pretrained=False, c_out=1000, c_in=3)`."
    return arch


xresnet18 = _xresnet_arch(18, 1, [2, 2, 2, 2])
xresnet34 = _xresnet_arch(34, 1, [3, 4, 6, 3])
xresnet50 = _xresnet_arch(50, 4, [3, 4, 6, 3])
xresnet101 = _xresnet_arch(101, 4, [3, 4, 23, 3])
xresnet152 = _xresnet_arch(152, 4, [3, 8, 36, 3])


# --- wide ResNet ---------------------------------------------------------------------------------
class WideBlock(nn.Module):
    """Pre-activation block of a wide ResNet: BN-ReLU, 3x3 conv (stride), dropout `drop_p`, BN-ReLU,
    3x3 conv scaled by 0.2, plus the shortcut (a 1x1 conv of the activated input when channels change)."""

    def __init__(self, n_in: int, n_out: int, stride: int, drop_p: float = 0.0):
        super().__init__()
        self.bn = nn.BatchNorm2d(n_in)
        self.conv1 = nn.Conv2d(n_in, n_out, 3, stride, padding=1, bias=False)
        self.conv2 = nn.Sequential(nn.BatchNorm2d(n_out), nn.ReLU(inplace=True),
                                   nn.Conv2d(n_out, n_out, 3, 1, padding=1, bias=False))
        self.drop = nn.Dropout(drop_p) if drop_p else nn.Identity()
        self.shortcut = nn.Conv2d(n_in, n_out, 1, stride, bias=False) if n_in != n_out else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        activated = torch.relu(self.bn(x))
        return self.conv2(self.drop(self.conv1(activated))) * 0.2 + self.shortcut(activated)


class WideResNet(nn.Module):
    """Wide ResNet (Zagoruyko & Komodakis): a 3x3 conv to `start_nf` channels, `num_groups` groups of
    `N` blocks with `start_nf * 2**i * k` channels (each group after the first halving the size), then
    BN-ReLU, average pooling and a linear layer to `num_classes`. fastai v1's signature."""

    def __init__(self, num_groups: int, N: int, num_classes: int, k: int = 1, drop_p: float = 0.0,
                 start_nf: int = 16, n_in_channels: int = 3):
        super().__init__()
        widths = [start_nf] + [start_nf * 2 ** i * k for i in range(num_groups)]
        layers: list[nn.Module] = [nn.Conv2d(n_in_channels, start_nf, 3, 1, padding=1, bias=False)]
        for g in range(num_groups):
            layers += [WideBlock(widths[g] if b == 0 else widths[g + 1], widths[g + 1],
                                 (1 if g == 0 else 2) if b == 0 else 1, drop_p) for b in range(N)]
        layers += [nn.BatchNorm2d(widths[-1]), nn.ReLU(inplace=True), nn.AdaptiveAvgPool2d(1), Flatten(),
                   nn.Linear(widths[-1], num_classes)]
        self.features = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)


def wrn_22(pretrained: bool = False, num_classes: int = 10, **kwargs) -> WideResNet:
    """The 22-layer wide ResNet of fastai v1 (3 groups of 3 blocks, width 6) for `num_classes` (10, as
    CIFAR-10); `pretrained` is accepted so `cnn_learner(data, wrn_22, pretrained=False)` works."""
    if pretrained:
        raise FastbaseError("wrn_22 has no pretrained weights: pass pretrained=False.")
    return WideResNet(num_groups=3, N=3, num_classes=num_classes, k=6, drop_p=0.0, **kwargs)
