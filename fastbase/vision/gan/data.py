"""Layer 6: the data of a GAN that makes images from noise (lesson7-wgan), as the course writes it:

    GANItemList.from_folder(path, noise_sz=100).split_none().label_from_func(noop)
        .transform(tfms=[[crop_pad(size=64, row_pct=(0, 1), col_pct=(0, 1))], []], size=64, tfm_y=True)
        .databunch(bs=128).normalize(stats=[torch.tensor([0.5] * 3), torch.tensor([0.5] * 3)], do_x=False, do_y=True)

The images are read, resized and augmented as any image batch; then `NoiseInput` makes the batch
`(noise (bs, noise_sz, 1, 1), images)`: a `NoisyItem` per item as the input, the real image as the
target, normalised with `do_y=True` (the generator's tanh gives [-1, 1], the stats 0.5 map to it).
"""
from __future__ import annotations

import functools

import torch

from ...data import DatasetType, ItemBase, TfmOrder
from ...data.labels import LabelItemList
from ...figures import finish_figure, subplots
from ..data import ImageDataBunch, ImageList
from ..dataset import ImageDataset
from ..image import Image, load_image
from ..show import batch_predictions

__all__ = ["GANDataBunch", "GANImageTargets", "GANItemList", "NoiseInput", "NoisyItem"]


class NoisyItem(ItemBase):
    """The input of a generator: `data` is normal noise (noise_sz, 1, 1), drawn when the item is made."""

    def __init__(self, noise_sz: int):
        super().__init__(torch.randn(noise_sz, 1, 1), obj=noise_sz)

    def __str__(self):
        return f"noise of {self.obj}"


class GANImageTargets(LabelItemList):
    """The real images of a GAN's items (`label_from_func(noop)`: the item's own file); `ll[i]` opens one."""
    item_cls = Image

    def process(self, train=None, names=None):
        self.classes = None
        self.targets = torch.zeros(len(self.items), dtype=torch.long)  # the images are files, opened per item
        return self

    def get(self, i: int) -> Image:
        return Image(load_image(self.items[i])[0].float().div_(255))

    def reconstruct(self, t: torch.Tensor) -> Image:
        return Image(t.float().clamp(0, 1))


class GANItemList(ImageList):
    """Image files for a GAN that generates from noise: `il[i]` is a `NoisyItem` of `noise_sz`, the
    labels the images themselves, and the chain ends in a `GANDataBunch`."""

    def __init__(self, items, path=".", inner_df=None, label_cls=None, noise_sz: int = 100, **settings):
        super().__init__(items, path=path, inner_df=inner_df, label_cls=label_cls or GANImageTargets,
                         noise_sz=noise_sz, **settings)

    def get(self, i: int) -> NoisyItem:
        return NoisyItem(self.settings["noise_sz"])

    @classmethod
    def build_databunch(cls, lls, bunch_cls=None, **kwargs) -> GANDataBunch:
        return (bunch_cls or GANDataBunch).create_from_ll(lls, **kwargs)


class NoiseInput:
    """Batch transform `(images, _) -> (noise (bs, noise_sz, 1, 1), images)` on the images' device:
    the generator's input, fresh for every batch; the images become the targets."""
    order = TfmOrder.INPUTS

    def __init__(self, noise_sz: int):
        self.noise_sz = noise_sz

    def __call__(self, batch):
        x, *_ = batch
        return torch.randn(x.shape[0], self.noise_sz, 1, 1, device=x.device), x

    def __repr__(self):
        return f"NoiseInput(noise_sz={self.noise_sz})"


class GANDataBunch(ImageDataBunch):
    """Batches `(noise, real images)` for a GAN learning to generate images from noise: the images
    are read and augmented as the inputs of any image batch, then `NoiseInput` turns them into the
    targets. `normalize(stats, do_x=False, do_y=True)` normalises the images; `show_batch` draws real
    images, `show_results` generated ones."""

    @classmethod
    def _check_labels(cls, lls, tfm_y: bool, resizes: bool) -> None:
        """The targets are the images themselves: `tfm_y` (the course passes True) changes nothing."""

    @classmethod
    def _datasets(cls, lls, common: dict, canvas: bool):
        make = functools.partial(ImageDataset, **common)
        return make(lls.train.x.items, canvas=canvas), make(lls.valid.x.items), make

    @classmethod
    def create_from_ll(cls, lls, **kwargs) -> GANDataBunch:
        data = super().create_from_ll(lls, **kwargs)
        data.noise_sz = lls.train.x.settings.get("noise_sz", 100)
        for dl in data.dls:
            dl.add_tfm(NoiseInput(data.noise_sz))
        return data

    def one_item(self, item):
        """A batch of one noise input: a `NoisyItem` (or its tensor), normalised as the inputs are."""
        x = torch.as_tensor(item.data if isinstance(item, ItemBase) else item).float().to(self.device)
        return self.norm.norm(x[None]) if self.norm is not None else x[None], torch.zeros(1, device=self.device)

    def decode_prediction(self, probs: torch.Tensor, thresh: float = 0.5, regression: bool = False):
        """`(Image, its pixels in [0, 1])` of one generated image (denormalised with `do_y`)."""
        pixels = self.denorm_y(probs[None])[0].clamp(0, 1)
        return Image(pixels), pixels

    def show_batch(self, rows: int = 5, figsize=None, ds_type: DatasetType = DatasetType.Train,
                   return_fig: bool | None = None, save_to=None, **kwargs):
        """Up to `rows` x `rows` real images of one batch, denormalised."""
        _, y = self.one_batch(ds_type)
        return _image_grid(self.denorm_y(y).clamp(0, 1), rows, figsize, return_fig, save_to, **kwargs)

    def show_results(self, learn, ds_type: DatasetType = DatasetType.Train, rows: int = 5, figsize=None,
                     return_fig: bool | None = None, save_to=None, **kwargs):
        """Up to `rows` x `rows` images generated by `learn`'s model from one batch of noise (the
        model must be in generator mode: `learn.gan_trainer.switch(gen_mode=True)`)."""
        _, _, out = batch_predictions(learn, ds_type)
        return _image_grid(self.denorm_y(out).clamp(0, 1), rows, figsize, return_fig, save_to, **kwargs)


def _image_grid(images: torch.Tensor, rows: int, figsize, return_fig, save_to, **kwargs):
    fig, axes = subplots(rows, rows, figsize=figsize or (2 * rows, 2 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, img in zip(axes.flat, images):
        Image(img.float().cpu()).show(ax=ax, **kwargs)
    fig.tight_layout()
    return finish_figure(fig, return_fig, save_to)
