"""A tiny convnet "architecture" and folders of noise images, for tests of cnn_learner features
(export for deployment, batch prediction, feature caching). Module-level, so an export can name
`tiny_vision:tiny_arch` and `load_learner` can import it again."""
import numpy as np
import PIL.Image
import torch
from torch import nn

from fastbase.data import imagenet_stats
from fastbase.vision.data import ImageDataBunch
from fastbase.vision.learner import cnn_learner


def tiny_arch(pretrained=False) -> nn.Sequential:
    """conv-BN-ReLU twice, then pooling and a classifier: cnn_learner cuts the body before the pooling.
    The same seed gives the same weights; `pretrained` is accepted and ignored."""
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10))


def noise_image(path, seed: int, hw=(20, 24)):
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (*hw, 3), dtype=np.uint8)
    PIL.Image.fromarray(pixels).save(path)
    return path


def noise_folder(root, per_class=(12, 5), classes=("ants", "bees")):
    """`root/train/<class>/` and `root/valid/<class>/` of random-noise PNGs (each file different)."""
    seed = 0
    for split, n in zip(("train", "valid"), per_class):
        for name in classes:
            for i in range(n):
                noise_image(root / split / name / f"{name}_{i}.png", seed)
                seed += 1
    return root


def tiny_learner(root, seed: int = 0, ds_tfms=None, bs: int = 8, **kwargs):
    """cnn_learner(tiny_arch) on `root` at 16 px, pretrained (so the body starts frozen), no workers."""
    data = ImageDataBunch.from_folder(root, ds_tfms=ds_tfms, size=16, bs=bs, num_workers=0, seed=seed)
    data.normalize(imagenet_stats)
    torch.manual_seed(seed)
    kwargs.setdefault("silent", True)
    return cnn_learner(data, tiny_arch, path=root, **kwargs)
