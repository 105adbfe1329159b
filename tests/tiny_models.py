"""Tiny models and data for the Learner tests. Module-level, so `export`/`load_learner` can name the
model factory ('tiny_models:tiny_mlp') and import it again."""
import torch
from torch import nn
from torch.utils.data import TensorDataset

from fastbase.data import DataBunch
from fastbase.learner import Learner


def tiny_mlp(n_in: int = 8, n_out: int = 2, hidden: int = 16) -> nn.Sequential:
    """Linear -> BatchNorm -> ReLU -> Linear, so tests see weights, biases and BatchNorm."""
    return nn.Sequential(nn.Linear(n_in, hidden), nn.BatchNorm1d(hidden), nn.ReLU(), nn.Linear(hidden, n_out))


def three_groups(model: nn.Sequential) -> list:
    """Layer groups [Linear+BN, ReLU+Linear... ] split as [model[:2], model[2:3]... ]: body, middle, head."""
    return [model[:2], model[2:3], model[3:]]


def dataset(n: int, seed: int, multi_label: bool = False) -> TensorDataset:
    """x ~ N(0, 1)^8; label 1 when x0 + x1 > 0 (learnable), or two independent labels (multi-label)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 8, generator=g)
    if multi_label:
        y = torch.stack([x[:, 0] > 0, x[:, 1] > 0], dim=1).float()
    else:
        y = (x[:, 0] + x[:, 1] > 0).long()
    ds = TensorDataset(x, y)
    ds.classes, ds.multi_label = ["a", "b"], multi_label
    return ds


def make_data(n_train: int = 128, n_valid: int = 40, bs: int = 32, val_bs: int | None = None,
              multi_label: bool = False, seed: int = 0) -> DataBunch:
    return DataBunch.create(dataset(n_train, seed, multi_label), dataset(n_valid, seed + 1, multi_label), bs=bs,
                            val_bs=val_bs, num_workers=0, device="cpu", seed=seed)


def make_learner(data=None, groups: bool = False, seed: int = 0, **kwargs) -> Learner:
    torch.manual_seed(seed)
    data = data if data is not None else make_data()
    model = tiny_mlp(n_out=data.c)
    kwargs.setdefault("silent", True)
    return Learner(data, model, layer_groups=three_groups(model) if groups else None, **kwargs)


def tiny_detector_arch(pretrained=False) -> nn.Sequential:
    """A four-stage classifier (32x32 -> 16 -> 8 -> 4 -> 2) with BatchNorm, cut at its pooling layer by
    create_body: a body with stride-8, 16 and 32 stages for a detector's feature pyramid. Module-level,
    so an export names it ('tiny_models:tiny_detector_arch')."""
    def stage(n_in, n_out):
        return nn.Sequential(nn.Conv2d(n_in, n_out, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(n_out),
                             nn.ReLU())
    return nn.Sequential(stage(3, 8), stage(8, 16), stage(16, 16), stage(16, 32), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(32, 10))
