"""fastai v1's transform functions: each moves a drawn mark where it should, and a mask (tfm_y) with it."""
import numpy as np
import pytest
import torch
from tiny_vision import noise_folder

from fastbase.data import DataError, DatasetType
from fastbase.vision import (
    ImageDataBunch,
    brightness,
    contrast,
    crop,
    crop_pad,
    cutout,
    dihedral,
    flip_lr,
    get_transforms,
    jitter,
    pad,
    perspective_warp,
    rand_crop,
    rand_resize_crop,
    rand_zoom,
    rgb_randomize,
    rotate,
    skew,
    squish,
    symmetric_warp,
    tilt,
    zoom,
    zoom_crop,
)
from fastbase.vision.transforms import BatchAugment
from fastbase.vision.warps import ZoomSquish

HW = 32


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def pixel(u, size=HW):
    """[-1, 1] image coordinate -> pixel index (align_corners=False centres)."""
    return (u + 1) * size / 2 - 0.5


def marked(points, hw=(HW, HW), half=2):
    """A dark uint8 image (1, 3, H, W) with bright squares at `points` ((x, y) in [-1, 1]), and the
    matching mask (1, 1, H, W) with class 1 there."""
    x = torch.full((1, 3, *hw), 20, dtype=torch.uint8)
    mask = torch.zeros(1, 1, *hw, dtype=torch.uint8)
    for u, v in points:
        col, row = round(pixel(u, hw[1])), round(pixel(v, hw[0]))
        x[..., row - half:row + half, col - half:col + half] = 255
        mask[..., row - half:row + half, col - half:col + half] = 1
    return x, mask


def apply(tfms, x, mask, size=None, seed=0):
    aug = BatchAugment(tfms if isinstance(tfms, list) else [tfms], size=size, generator=gen(seed), tfm_y=True)
    out, out_mask = aug((x, mask, torch.tensor([x.shape[-2:]])))
    return out[0], out_mask[0, 0]


def centre(where):
    """The (x, y) centroid in [-1, 1] coordinates of a bool map."""
    h, w = where.shape
    rows, cols = torch.nonzero(where, as_tuple=True)
    assert len(rows), "the mark left the image"
    return ((cols.float().mean() + 0.5) * 2 / w - 1).item(), ((rows.float().mean() + 0.5) * 2 / h - 1).item()


def mark_at(tfms, start, size=None, tol=0.07):
    """Where the mark drawn at `start` lands, checked against the mask's mark."""
    out, mask = apply(tfms, *marked([start]), size=size)
    seen, labelled = centre(out[0] > 0.5), centre(mask == 1)
    assert np.allclose(seen, labelled, atol=tol), (seen, labelled)  # the mask followed the image
    return seen


def forward_homography(moved):
    """Independent check: the 3x3 map taking the image's corners to `moved` (4 (x, y) points)."""
    corners = [(-1, -1), (-1, 1), (1, -1), (1, 1)]
    a, b = [], []
    for (x, y), (u, v) in zip(corners, moved):
        a += [[x, y, 1, 0, 0, 0, -u * x, -u * y], [0, 0, 0, x, y, 1, -v * x, -v * y]]
        b += [u, v]
    return np.append(np.linalg.solve(np.array(a, float), np.array(b, float)), 1).reshape(3, 3)


def through(h, point):
    p = h @ np.array([*point, 1.0])
    return p[:2] / p[2]


@pytest.mark.parametrize("tfm,start,end", [
    (rotate(degrees=90), (0.5, 0.0), (0.0, -0.5)),  # counter-clockwise: right goes to the top
    (rotate(degrees=-90), (0.5, 0.0), (0.0, 0.5)),
    (flip_lr(), (0.5, -0.5), (-0.5, -0.5)),
    (dihedral(k=1), (0.5, -0.5), (0.5, 0.5)),  # fastai's k: bit 1 flips top-bottom
    (dihedral(k=2), (0.5, -0.5), (-0.5, -0.5)),  # bit 2 left-right
    (dihedral(k=4), (0.5, -0.25), (-0.25, 0.5)),  # bit 4 transposes
    (zoom(scale=2.0), (0.25, -0.25), (0.5, -0.5)),  # towards the centre
    (zoom(scale=2.0, row_pct=0, col_pct=0), (-0.75, -0.75), (-0.5, -0.5)),  # towards the top-left corner
    (squish(scale=0.5), (0.25, 0.25), (0.5, 0.25)),  # stretched sideways
    (squish(scale=2.0), (0.25, 0.25), (0.25, 0.5)),  # stretched upwards
    (pad(padding=8), (0.25, -0.25), (0.1667, -0.1667)),  # 8 px each side of 32: the picture shrinks by 1.5
    (perspective_warp(magnitude=0.25), (0.0, 0.0), (0.25, 0.25)),  # all corners moved alike: a shift
    (symmetric_warp(magnitude=0.25), (0.5, 0.5), (0.625, 0.625)),  # all corners outwards alike: a zoom
])
def test_geometric_functions_move_a_mark_and_its_mask(tfm, start, end):
    assert np.allclose(mark_at(tfm, start), end, atol=0.07)


@pytest.mark.parametrize("tfm,moved", [
    (skew(direction=6, magnitude=0.5), [(-1, -1), (-1, 1), (1, -1), (1.5, 1)]),  # bottom-right corner, along x
    (skew(direction=1, magnitude=0.5), [(-1, -1.5), (-1, 1), (1, -1), (1, 1)]),  # top-left corner, along y
    (tilt(direction=0, magnitude=0.4), [(-1, -1), (-1, 1), (1, -1.4), (1, 1.4)]),  # the right side grows
    (tilt(direction=3, magnitude=0.4), [(-1.4, -1), (-1, 1), (1.4, -1), (1, 1)]),  # the top side grows
])
def test_perspective_family_shows_the_corners_where_they_were_moved(tfm, moved):
    h = forward_homography(moved)
    for start in [(0.5, 0.5), (-0.5, -0.5), (0.5, -0.5)]:
        assert np.allclose(mark_at(tfm, start), through(h, start), atol=0.08), (tfm, start)
    inverse = type(tfm)(direction=tfm.direction, magnitude=tfm.magnitude, invert=True)
    assert np.allclose(mark_at(inverse, (0.5, 0.5)), through(np.linalg.inv(h), (0.5, 0.5)), atol=0.08)


def test_crop_places_the_window_on_a_wide_picture():
    x, mask = marked([(-0.75, 0.0)], hw=(16, 32))  # the left quarter of a 2:1 picture
    out, out_mask = apply(crop(row_pct=0.5, col_pct=0.0), x, mask, size=(16, 16))
    assert np.allclose(centre(out[0] > 0.5), (-0.5, 0.0), atol=0.07) and centre(out_mask == 1) == centre(out[0] > 0.5)
    out, out_mask = apply(crop_pad(col_pct=1.0), x, mask, size=(16, 16))  # the right half: the mark is gone
    assert not (out[0] > 0.5).any() and not (out_mask == 1).any()
    out, _ = apply(rand_crop(), x, mask, size=(16, 16))
    assert out.shape == (3, 16, 16)


def test_crop_size_is_the_output_size_when_transform_gives_none():
    x, mask = marked([(0.0, 0.0)])
    out, out_mask = apply(crop(size=16), x, mask)
    assert out.shape == (3, 16, 16) and out_mask.shape == (16, 16)
    out, _ = apply(rand_resize_crop(size=12, max_scale=1.5), x, mask)
    assert out.shape == (3, 12, 12)


def test_zoom_squish_keeps_the_window_it_draws():
    # a quarter of the area (scale 4), square, at the top-left: the mark there fills the middle
    assert np.allclose(mark_at(ZoomSquish(scale=4.0, squish=1.0, row_pct=0, col_pct=0), (-0.5, -0.5)), (0, 0),
                       atol=0.07)
    tfms = rand_resize_crop(size=16)
    assert [type(t).__name__ for t in tfms] == ["ZoomSquish", "Crop"] and tfms[1].size == 16


def test_random_zoom_and_zoom_crop_keep_the_scale():
    out, _ = apply(rand_zoom(scale=(1.5, 1.5)), *marked([(-0.25, 0.0), (0.25, 0.0)]), seed=3)
    cols = torch.nonzero((out[0] > 0.5).any(0)).flatten().float()
    left, right = cols[cols < cols.mean()].mean(), cols[cols > cols.mean()].mean()
    assert abs((right - left).item() - 0.5 * 1.5 * HW / 2) <= 1.0  # 0.5 apart, zoomed 1.5 times
    zoomed, cropped = zoom_crop(scale=2.0)
    assert np.allclose(mark_at([zoomed, cropped], (0.25, 0.25)), (0.5, 0.5), atol=0.07)
    assert [t.row_pct for t in zoom_crop(scale=(1.0, 2.0), do_rand=True)] == [(0, 1), (0, 1)]


def test_p_zero_and_zero_magnitudes_leave_the_mark():
    for tfm in [rotate(degrees=90, p=0.0), skew(direction=3, magnitude=0.0), tilt(magnitude=0.0),
                jitter(magnitude=0.0), perspective_warp(magnitude=0.0)]:
        assert np.allclose(mark_at(tfm, (0.5, -0.5)), (0.5, -0.5), atol=0.02), tfm


def test_jitter_moves_pixels_a_little_and_the_mask_follows():
    x, mask = marked([(0.0, 0.0)], half=4)
    out, out_mask = apply(jitter(magnitude=0.1), x, mask)
    plain, _ = apply(jitter(magnitude=0.0), x, mask)
    assert not torch.equal(out, plain)
    assert np.allclose(centre(out[0] > 0.5), (0.0, 0.0), atol=0.1)
    bright = out[0] > 0.99  # sampled inside the square: the mask, sampled at the same place, says 1
    assert bright.any() and (out_mask[bright] == 1).all()


def test_cutout_blacks_out_a_square_and_leaves_the_mask():
    x = torch.full((1, 3, HW, HW), 255, dtype=torch.uint8)
    mask = torch.ones(1, 1, HW, HW, dtype=torch.uint8)
    out, out_mask = apply(cutout(n_holes=1, length=8), x, mask, seed=1)
    holes = out[0] == 0
    rows, cols = torch.nonzero(holes, as_tuple=True)
    box = (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)
    assert 0 < holes.sum() == box <= 64 and (out[:, holes] == 0).all()  # one rectangle, all channels
    assert (out_mask == 1).all()
    out, _ = apply(cutout(n_holes=(2, 2), length=(4, 4)), x, mask, seed=2)
    assert 16 < (out[0] == 0).sum() <= 32
    assert (apply(cutout(n_holes=0), x, mask)[0] == 1).all()


def test_rgb_randomize_replaces_one_channel_with_dim_noise():
    x = torch.full((1, 3, HW, HW), 255, dtype=torch.uint8)
    out, out_mask = apply(rgb_randomize(channel=0, thresh=0.3), x, torch.ones(1, 1, HW, HW, dtype=torch.uint8))
    assert (out[0] <= 0.3).all() and (out[1:] == 1).all() and (out_mask == 1).all()
    with pytest.raises(DataError, match="channel=5"):
        apply(rgb_randomize(channel=5), x, torch.ones(1, 1, HW, HW, dtype=torch.uint8))


def test_brightness_and_contrast_move_grey_levels_as_fastai():
    x = torch.tensor([128, 64], dtype=torch.uint8).view(1, 1, 1, 2).expand(1, 3, 1, 2).contiguous()
    mask = torch.zeros(1, 1, 1, 2, dtype=torch.uint8)
    out, _ = apply(brightness(change=0.7), x, mask)
    assert abs(out[0, 0, 0].item() - 0.7) < 0.01  # mid-grey becomes `change`
    out, _ = apply(contrast(scale=2.0), x, mask)
    expected = torch.sigmoid(2 * torch.logit(torch.tensor(64 / 255)))
    assert abs(out[0, 0, 1].item() - expected.item()) < 1e-3


def test_bad_arguments_name_the_transform():
    with pytest.raises(DataError, match="skew: direction"):
        skew(direction=9)
    with pytest.raises(DataError, match="row_pct"):
        crop(row_pct=1.5)
    with pytest.raises(DataError, match="pad's mode"):
        pad(2, mode="mirror")


def test_functions_work_in_get_transforms_and_ds_tfms(tmp_path):
    root = noise_folder(tmp_path, per_class=(4, 2))
    xtra = [rotate(degrees=(-30, 30), p=0.75), skew(magnitude=(0, 0.3)), tilt(magnitude=0.2), jitter(magnitude=0.01),
            cutout(n_holes=(1, 2), length=(2, 4)), rgb_randomize(thresh=0.2, p=0.5), brightness(change=(0.4, 0.6)),
            *zoom_crop(scale=(1.0, 1.3), do_rand=True)]
    train, _ = get_transforms(xtra_tfms=xtra)
    data = ImageDataBunch.from_folder(root, ds_tfms=(train, [crop_pad()]), size=16, bs=4, num_workers=0, seed=0)
    x, _ = data.one_batch()
    assert x.shape == (4, 3, 16, 16) and 0 <= x.min() and x.max() <= 1
    data = ImageDataBunch.from_folder(root, ds_tfms=([*rand_resize_crop(12), perspective_warp(magnitude=(-0.1, 0.1))],
                                                     []), bs=4, num_workers=0)
    assert data.one_batch()[0].shape == (4, 3, 12, 12) and data.one_batch(DatasetType.Valid)[0].shape[-1] == 12
