"""Segmentation data: masks open as ImageSegments, the data block chain pairs images with masks, one
batch resample moves both (nearest for the mask, lighting on the image only), bad masks are named,
and a U-Net learner predicts, shows and exports ImageSegments. On digit masks (`seg_fixtures`)."""
import numpy as np
import PIL.Image
import pytest
import torch
from conftest import shared_path
from seg_fixtures import CODES, digit_masks, get_y_fn

from fastbase.core import Path
from fastbase.data import DataError, LabelError, imagenet_stats
from fastbase.learner import load_learner
from fastbase.losses import CrossEntropyFlat
from fastbase.vision import models
from fastbase.vision.image import Image, get_image_files, open_image
from fastbase.vision.segmentation import (
    ImageSegment,
    MeanIoU,
    SegmentationItemList,
    acc_segmentation,
    dice,
    open_mask,
    unet_learner,
)
from fastbase.vision.transforms import (
    Brightness,
    Contrast,
    Flip,
    Rotate,
    Zoom,
    get_transforms,
)


@pytest.fixture(scope="module")
def masks_dir(tmp_path_factory):
    return digit_masks(tmp_path_factory.mktemp("digit_masks"))


def chain(root, tfms=None, size=24, bs=8, **kwargs):
    src = (SegmentationItemList.from_folder(root / "images").split_by_fname_file("../valid.txt")
           .label_from_func(get_y_fn(root), classes=CODES))
    return src.transform(tfms, size=size, tfm_y=True).databunch(bs=bs, num_workers=0, seed=0, **kwargs)


# --- masks as items ------------------------------------------------------------------------------
def test_open_mask_gives_long_codes_one_by_h_by_w(masks_dir):
    fn = min((masks_dir / "labels").iterdir())
    mask = open_mask(fn)
    assert isinstance(mask, ImageSegment) and mask.data.dtype == torch.int64 and mask.shape == (1, 24, 24)
    assert set(mask.data.unique().tolist()) == {0, 1}
    assert torch.equal(mask.data[0], torch.from_numpy(np.array(PIL.Image.open(fn))).long())


def test_open_mask_div_reads_0_255_masks(tmp_path):
    PIL.Image.fromarray(np.array([[0, 255], [255, 0]], dtype=np.uint8)).save(tmp_path / "m.png")
    assert open_mask(tmp_path / "m.png", div=True).data[0].tolist() == [[0, 1], [1, 0]]


def test_image_segment_shows_alone_and_over_an_image(masks_dir):
    name = min((masks_dir / "images").iterdir())
    img, mask = open_image(name), open_mask(get_y_fn(masks_dir)(name))
    ax = mask.show()
    assert len(ax.images) == 1 and ax.images[0].get_alpha() == 1.0
    ax = img.show(y=mask)
    assert len(ax.images) == 2 and ax.images[1].get_alpha() == 0.5  # the overlay, over the photo
    ax = mask.show(ax=img.show(), alpha=0.3, cmap="viridis")
    assert ax.images[1].get_alpha() == 0.3 and ax.images[1].get_cmap().name == "viridis"


# --- the chain -----------------------------------------------------------------------------------
def test_chain_gives_image_batches_and_long_mask_batches(masks_dir):
    data = chain(masks_dir, get_transforms()).normalize(imagenet_stats)
    assert data.classes == CODES and data.c == 2 and len(data.valid_ds) == 12
    xb, yb = data.one_batch()
    assert xb.shape == (8, 3, 24, 24) and xb.dtype == torch.float32
    assert yb.shape == (8, 1, 24, 24) and yb.dtype == torch.int64 and set(yb.unique().tolist()) <= {0, 1}
    _vx, vy = data.one_batch(ds_type=1)
    assert vy.shape == (8, 1, 24, 24) and vy.dtype == torch.int64
    x, y = data.valid_ds[0]
    assert isinstance(x, Image) and isinstance(y, ImageSegment) and y.shape == (1, 24, 24)
    assert data.train_ds.y.classes == CODES and isinstance(data.train_ds.x[0], Image)


def test_valid_masks_are_the_files_resized_with_their_images(masks_dir):
    data = chain(masks_dir, size=12)
    _, yb = data.one_batch(ds_type=1)
    names = data.valid_ds.items[:len(yb)]
    expected = [open_mask(get_y_fn(masks_dir)(n)).data[:, 1::2, 1::2] for n in names]  # nearest-exact: pixel centres
    agree = (yb == torch.stack(expected)).float().mean().item()
    assert agree == 1.0


@pytest.mark.parametrize("tfms", [[Flip(p=1.0)], [Rotate(max_deg=30, p=1.0), Zoom(max_zoom=1.5, p=1.0)]],
                         ids=["flip", "rotate_zoom"])
def test_augmentation_moves_mask_and_image_together(masks_dir, tfms):
    data = chain(masks_dir, (tfms, []), bs=16)
    xb, yb = data.one_batch()
    ink = (xb[:, :1] > 0.5).long()  # the masks are the scans' ink: they must still cover the same pixels
    assert (ink == yb).float().mean().item() > 0.93
    plain = chain(masks_dir, None, bs=16)
    assert not torch.equal(yb, plain.one_batch()[1])  # the masks did move


def test_lighting_changes_the_image_and_leaves_the_mask(masks_dir):
    lit = chain(masks_dir, ([Brightness(0.8, p=1.0), Contrast(0.8, p=1.0)], []), bs=48 - 12)
    plain = chain(masks_dir, None, bs=48 - 12)
    (x1, y1), (x0, y0) = lit.one_batch(), plain.one_batch()  # the same seed: the same order
    assert torch.equal(y1, y0) and not torch.allclose(x1, x0, atol=0.05)


def test_train_ds_item_is_augmented_afresh_each_time(masks_dir):
    data = chain(masks_dir, ([Rotate(max_deg=40, p=1.0)], []))
    (x1, y1), (x2, y2) = data.train_ds[0], data.train_ds[0]
    assert x1.shape == (3, 24, 24) and y1.shape == (1, 24, 24)
    assert not torch.equal(x1.data, x2.data) and not torch.equal(y1.data, y2.data)
    v1, v2 = data.valid_ds[0], data.valid_ds[0]
    assert torch.equal(v1[0].data, v2[0].data) and torch.equal(v1[1].data, v2[1].data)


def test_image_segment_apply_tfms_is_nearest(masks_dir):
    mask = open_mask(min((masks_dir / "labels").iterdir()))
    moved = mask.apply_tfms([Rotate(max_deg=45, p=1.0)], size=16)
    assert moved.shape == (1, 16, 16) and set(moved.data.unique().tolist()) <= {0, 1}
    flipped = mask.apply_tfms([Flip(p=1.0)])
    assert torch.equal(flipped.data, mask.data.flip(-1))


# --- bad masks are named -------------------------------------------------------------------------
def test_missing_mask_file_is_named(masks_dir):
    src = SegmentationItemList.from_folder(masks_dir / "images").split_by_rand_pct(0.25, seed=0)
    lls = src.label_from_func(lambda x: masks_dir / "labels" / f"{x.stem}.png", classes=CODES)
    with pytest.raises(LabelError, match=r"mask file\(s\) do not exist: .*labels/\w+\.png \(for \w+\.png\)"):
        lls.transform(None, size=24, tfm_y=True).databunch(bs=8, num_workers=0)


def test_mask_of_another_size_is_named(tmp_path):
    root = digit_masks(tmp_path, n=16, n_valid=4)
    bad = min((root / "labels").iterdir())
    PIL.Image.fromarray(np.zeros((10, 12), dtype=np.uint8)).save(bad)
    data = chain(root, bs=16)
    with pytest.raises(DataError, match=rf"{bad.name} is 12x10 pixels but its image .* is 24x24"):
        data.one_batch()


def test_mask_codes_outside_the_classes_are_named(tmp_path):
    root = digit_masks(tmp_path, n=16, n_valid=4)
    bad = sorted((root / "labels").iterdir())[1]
    PIL.Image.fromarray(np.full((24, 24), 7, dtype=np.uint8)).save(bad)
    with pytest.raises(DataError, match=rf"{bad.name} holds code\(s\) 7 but there are 2 classes"):
        chain(root, bs=16).one_batch()


def test_segmentation_needs_codes_and_tfm_y(masks_dir):
    src = SegmentationItemList.from_folder(masks_dir / "images").split_by_rand_pct(0.25, seed=0)
    with pytest.raises(LabelError, match="classes=codes"):
        src.label_from_func(get_y_fn(masks_dir))
    lls = src.label_from_func(get_y_fn(masks_dir), classes=CODES)
    with pytest.raises(DataError, match="tfm_y=True"):
        lls.transform(get_transforms(), size=24).databunch(bs=8, num_workers=0)


# --- losses, metrics, learner --------------------------------------------------------------------
def test_loss_and_metrics_take_the_batch_target(masks_dir):
    data = chain(masks_dir, get_transforms())
    _xb, yb = data.one_batch()
    scores = torch.nn.functional.one_hot(yb[:, 0], 2).permute(0, 3, 1, 2).float() * 10
    assert isinstance(data.loss_func, CrossEntropyFlat) and data.loss_func(scores, yb).item() < 1e-3
    assert acc_segmentation(scores, yb).item() == 1.0 and dice(scores, yb).item() == pytest.approx(1.0)
    acc_camvid = (scores.argmax(dim=1) == yb.squeeze(1)).float().mean()  # the course's metric
    assert acc_camvid.item() == 1.0
    iou = MeanIoU()
    iou.accumulate(scores, yb)
    assert iou.value.item() == pytest.approx(1.0)


def test_unet_learner_trains_predicts_shows_and_exports(masks_dir, tmp_path):
    data = chain(masks_dir, get_transforms(), bs=8).normalize(imagenet_stats)
    torch.manual_seed(0)
    learn = unet_learner(data, models.resnet18, pretrained=False, metrics=[acc_segmentation], path=tmp_path)
    learn.fit_one_cycle(1, 1e-3)
    img = data.valid_ds[0][0]
    seg, class_map, probs = learn.predict(img)
    assert isinstance(seg, ImageSegment) and seg.shape == (1, 24, 24) and class_map.shape == (1, 24, 24)
    assert probs.shape == (2, 24, 24) and torch.equal(class_map, probs.argmax(0, keepdim=True))
    assert torch.equal(seg.data, class_map)
    fig = learn.show_results(rows=2, return_fig=True)
    assert len(fig.axes) == 4 and [ax.get_title() for ax in fig.axes[:2]] == ["Ground truth", "Prediction"]
    assert len(fig.axes[1].images) == 2  # the image, and the predicted mask over it
    fig = data.show_batch(rows=2, return_fig=True)
    assert all(len(ax.images) == 2 for ax in fig.axes)
    loaded = load_learner(learn.export())
    seg2, map2, probs2 = loaded.predict(get_y_fn(masks_dir)(Path("x")).parent.parent / "images" /
                                        data.valid_ds.items[0].name)
    assert isinstance(seg2, ImageSegment) and torch.equal(map2, class_map)
    assert torch.allclose(probs2, probs, atol=1e-4)


# --- lesson 3's CamVid cells on camvid_tiny ----------------------------------------------------------
@pytest.mark.slow
@pytest.mark.timeout(900)
def test_camvid_cells_on_camvid_tiny():
    """Lesson 3's data cells at 64x48 px and one frozen epoch (100 photos of 128x96); the unfrozen
    stage runs in nbs/05_segmentation.ipynb on the same data."""
    path = Path(shared_path("data", "camvid_tiny"))
    path_lbl, path_img = path / "labels", path / "images"
    fnames = get_image_files(path_img)
    get_y_fn = lambda x: path_lbl / f"{x.stem}_P{x.suffix}"
    mask = open_mask(get_y_fn(fnames[0]))
    src_size = np.array(mask.shape[1:])
    assert tuple(src_size) == (96, 128)
    codes = np.loadtxt(path / "codes.txt", dtype=str)
    np.random.seed(2)
    src = (SegmentationItemList.from_folder(path_img).split_by_rand_pct(0.2)
           .label_from_func(get_y_fn, classes=codes))
    data = (src.transform(get_transforms(), size=src_size // 2, tfm_y=True)
            .databunch(bs=8, num_workers=0).normalize(imagenet_stats))
    xb, yb = data.one_batch()
    assert xb.shape == (8, 3, 48, 64) and yb.shape == (8, 1, 48, 64) and int(yb.max()) < len(codes)
    assert data.show_batch(2, figsize=(10, 7), return_fig=True) is not None
    void_code = list(codes).index("Void")

    def acc_camvid(input, target):
        target = target.squeeze(1)
        mask = target != void_code
        return (input.argmax(dim=1)[mask] == target[mask]).float().mean()

    learn = unet_learner(data, models.resnet18, pretrained=False, metrics=acc_camvid, wd=1e-2)
    learn.fit_one_cycle(1, slice(3e-3), pct_start=0.9)
    assert learn.show_results(rows=2, return_fig=True) is not None
    assert 0 <= learn.recorder.metrics[-1][0] <= 1
