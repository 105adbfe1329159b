"""GANs (lesson 7): the WGAN on noise data as lesson7-wgan writes it, the super-resolution GAN from a
pretrained generator's and critic's Learners as lesson7-superres-gan does, switching, the losses,
saving and resuming through checkpoints, and the generator's export."""
import math
from functools import partial

import pytest
import torch
from image_pairs import digit_pairs, strided_arch
from torch import nn

from fastbase.callbacks import Checkpoint
from fastbase.callbacks.checkpoint import load_checkpoint
from fastbase.core import FastbaseError
from fastbase.learner import Learner, load_learner
from fastbase.vision import (
    AdaptiveGANSwitcher,
    AdaptiveLoss,
    DatasetType,
    FixedGANSwitcher,
    GANDiscriminativeLR,
    GANItemList,
    GANLearner,
    Image,
    ImageImageList,
    ImageList,
    MSELossFlat,
    NormType,
    basic_critic,
    basic_generator,
    get_transforms,
    imagenet_stats,
    noop,
    optim,
    unet_learner,
)
from fastbase.vision.gan import (  # fastai's import path for the GAN names
    CriticLoss,
    NoisyItem,
    NoopLoss,
    WassersteinLoss,
    accuracy_thresh_expand,
    crop_pad,
    gan_critic,
)


def noise_data(path, size=16, bs=8, noise_sz=8):
    """lesson7-wgan's data cell, on a folder of images."""
    return (GANItemList.from_folder(path, noise_sz=noise_sz).split_none().label_from_func(noop)
            .transform(tfms=[[crop_pad(size=size, row_pct=(0, 1), col_pct=(0, 1))], []], size=size, tfm_y=True)
            .databunch(bs=bs, num_workers=0, seed=0)
            .normalize(stats=[torch.tensor([0.5, 0.5, 0.5]), torch.tensor([0.5, 0.5, 0.5])], do_x=False, do_y=True))


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    return digit_pairs(tmp_path_factory.mktemp("gan_pairs"), n=24)


def test_models_shapes():
    generator = basic_generator(in_size=16, n_channels=3, noise_sz=8, n_features=8, n_extra_layers=1)
    critic = basic_critic(in_size=16, n_channels=3, n_features=8, n_extra_layers=1)
    images = generator(torch.randn(2, 8, 1, 1))
    assert images.shape == (2, 3, 16, 16) and images.abs().max() <= 1
    assert critic(images).shape == (2, 1)
    assert gan_critic(nf=8)(torch.randn(2, 3, 32, 32)).shape == (2, 1)
    assert gan_critic(nf=8)(torch.randn(2, 3, 48, 48)).shape == (2, 9)
    with pytest.raises(FastbaseError, match="power of 2"):
        basic_generator(in_size=24, n_channels=3)


def test_losses():
    real, fake = torch.tensor([[1.0], [3.0]]), torch.tensor([[0.5], [0.5]])
    assert float(WassersteinLoss()(real, fake)) == pytest.approx(1.5)
    assert float(NoopLoss()(fake, None, None)) == pytest.approx(0.5)
    scores, labels = torch.tensor([[2.0, -1.0], [-3.0, -2.0]]), torch.tensor([1, 0])
    expected = nn.BCEWithLogitsLoss()(scores, torch.tensor([[1.0, 1.0], [0.0, 0.0]]))
    assert torch.allclose(AdaptiveLoss(nn.BCEWithLogitsLoss())(scores, labels), expected)
    assert float(accuracy_thresh_expand(scores, labels)) == pytest.approx(0.75)
    real_pred, fake_pred = torch.tensor([[3.0], [2.0]]), torch.tensor([[-1.0], [0.5]])
    bce = nn.BCEWithLogitsLoss()
    expected = (bce(real_pred, torch.ones(2, 1)) + bce(fake_pred, torch.zeros(2, 1))) / 2
    assert torch.allclose(CriticLoss(AdaptiveLoss(bce))(real_pred, fake_pred), expected)


def test_wgan_as_lesson7_writes_it(pairs, tmp_path):
    path_hr, _ = pairs
    data = noise_data(path_hr)
    x, y = data.one_batch()
    assert x.shape == (8, 8, 1, 1) and y.shape == (8, 3, 16, 16) and -1 <= float(y.min()) < 0
    generator = basic_generator(in_size=16, n_channels=3, noise_sz=8, n_features=8, n_extra_layers=1)
    critic = basic_critic(in_size=16, n_channels=3, n_features=8, n_extra_layers=1)
    learn = GANLearner.wgan(data, generator, critic, switch_eval=False,
                            opt_func=partial(optim.Adam, betas=(0., 0.99)), wd=0., path=tmp_path,
                            switcher=partial(FixedGANSwitcher, n_crit=1, n_gen=1))
    before = [p.clone() for p in critic.parameters()]
    learn.fit(1, 2e-4)
    assert learn.recorder.names[-3:] == ["gen_loss", "disc_loss", "time"]
    gen_loss, disc_loss = learn.recorder.values[-1][-2:]
    assert not math.isnan(gen_loss) and not math.isnan(disc_loss)
    assert all(p.abs().max() <= 0.01 + 1e-3 for p in critic.parameters())  # clipped, then one Adam step
    assert any(not torch.equal(a, b) for a, b in zip(before, critic.parameters()))
    learn.gan_trainer.switch(gen_mode=True)
    fig = learn.show_results(ds_type=DatasetType.Train, rows=2, figsize=(4, 4))
    assert len(fig.axes) == 4
    img, pixels, _ = learn.predict(NoisyItem(8))
    assert isinstance(img, Image) and pixels.shape == (3, 16, 16)


def test_switchers_and_discriminative_lr(pairs):
    path_hr, _ = pairs
    data = noise_data(path_hr, bs=4)
    learn = GANLearner(data, basic_generator(16, 3, noise_sz=8, n_features=8), basic_critic(16, 3, n_features=8),
                       NoopLoss(), WassersteinLoss(), switcher=partial(FixedGANSwitcher, n_crit=2, n_gen=1),
                       callback_fns=[partial(GANDiscriminativeLR, mult_lr=5.)])
    modes, lrs = [], []

    class Spy(FixedGANSwitcher):  # records each batch's mode and lr, switching nothing
        def after_loss(self):
            modes.append(self.learn.model.gen_mode)
            lrs.append(self.learn.opt.lr)

        def after_batch(self):
            pass

    learn.fit(1, 1e-3, callbacks=[Spy()])
    assert modes[:6] == [False, False, True, False, False, True]
    assert lrs[:3] == pytest.approx([5e-3, 5e-3, 1e-3])
    gen = learn.model.generator
    assert all(p.requires_grad == learn.model.gen_mode for p in gen.parameters())
    learn.switcher = None
    adaptive = AdaptiveGANSwitcher(critic_thresh=-1e9)  # the critic never gets there: no switch
    learn.gan_trainer.switch(False)
    learn.callbacks = [learn.gan_trainer, adaptive]
    learn.fit(1, 1e-3)
    assert learn.model.gen_mode is False


def superres_gan(pairs, tmp_path):
    """lesson7-superres-gan's set-up at 32 px: a U-Net generator with a pixel loss, a gan_critic
    telling generated images from real ones, then GANLearner.from_learners."""
    path_hr, path_lr = pairs
    src = ImageImageList.from_folder(path_lr).split_by_rand_pct(0.2, seed=42)
    data_gen = (src.label_from_func(lambda x: path_hr / x.name).transform(get_transforms(max_zoom=2.), size=32,
                                                                          tfm_y=True)
                .databunch(bs=4, num_workers=0, seed=0).normalize(imagenet_stats, do_y=True))
    learn_gen = unet_learner(data_gen, strided_arch, pretrained=False, wd=1e-3, blur=True, norm_type=NormType.Weight,
                             self_attention=True, y_range=(-3., 3.), loss_func=MSELossFlat(), path=tmp_path)
    path_gen = tmp_path / "image_gen"
    path_gen.mkdir()
    names = data_gen.fix_dl.dataset.items
    i = 0
    for b in data_gen.fix_dl:
        for o in learn_gen.pred_batch(batch=b, reconstruct=True):
            o.save(path_gen / names[i].name)
            i += 1
    (tmp_path / "images").symlink_to(path_hr)
    data_crit = (ImageList.from_folder(tmp_path, include=["image_gen", "images"]).split_by_rand_pct(0.2, seed=42)
                 .label_from_folder(classes=["image_gen", "images"]).transform(get_transforms(), size=32)
                 .databunch(bs=4, num_workers=0, seed=0).normalize(imagenet_stats))
    fig = data_crit.show_batch(rows=2, ds_type=DatasetType.Train, imgsize=2)  # the notebook's call
    assert fig.get_size_inches().tolist() == [4, 4]
    learn_crit = Learner(data_crit, gan_critic(nf=8), metrics=accuracy_thresh_expand,
                         loss_func=AdaptiveLoss(nn.BCEWithLogitsLoss()), wd=1e-3, path=tmp_path)
    learn_crit.fit(1, 1e-3)
    learn = GANLearner.from_learners(learn_gen, learn_crit, weights_gen=(1., 50.), show_img=False,
                                     switcher=partial(AdaptiveGANSwitcher, critic_thresh=0.65),
                                     opt_func=partial(optim.Adam, betas=(0., 0.99)), wd=1e-3)
    learn.callback_fns.append(partial(GANDiscriminativeLR, mult_lr=5.))
    return learn, data_gen


def test_superres_gan_from_learners_resume_and_export(pairs, tmp_path):
    learn, data_gen = superres_gan(pairs, tmp_path)
    assert i_files(tmp_path / "image_gen") == i_files(pairs[0]) - len(data_gen.valid_ds)
    learn.fit(1, 1e-4, callbacks=[Checkpoint("gan")])
    assert not math.isnan(learn.recorder.values[-1][1])  # a validation loss, in the mode it ended in
    learn.save("gan-1c")
    state = {k: v.clone() for k, v in learn.model.state_dict().items()}
    learn.fit(1, 1e-4)
    learn.load("gan-1c")
    assert all(torch.equal(v, learn.model.state_dict()[k]) for k, v in state.items())
    saved, _ = load_checkpoint(tmp_path / "models" / "gan.pth")
    assert set(saved["callbacks"]) == {"gan_trainer", "recorder"}
    learn.gan_trainer.switch(not saved["callbacks"]["gan_trainer"]["gen_mode"])
    learn.fit(1, 1e-4, resume="gan")  # a finished 1-epoch fit: nothing to train, its state comes back
    assert learn.model.gen_mode == saved["callbacks"]["gan_trainer"]["gen_mode"]
    assert all(torch.equal(v, learn.model.state_dict()[k]) for k, v in saved["model"].items())
    fig = learn.show_results(rows=2)
    assert len(fig.axes) == 6
    loaded = load_learner(learn.export())
    img, pixels, _ = loaded.predict(data_gen.valid_ds.x.items[0])
    assert isinstance(img, Image) and pixels.shape == (3, 32, 32)
    with learn.gan_trainer.generating():
        learn.model.eval()
        x = data_gen.one_item(data_gen.valid_ds.x.items[0])[0]
        assert torch.allclose(loaded.model(x), learn.model(x), atol=1e-5)


def i_files(folder):
    return len(list(folder.iterdir()))
