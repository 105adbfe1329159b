"""Images as targets (lesson 7's super-resolution): the data block chain with tfm_y, one resample for
input and target, normalisation of both, the U-Net trained with a pixel or feature loss, LossMetrics,
predict / pred_batch, drawing, and the data-preparation helpers (resize_to, parallel, crappify)."""
import math

import PIL.Image
import pytest
import torch
import torch.nn.functional as F
from image_pairs import digit_pairs, strided_arch
from torch import nn
from torchvision.models.vgg import cfgs, make_layers

from fastbase.data import imagenet_stats
from fastbase.losses import BCEWithLogitsFlat, CrossEntropyFlat, FlattenedLoss, L1LossFlat, MSELossFlat
from fastbase.parallel import ParallelError, parallel
from fastbase.vision import (
    Brightness,
    Image,
    ImageImageDataBunch,
    ImageImageList,
    LossMetrics,
    NormType,
    children,
    crop_pad,
    cutout,
    get_transforms,
    hook_outputs,
    jitter,
    open_image,
    perspective_warp,
    rand_crop,
    requires_grad,
    resize_to,
    unet_learner,
)
from fastbase.vision.gan import crop_pad as gan_crop_pad


def pair_data(path_hr, path_lr, size=16, tfms=None, bs=4, **kwargs):
    src = ImageImageList.from_folder(path_lr).split_by_rand_pct(0.25, seed=42)
    return (src.label_from_func(lambda x: path_hr / x.name).transform(tfms, size=size, tfm_y=True)
            .databunch(bs=bs, num_workers=0, seed=0, **kwargs).normalize(imagenet_stats, do_y=True))


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    return digit_pairs(tmp_path_factory.mktemp("pairs"), n=16)


def test_input_and_target_take_the_same_geometry_and_the_same_lighting(tmp_path):
    path_hr, _ = digit_pairs(tmp_path / "d", n=8)
    src = ImageImageList.from_folder(path_hr).split_by_rand_pct(0.25, seed=0)
    tfms = get_transforms(max_rotate=30, max_zoom=1.5, max_warp=0.3, max_lighting=0, p_affine=1.0)
    data = src.label_from_func(lambda x: path_hr / x.name).transform(tfms, size=24, tfm_y=True).databunch(
        bs=6, num_workers=0, seed=1)
    assert isinstance(data, ImageImageDataBunch) and data.c == 3
    x, y = data.one_batch()
    assert x.shape == y.shape == (6, 3, 24, 24) and y.dtype == torch.float32
    assert torch.allclose(x, y, atol=1e-5)  # the same picture: one resample moved both alike
    plain = src.label_from_func(lambda x: path_hr / x.name).transform(None, size=24, tfm_y=True).databunch(
        bs=6, num_workers=0, seed=1).one_batch()[0]  # the same items: the same shuffling seed
    assert not torch.allclose(x, plain, atol=1e-2)  # and they did move
    lit = ([Brightness(max_lighting=0.8, p=1.0)], [])  # no crop window: the centre, as `plain`
    data = src.label_from_func(lambda x: path_hr / x.name).transform(lit, size=24, tfm_y=True).databunch(
        bs=6, num_workers=0, seed=1)
    x, y = data.one_batch()
    assert torch.allclose(x, y, atol=1e-5) and not torch.allclose(x, plain, atol=1e-2)  # lit alike, as fastai


def test_crop_window_grid_moves_and_pixel_transforms_in_one_pass_with_the_target(tmp_path):
    """main's BatchAugment placement (a random `Crop`), a grid move (jitter) and a warp reach input and
    target alike; cutout (a pixel transform) blacks out the input only; the GAN's crop_pad is fastai's."""
    path_hr, _ = digit_pairs(tmp_path / "d", n=8)
    src = ImageImageList.from_folder(path_hr).split_by_rand_pct(0.25, seed=0)
    tfms = ([rand_crop(), jitter(magnitude=0.05), perspective_warp(magnitude=(-0.2, 0.2)), cutout(length=6)], [])
    data = src.label_from_func(lambda x: path_hr / x.name).transform(tfms, size=16, tfm_y=True).databunch(
        bs=6, num_workers=0, seed=1)
    x, y = data.one_batch()
    assert x.shape == y.shape == (6, 3, 16, 16)
    hole = (x == 0).all(1, keepdim=True).expand_as(x)  # cutout's black squares, on the input only
    assert hole.any() and not (y == 0).all(1)[hole[:, 0]].all()
    assert torch.allclose(x[~hole], y[~hole], atol=1e-5)  # elsewhere the very same resampled pixels
    plain = src.label_from_func(lambda x: path_hr / x.name).transform(None, size=16, tfm_y=True).databunch(
        bs=6, num_workers=0, seed=1).one_batch()[1]
    assert not torch.allclose(y, plain, atol=1e-2)  # and the targets did move
    assert gan_crop_pad is crop_pad


def test_normalize_do_y_and_denormalised_show(pairs):
    path_hr, path_lr = pairs
    data = pair_data(path_hr, path_lr)
    _, y = data.one_batch(denorm=False)
    assert y.mean() < 0  # the digits' dark background, normalised
    assert 0 <= float(data.denorm_y(y).min()) and float(data.denorm_y(y).max()) <= 1 + 1e-5
    fig = data.show_batch(rows=2, imgsize=2)
    assert len(fig.axes) == 4 and fig.get_size_inches().tolist() == [4, 4]
    with pytest.raises(Exception, match="tfm_y=True"):
        ImageImageList.from_folder(path_lr).split_by_rand_pct(0.25).label_from_func(
            lambda x: path_hr / x.name).transform(None, size=16).databunch(num_workers=0)
    with pytest.raises(Exception, match="target image"):
        ImageImageList.from_folder(path_lr).split_by_rand_pct(0.25).label_from_func(
            lambda x: path_hr / ("missing_" + x.name)).transform(None, size=16, tfm_y=True).databunch(num_workers=0)


def gram_matrix(x):
    n, c, h, w = x.size()
    x = x.view(n, c, -1)
    return (x @ x.transpose(1, 2)) / (c * h * w)


base_loss = F.l1_loss


class FeatureLoss(nn.Module):
    """The course's feature loss, as lesson7-superres writes it."""

    def __init__(self, m_feat, layer_ids, layer_wgts):
        super().__init__()
        self.m_feat = m_feat
        self.loss_features = [self.m_feat[i] for i in layer_ids]
        self.hooks = hook_outputs(self.loss_features, detach=False)
        self.wgts = layer_wgts
        self.metric_names = ["pixel"] + [f"feat_{i}" for i in range(len(layer_ids))] + [
            f"gram_{i}" for i in range(len(layer_ids))]

    def make_features(self, x, clone=False):
        self.m_feat(x)
        return [(o.clone() if clone else o) for o in self.hooks.stored]

    def forward(self, input, target):
        out_feat = self.make_features(target, clone=True)
        in_feat = self.make_features(input)
        self.feat_losses = [base_loss(input, target)]
        self.feat_losses += [base_loss(f_in, f_out) * w for f_in, f_out, w in zip(in_feat, out_feat, self.wgts)]
        self.feat_losses += [base_loss(gram_matrix(f_in), gram_matrix(f_out)) * w ** 2 * 5e3
                             for f_in, f_out, w in zip(in_feat, out_feat, self.wgts)]
        self.metrics = dict(zip(self.metric_names, self.feat_losses))
        return sum(self.feat_losses)

    def __del__(self):
        self.hooks.remove()


def test_unet_with_feature_loss_and_loss_metrics_then_predict_and_bigger_data(pairs, tmp_path):
    path_hr, path_lr = pairs
    data = pair_data(path_hr, path_lr, size=32, tfms=get_transforms(max_zoom=2.0))
    data.c = 3
    vgg_m = make_layers(cfgs["D"], batch_norm=True).eval()  # vgg16_bn's `features`, random weights
    requires_grad(vgg_m, False)
    assert requires_grad(vgg_m) is False
    blocks = [i - 1 for i, o in enumerate(children(vgg_m)) if isinstance(o, nn.MaxPool2d)]
    assert blocks == [5, 12, 22, 32, 42]
    feat_loss = FeatureLoss(vgg_m, blocks[2:4], [5, 15])
    learn = unet_learner(data, strided_arch, pretrained=False, loss_func=feat_loss, callback_fns=LossMetrics, blur=True,
                         norm_type=NormType.Weight, self_attention=True, y_range=(-3., 3.), wd=1e-3, path=tmp_path)
    learn.fit_one_cycle(1, 1e-3)
    names = learn.recorder.metric_names
    assert names == ["pixel", "feat_0", "feat_1", "gram_0", "gram_1"]
    row = learn.recorder.values[-1]
    assert len(row) == 2 + 5 and not any(math.isnan(v) for v in row[1:])
    assert abs(sum(row[2:]) - row[1]) < 1e-3 * max(1.0, row[1])  # the parts add up to the validation loss
    fig = learn.show_results(rows=2, imgsize=2)
    assert len(fig.axes) == 6
    img, pixels, raw = learn.predict(open_lr(path_lr))
    assert isinstance(img, Image) and pixels.shape == raw.shape == (3, 32, 32)
    assert 0 <= float(pixels.min()) and float(pixels.max()) <= 1
    preds = learn.pred_batch(batch=next(iter(data.fix_dl)), reconstruct=True)
    assert len(preds) == 4 and all(isinstance(p, Image) for p in preds)
    preds[0].save(tmp_path / "pred.png")
    assert PIL.Image.open(tmp_path / "pred.png").size == (32, 32)
    learn.data = pair_data(path_hr, path_lr, size=48, tfms=get_transforms(max_zoom=2.0))
    learn.fit(1, 1e-4)
    assert learn.pred_batch().shape == (4, 3, 48, 48)


def open_lr(path_lr):
    return open_image(min(path_lr.iterdir()))


def test_flattened_losses_match_torch():
    a, b = torch.randn(4, 3, 5, 5), torch.randn(4, 3, 5, 5)
    assert torch.allclose(MSELossFlat()(a, b), F.mse_loss(a, b))
    assert torch.allclose(L1LossFlat()(a, b), F.l1_loss(a, b))
    t = (b > 0).long()
    assert torch.allclose(BCEWithLogitsFlat()(a, t), F.binary_cross_entropy_with_logits(a, t.float()))
    codes = torch.randint(0, 3, (4, 5, 5))
    assert torch.allclose(FlattenedLoss(nn.CrossEntropyLoss, axis=1)(a, codes), CrossEntropyFlat(axis=1)(a, codes))
    loss = MSELossFlat()
    per_item = FlattenedLoss(nn.MSELoss, is_2d=False, reduction="none")(a, b)
    assert per_item.shape == (4,) and loss.reduction == "mean"
    assert torch.allclose(per_item, ((a - b) ** 2).mean((1, 2, 3)))
    with pytest.raises(Exception, match="same number"):
        MSELossFlat()(a, b[:2])


class crappifier:
    """What the course's crappify.py does to each photo (smaller, a quality number drawn on it, a JPEG
    of that quality), in the namespace's names."""

    def __init__(self, path_lr, path_hr):
        self.path_lr, self.path_hr = path_lr, path_hr

    def __call__(self, fn, i):
        from PIL import ImageDraw

        from fastbase.vision import PIL, random

        dest = self.path_lr / fn.relative_to(self.path_hr)
        dest.parent.mkdir(parents=True, exist_ok=True)
        img = PIL.Image.open(fn)
        img = img.resize(resize_to(img, 12, use_min=True), resample=PIL.Image.BILINEAR).convert("RGB")
        q = random.randint(10, 70)
        ImageDraw.Draw(img).text((random.randint(0, img.size[0] // 2), random.randint(0, img.size[1] // 2)), str(q),
                                 fill=(255, 255, 255))
        img.save(dest, quality=q)


def test_crappify_with_parallel_and_resize_to(pairs, tmp_path):
    path_hr, _ = pairs
    assert resize_to(PIL.Image.new("RGB", (40, 20)), 10) == (10, 5)
    assert resize_to(PIL.Image.new("RGB", (40, 20)), 10, use_min=True) == (20, 10)
    files = sorted(path_hr.iterdir())[:4]
    parallel(crappifier(tmp_path / "lr", path_hr), files, max_workers=2)
    assert sorted(p.name for p in (tmp_path / "lr").iterdir()) == [f.name for f in files]
    assert PIL.Image.open(tmp_path / "lr" / files[0].name).size == (12, 12)
    assert parallel(lambda o, i: o * i, [3, 4, 5], max_workers=0) == [0, 4, 10]
    with pytest.raises(ParallelError, match=r"ValueError.*item #1, 'b'"):
        parallel(as_int, ["1", "b", "3"], max_workers=2)
    with pytest.raises(ParallelError, match="top level"):
        parallel(lambda o, i: o, [1, 2], max_workers=2)


def as_int(o, i):
    return int(o)


def test_weight_norm_unet_trains_past_validation_in_channels_last(pairs):
    """A channels-last U-Net with weight-normalised convolutions keeps training after a validation
    (which runs in inference mode) within one fit: its parameters stay normal tensors."""
    path_hr, path_lr = pairs
    learn = unet_learner(pair_data(path_hr, path_lr), strided_arch, pretrained=False, norm_type=NormType.Weight,
                         channels_last=True, loss_func=MSELossFlat())
    learn.fit(2, 1e-3)
    assert len(learn.recorder.values) == 2 and not any(p.is_inference() for p in learn.model.parameters())


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")
@pytest.mark.parametrize("do_x", [True, False], ids=["do_x", "no_x"])
def test_exported_unet_takes_raw_images_and_gives_denormalised_images(pairs, tmp_path, do_x):
    """normalize(stats, do_x=, do_y=True): the TorchScript export normalises its input only when the
    data did, and gives images in the targets' scale, as `predict` does."""
    from fastbase.deploy import read_metadata

    path_hr, path_lr = pairs
    src = ImageImageList.from_folder(path_lr).split_by_rand_pct(0.25, seed=42)
    data = (src.label_from_func(lambda x: path_hr / x.name).transform(None, size=16, tfm_y=True)
            .databunch(bs=4, num_workers=0).normalize(imagenet_stats, do_x=do_x, do_y=True))
    learn = unet_learner(data, strided_arch, pretrained=False, y_range=(-3., 3.), loss_func=MSELossFlat(), path=tmp_path)
    file = learn.export_torchscript(tmp_path / "sr.pt")
    module = torch.jit.load(str(file))
    img = open_lr(path_lr)
    _, pixels, _ = learn.predict(img)
    out = module(img.data[None])[0]
    assert torch.allclose(out, pixels, atol=1e-4)
    meta = read_metadata(file)
    assert (meta["normalization"] is not None) == do_x
    assert meta["output"]["denormalized"]["std"] == pytest.approx(imagenet_stats[1])


def test_show_results_and_pred_batch_name_an_empty_validation_set(pairs):
    """With no validation set (split_none), reading a batch of it says which set is empty instead of
    a StopIteration from inside the loader; the training set still works."""
    from fastbase.data import DatasetType, EmptyDatasetError

    path_hr, path_lr = pairs
    data = (ImageImageList.from_folder(path_lr).split_none().label_from_func(lambda x: path_hr / x.name)
            .transform(None, size=16, tfm_y=True).databunch(bs=4, num_workers=0)
            .normalize(imagenet_stats, do_y=True))
    learn = unet_learner(data, strided_arch, pretrained=False, loss_func=MSELossFlat())
    for call in (learn.show_results, learn.pred_batch, data.one_batch):
        with pytest.raises(EmptyDatasetError, match="valid set of this DataBunch is empty"):
            call(ds_type=DatasetType.Valid)
    assert learn.pred_batch(ds_type=DatasetType.Train).shape == (4, 3, 16, 16)
    data.train_dl.dl = torch.utils.data.DataLoader(data.train_ds, batch_size=64, drop_last=True)
    with pytest.raises(EmptyDatasetError, match="16 item.*fewer than bs=64"):
        data.one_batch()
