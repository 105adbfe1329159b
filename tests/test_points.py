"""The points task: lesson3-head-pose's cells on data of BIWI's layout (tiny images, a tiny random body,
one epoch), points that follow their images, bad labels named with their files, predictions in the
pixels of the image asked about, and export/load_learner."""
import os
from pathlib import Path

import matplotlib
import numpy as np
import pytest
import torch
from conftest import SHARED
from points_fixtures import HW, biwi_folder
from tiny_vision import tiny_arch

from fastbase.data import LabelError
from fastbase.vision import (
    FlowField,
    ImagePoints,
    MSELossFlat,
    PointsItemList,
    cnn_learner,
    get_transforms,
    imagenet_stats,
    load_learner,
    open_image,
    plot_multi,
    tensor,
)

matplotlib.use("Agg")


@pytest.fixture(scope="module")
def biwi(tmp_path_factory):
    return biwi_folder(tmp_path_factory.mktemp("biwi_head_pose"))


def course_get_ctr(path):
    """The lesson's label function, as the course writes it: the head centre as (y, x) pixels."""
    cal = np.genfromtxt(path / "01" / "rgb.cal", skip_footer=6)

    def img2txt_name(f):
        return path / f"{str(f)[:-7]}pose.txt"

    def convert_biwi(coords):
        c1 = coords[0] * cal[0][0] / coords[2] + cal[0][2]
        c2 = coords[1] * cal[1][1] / coords[2] + cal[1][2]
        return tensor([c2, c1])

    def get_ctr(f):
        ctr = np.genfromtxt(img2txt_name(f), skip_header=3)
        return convert_biwi(ctr)
    return get_ctr


def head_pose_data(path, tfms=None, size=(12, 16), **kwargs):
    return (PointsItemList.from_folder(path)
            .split_by_valid_func(lambda o: o.parent.name == "13")
            .label_from_func(course_get_ctr(path), **kwargs)
            .transform(tfms if tfms is not None else get_transforms(), tfm_y=True, size=size)
            .databunch(bs=4, num_workers=0, seed=0).normalize(imagenet_stats))


def test_the_lessons_cells_run_on_biwi_layout(biwi, tmp_path):
    path, fname = biwi, "09/frame_00667_rgb.jpg"
    get_ctr = course_get_ctr(path)

    def get_ip(img, pts):
        return ImagePoints(FlowField(img.size, pts), scale=True)
    img = open_image(path / fname)
    ctr = get_ctr(fname)
    ax = img.show(y=get_ip(img, ctr), figsize=(6, 6))
    drawn = ax.collections[0].get_offsets()[0]  # (x, y) as matplotlib places pixel centres
    assert np.allclose(drawn, [float(ctr[1]) - 0.5, float(ctr[0]) - 0.5], atol=1e-4)

    data = head_pose_data(path)
    assert data.c == 2 and len(data.valid_ds) == 6 and len(data.train_ds) == 12
    data.show_batch(3, figsize=(9, 6))
    xb, yb = data.one_batch()
    assert xb.shape == (4, 3, 12, 16) and yb.shape == (4, 1, 2) and yb.dtype == torch.float32
    torch.manual_seed(0)
    learn = cnn_learner(data, tiny_arch, pretrained=False, path=tmp_path, silent=True)
    assert isinstance(learn.loss_func, MSELossFlat) and learn.model(xb).shape == (4, 2)
    learn.lr_find(num_it=6)
    learn.fit_one_cycle(1, slice(2e-2))
    learn.save("stage-1")
    learn.load("stage-1")
    learn.show_results()

    tfms = get_transforms(max_rotate=20, max_zoom=1.5, max_lighting=0.5, max_warp=0.4, p_affine=1., p_lighting=1.)
    data = head_pose_data(path, tfms)

    def _plot(i, j, ax):
        x, y = data.train_ds[0]
        x.show(ax, y=y)
        assert isinstance(y, ImagePoints) and y.size == (12, 16)
    plot_multi(_plot, 3, 3, figsize=(8, 6))


def test_validation_points_are_where_the_centre_crop_puts_them(biwi):
    data = head_pose_data(biwi, size=(12, 12))  # a square crop of 24x32 images: 4 columns cut each side
    _, y = data.valid_ds[0]
    fn = data.valid_ds.items[0]
    row, col = course_get_ctr(biwi)(fn).tolist()
    assert torch.allclose(y.pixels[0], torch.tensor([row / 2, (col - 4) / 2]), atol=1e-4)


def test_predict_gives_points_in_the_pixels_of_the_image_asked_about(biwi, tmp_path):
    data = head_pose_data(biwi, tfms=([], []), size=(12, 16))
    learn = cnn_learner(data, tiny_arch, pretrained=False, path=tmp_path, silent=True)
    img = open_image(data.valid_ds.items[0])
    pts, scaled, raw = learn.predict(img)
    assert isinstance(pts, ImagePoints) and pts.size == HW and raw.shape == (2,)
    # the input was squished by 2 on both axes (24x32 -> 12x16): pixels double
    assert torch.allclose(pts.pixels, (scaled.reshape(-1, 2) + 1) * torch.tensor([6.0, 8.0]) * 2, atol=1e-4)
    learn.export()
    inference = load_learner(tmp_path)
    again, _, raw2 = inference.predict(data.valid_ds.items[0])
    assert torch.allclose(again.pixels, pts.pixels, atol=1e-3) and torch.allclose(raw2, raw, atol=1e-4)


def test_bad_points_labels_are_named_with_their_files(biwi):
    items = PointsItemList.from_folder(biwi).split_by_valid_func(lambda o: o.parent.name == "13")
    with pytest.raises(LabelError, match=r"frame_00667_rgb\.jpg.*shape \(3,\)"):
        items.label_from_func(lambda f: tensor([1.0, 2.0, 3.0]))
    with pytest.raises(LabelError, match=r"outside the image.*frame_\d+_rgb\.jpg.*\(y, x\) = \(5\.0, 40\.0\)"):
        items.label_from_func(lambda f: tensor([5.0, 40.0]))  # x past the 32-pixel width
    kept = items.label_from_func(lambda f: tensor([5.0, 40.0]), outside="keep")
    assert kept.train.y[0].outside.tolist() == [True]
    with pytest.raises(LabelError, match=r"same number of points.*frame_\d+_rgb\.jpg \(2\)"):
        items.label_from_func(lambda f: tensor([[1.0, 2.0]] * (2 if "00668" in str(f) else 1)))


def test_training_batches_put_the_points_on_the_moved_discs(biwi):
    data = (PointsItemList.from_folder(biwi).split_by_valid_func(lambda o: o.parent.name == "13")
            .label_from_func(course_get_ctr(biwi))
            .transform(get_transforms(max_rotate=20, max_zoom=1.3, max_warp=0.2, p_affine=1.0, max_lighting=0),
                       tfm_y=True, size=(24, 32), padding_mode="zeros")
            .databunch(bs=12, num_workers=0, seed=1))
    x, y = data.one_batch()
    ys, xs = torch.meshgrid(torch.arange(24) + 0.5, torch.arange(32) + 0.5, indexing="ij")
    checked = 0
    for img, pts in zip(x, y):
        pts = ImagePoints(FlowField((24, 32), pts), scale=False)
        if pts.outside.any():
            continue
        checked += 1
        v = img.mean(0)
        v = torch.where(v > v.max() * 0.6, v, torch.zeros(()))
        centroid = torch.stack([(v * ys).sum() / v.sum(), (v * xs).sum() / v.sum()])
        assert torch.allclose(centroid, pts.pixels[0], atol=1.0), (centroid, pts.pixels[0])
    assert checked >= 8


@pytest.mark.skipif(not os.path.isdir(os.path.join(SHARED, "data", "faces68_tiny")),
                    reason="../shared/data/faces68_tiny is absent (a clone without the shared data)")
def test_68_landmarks_of_faces68_tiny(tmp_path):
    import pandas as pd
    path = Path(SHARED) / "data" / "faces68_tiny"
    df = pd.read_csv(path / "points.csv")
    xy = {r.fname: np.array(r.points.split(), dtype=np.float32).reshape(-1, 2) for r in df.itertuples()}
    valid = set(df.fname[df.is_valid])
    items = PointsItemList.from_folder(path / "images").split_by_valid_func(lambda o: o.name in valid)
    with pytest.raises(LabelError, match="outside the image"):  # 4 faces have landmarks just off the frame
        items.label_from_func(lambda o: tensor(xy[o.name][:, ::-1].copy()))
    labelled = items.label_from_func(lambda o: tensor(xy[o.name][:, ::-1].copy()), outside="keep")
    with pytest.warns(UserWarning, match="the 68 points are ordered"):  # no flip_idx: flips are left out
        data = labelled.transform(get_transforms(), tfm_y=True, size=32).databunch(bs=8, num_workers=0, seed=0)
    assert data.c == 136 and len(data.valid_ds) == 84
    x, y = data.one_batch()
    assert x.shape == (8, 3, 32, 32) and y.shape == (8, 68, 2)
    learn = cnn_learner(data, tiny_arch, pretrained=False, path=tmp_path, silent=True)
    assert learn.model(x).shape == (8, 136)


def test_served_points_are_in_the_pixels_of_the_upload(biwi, tmp_path):
    from fastbase.serve import ServedModel
    data = head_pose_data(biwi, tfms=([], []), size=(12, 16))
    learn = cnn_learner(data, tiny_arch, pretrained=False, path=tmp_path, silent=True)
    learn.export()
    served = ServedModel(tmp_path / "export.pkl")
    fn = data.valid_ds.items[1]
    (answer,) = served.predict([served.decode(fn.read_bytes(), fn.name)])
    pts, _, _ = learn.predict(fn)
    assert answer["size"] == list(HW) and np.allclose(answer["points"], pts.pixels.tolist(), atol=0.01)
