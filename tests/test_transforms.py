"""Batch augmentation: the transform objects, their matrices, and the single resample per batch."""
import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from fastbase.data import DataError
from fastbase.vision import transforms as T
from fastbase.vision.image import ResizeMethod, cover_image, pad_image, resize_image
from fastbase.vision.transforms import (
    BatchAugment,
    Brightness,
    CenterCrop,
    Contrast,
    Dihedral,
    Flip,
    RandomCrop,
    Rotate,
    ToFloat,
    Warp,
    Zoom,
    crop_matrices,
    get_transforms,
    homographies,
    resample,
)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def raw_batch(n=4, hw=(8, 8), seed=0):
    """(x uint8 (n,3,h,w), y, src_hw) as the image loaders collate it."""
    x = torch.randint(0, 256, (n, 3, *hw), generator=gen(seed), dtype=torch.uint8)
    return x, torch.arange(n), torch.tensor([hw] * n)


def test_get_transforms_matches_fastai_defaults_and_prints():
    train, valid = get_transforms()
    assert [type(t) for t in train] == [RandomCrop, Flip, Warp, Rotate, Zoom, Brightness, Contrast]
    assert [type(t) for t in valid] == [CenterCrop]
    assert repr(train[3]) == "Rotate(max_deg=10.0, p=0.75)" and train[1].p == 0.5
    assert "Zoom(max_zoom=1.1" in repr(train)


def test_get_transforms_options():
    train, _ = get_transforms(flip_vert=True, max_rotate=0, max_warp=0, max_lighting=0, max_zoom=1.0,
                              xtra_tfms=[Flip(p=1.0)])
    assert [type(t) for t in train] == [RandomCrop, Dihedral, Flip]
    assert [type(t) for t in get_transforms(do_flip=False)[0]][:2] == [RandomCrop, Warp]


def test_invalid_parameters_are_refused():
    with pytest.raises(DataError, match="probability"):
        Flip(p=1.5)
    with pytest.raises(DataError, match="min_zoom"):
        Zoom(max_zoom=0.5)
    with pytest.raises(DataError, match="max_lighting"):
        Contrast(max_lighting=1.0)
    with pytest.raises(DataError, match="padding_mode"):
        BatchAugment([], padding_mode="mirror")


def test_with_p_zero_the_augmentation_keeps_every_pixel():
    x, y, src = raw_batch()
    tfms = [RandomCrop(), Flip(p=0.0), Warp(0.4, p=0.0), Rotate(30, p=0.0), Zoom(1.5, p=0.0),
            Brightness(0.5, p=0.0), Contrast(0.5, p=0.0)]
    out, out_y = BatchAugment(tfms, size=(8, 8), resize_method=ResizeMethod.SQUISH)((x, y, src))
    assert out.dtype == torch.float32 and out.shape == (4, 3, 8, 8)
    assert torch.allclose(out, x.float() / 255, atol=1e-5) and torch.equal(out_y, y)


def test_flip_mirrors_left_and_right_and_keeps_labels():
    x, y, src = raw_batch()
    out, out_y = BatchAugment([Flip(p=1.0)], size=(8, 8))((x, y, src))
    assert torch.allclose(out, x.flip(-1).float() / 255, atol=1e-5) and torch.equal(out_y, y)


def test_dihedral_moves_are_flips_and_transposes():
    m = Dihedral().matrices(64, (8, 8), gen())
    seen = {tuple(mi[:2, :2].flatten().tolist()) for mi in m}
    assert len(seen) == 8 and all(sorted(abs(v) for v in s) == [0, 0, 1, 1] for s in seen)


def test_full_augmentation_keeps_shape_range_and_dtype():
    x, y, _ = raw_batch(n=6, hw=(30, 40))
    train, _ = get_transforms(max_rotate=30, max_warp=0.4, max_lighting=0.5, p_affine=1.0, p_lighting=1.0)
    out, _ = BatchAugment(train, size=(16, 12), generator=gen())((x, y, torch.tensor([[60, 80]] * 6)))
    assert out.shape == (6, 3, 16, 12) and out.dtype == torch.float32
    assert out.min() >= 0 and out.max() <= 1


def test_the_whole_geometry_is_one_grid_sample_per_batch(monkeypatch):
    calls, original = [], F.grid_sample

    def counting(x, *args, **kwargs):
        calls.append(tuple(x.shape))
        return original(x, *args, **kwargs)

    monkeypatch.setattr(F, "grid_sample", counting)
    train, _ = get_transforms(p_affine=1.0)
    aug = BatchAugment(train, size=(8, 8), generator=gen())
    for _ in range(3):
        aug(raw_batch(n=5, hw=(10, 10)))
    assert calls == [(5, 3, 10, 10)] * 3


def test_same_generator_seed_gives_the_same_augmentation():
    train, _ = get_transforms()
    batch = raw_batch(hw=(12, 12))
    a = BatchAugment(train, size=(8, 8), generator=gen(5))(batch)[0]
    b = BatchAugment(train, size=(8, 8), generator=gen(5))(batch)[0]
    c = BatchAugment(train, size=(8, 8), generator=gen(6))(batch)[0]
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_each_worker_draws_its_own_numbers(monkeypatch):
    train, _ = get_transforms()
    aug, batch = BatchAugment(train, size=(8, 8), generator=gen(0)), raw_batch(hw=(12, 12))
    monkeypatch.setattr(T, "get_worker_info", lambda: SimpleNamespace(seed=11))
    first = aug(batch)[0]
    monkeypatch.setattr(T, "get_worker_info", lambda: SimpleNamespace(seed=12))
    assert not torch.equal(first, aug(batch)[0])  # a copy in another worker differs
    aug2 = BatchAugment(train, size=(8, 8), generator=gen(0))
    monkeypatch.setattr(T, "get_worker_info", lambda: SimpleNamespace(seed=11))
    assert torch.equal(first, aug2(batch)[0])  # and is reproducible from the worker's seed


def test_crop_matrices_place_the_window_inside_the_image():
    src = torch.tensor([[100, 200]] * 50)  # wide images, square output
    centre = crop_matrices(src, (50, 50), ResizeMethod.CROP, random=False)
    assert torch.allclose(centre[0], torch.tensor([[0.5, 0, 0], [0, 1, 0], [0, 0, 1.0]]))
    rand = crop_matrices(src, (50, 50), ResizeMethod.CROP, random=True, generator=gen())
    assert rand[:, 0, 2].abs().max() <= 0.5 and rand[:, 0, 2].std() > 0.1 and (rand[:, 1, 2] == 0).all()
    pad = crop_matrices(src, (50, 50), ResizeMethod.PAD, random=True)
    assert torch.allclose(pad[0, :2, :2], torch.tensor([[1.0, 0], [0, 2.0]])) and (pad[:, :2, 2] == 0).all()
    assert torch.equal(crop_matrices(src, (50, 50), ResizeMethod.SQUISH, random=True)[0], torch.eye(3))


def test_a_centre_window_of_a_cover_canvas_is_the_validation_crop():
    rows, cols = torch.arange(60.0).view(60, 1), torch.arange(90.0).view(1, 90)
    smooth = 128 + 100 * torch.sin(cols / 9) * torch.cos(rows / 7)  # a 2:3 landscape without fine detail
    photo = smooth.round().to(torch.uint8).expand(3, 60, 90).contiguous()
    canvas, region = cover_image(photo, (20, 20), (32, 32))
    assert canvas.shape == (3, 32, 32) and region == (20, 30)  # resized to cover 20x20, then padded
    out, _ = BatchAugment([CenterCrop()], size=(20, 20))((canvas[None], torch.zeros(1), torch.tensor([region])))
    direct = resize_image(photo, (20, 20), ResizeMethod.CROP).float() / 255
    diff = (out[0] - direct).abs()  # the same scale and filter: no blur, no aliasing
    assert diff.mean() < 0.001 and diff.max() < 0.01
    cut, region = cover_image(photo, (20, 20), (27, 27))
    assert cut.shape == (3, 27, 27) and region == (20, 27)  # the long side cut to the canvas


def test_random_windows_of_a_cover_canvas_are_its_pixels_not_interpolations():
    torch.manual_seed(0)
    canvas, region = cover_image(torch.randint(0, 256, (3, 30, 60), dtype=torch.uint8), (16, 16), (21, 21))
    assert region == (16, 21)
    batch = (canvas.expand(40, 3, 21, 21), torch.zeros(40), torch.tensor([region] * 40))
    out, _ = BatchAugment([RandomCrop()], size=(16, 16), generator=gen())(batch)
    top = (21 - 16) // 2  # the region sits in the middle rows of the canvas
    windows = {left: canvas[:, top:top + 16, left:left + 16].float() / 255 for left in range(21 - 16 + 1)}
    lefts = [next(k for k, v in windows.items() if torch.allclose(o, v, atol=1e-6)) for o in out]
    assert set(lefts) == set(windows)  # every whole-pixel position, from edge to edge of the picture


def test_rotation_is_in_pixel_units_on_non_square_outputs():
    r = Rotate(max_deg=90, p=1.0)
    m = r.matrices(200, (10, 20), gen())
    angles = torch.atan2(m[:, 1, 0] * 10 / 20, m[:, 0, 0])  # undo the aspect scaling
    assert torch.allclose(m[:, 0, 1] * 20 / 10, -torch.sin(angles), atol=1e-5)
    assert angles.abs().max() <= math.pi / 2 + 1e-6


def test_homographies_map_the_corners_and_zero_warp_is_identity():
    src = torch.tensor([[[-1.0, -1], [-1, 1], [1, -1], [1, 1]]])
    dst = torch.tensor([[[-0.9, -1.1], [-1.2, 0.8], [1.1, -0.9], [0.9, 1.2]]])
    h = homographies(src, dst)[0]
    pts = torch.cat([src[0], torch.ones(4, 1)], 1) @ h.T
    assert torch.allclose(pts[:, :2] / pts[:, 2:], dst[0], atol=1e-5)
    assert torch.allclose(Warp(magnitude=0.0, p=1.0).matrices(3, (8, 8)), torch.eye(3).expand(3, 3, 3), atol=1e-6)


def test_zoom_of_exact_scale_and_identity_resample():
    m = Zoom(max_zoom=2.0, min_zoom=2.0, p=1.0).matrices(5, (8, 8), gen())
    assert torch.allclose(m[:, 0, 0], torch.full((5,), 0.5)) and (m[:, :2, 2].abs() <= 0.5).all()
    x = torch.rand(2, 3, 6, 6)
    assert torch.allclose(resample(x, torch.eye(3).expand(2, 3, 3), (6, 6)), x, atol=1e-6)


@pytest.mark.parametrize("padding_mode", ["reflection", "border", "zeros"])
def test_resample_pads_as_grid_sample_does(padding_mode):
    # resample builds its grid by broadcasting (not affine_grid): far outside the image, perspective
    # included, its output must be grid_sample's own on the grid the matrices define
    torch.manual_seed(0)
    x = torch.rand(3, 3, 9, 14) * 255
    m = torch.eye(3).repeat(3, 1, 1)
    m[:, :2, :2] *= torch.tensor([2.5, 3.0, 0.8]).view(3, 1, 1)  # zoomed out: samples 1-3 images away
    m[:, 0, 2], m[:, 1, 1], m[2, 2, :2] = torch.tensor([-1.7, 0.3, 2.2]), -2.2, torch.tensor([0.3, -0.2])
    out = resample(x, m, (11, 12), padding_mode)
    xs, ys = torch.linspace(-1 + 1 / 12, 1 - 1 / 12, 12), torch.linspace(-1 + 1 / 11, 1 - 1 / 11, 11)
    pts = torch.stack([xs.expand(11, 12), ys.view(11, 1).expand(11, 12), torch.ones(11, 12)], -1)
    mapped = torch.einsum("nij,hwj->nhwi", m, pts)
    grid = mapped[..., :2] / mapped[..., 2:]
    assert grid.abs().max() > 3.5  # the test reaches past the first mirror image
    expected = F.grid_sample(x, grid, mode="bilinear", padding_mode=padding_mode, align_corners=False)
    assert torch.allclose(out, expected, atol=2e-3)


def test_lighting_draws_stay_in_range_and_p_zero_is_identity():
    scale, shift = Brightness(0.2, p=1.0).scale_shift(500, gen())  # logit-space shift: mid-grey to 0.4..0.6
    assert (scale == 1).all() and torch.sigmoid(shift).sub(0.5).abs().max() <= 0.1 + 1e-6 and shift.std() > 0.1
    scale, shift = Contrast(0.2, p=1.0).scale_shift(500, gen())
    assert scale.min() >= 0.8 - 1e-6 and scale.max() <= 1.25 + 1e-6 and scale.std() > 0.05
    assert (shift == 0).all()
    scale, shift = Contrast(0.2, p=0.0).scale_shift(10, gen())
    assert (scale == 1).all() and (shift == 0).all()


def test_lighting_moves_mid_grey_like_fastai_and_never_clips():
    levels = torch.tensor([0, 5, 128, 250, 253, 255], dtype=torch.uint8)
    x = levels.view(1, 1, 1, 6).expand(4, 3, 1, 6).contiguous()
    y, src = torch.zeros(4, dtype=torch.long), torch.tensor([[1, 6]] * 4)
    out, _ = BatchAugment([Brightness(0.5, p=1.0), Contrast(0.5, p=1.0)], size=(1, 6), generator=gen())((x, y, src))
    assert (out >= 0).all() and (out <= 1).all()
    assert (out[..., 1:5] > 0).all() and (out[..., 1:5] < 1).all()  # sigmoid(logit): no clipping near the ends
    assert (out.diff(dim=-1)[..., :4] > 0).all()  # monotone: 250 and 253 stay apart even at 2x contrast
    bright, _ = BatchAugment([Brightness(0.2, p=1.0)], size=(1, 6), generator=gen())((x, y, src))
    grey = bright[..., 2]  # 128/255: moves to 0.5 +- 0.1 at most, as fastai's change draws
    assert ((grey - 128 / 255).abs() <= 0.1 + 1e-3).all() and grey.std() > 0.01


def test_to_float_drops_the_source_sizes():
    x, y, src = raw_batch()
    out, out_y = ToFloat()((x, y, src))
    assert torch.equal(out, x.float() / 255) and out_y is y


@pytest.mark.parametrize("mode,row", [("zeros", [0, 0, 1, 2, 3, 0, 0]), ("border", [1, 1, 1, 2, 3, 3, 3]),
                                      ("reflection", [2, 1, 1, 2, 3, 3, 2])])
def test_pad_fills_as_grid_sample_would(mode, row):
    x = torch.tensor([[[1, 2, 3]]], dtype=torch.uint8)
    assert pad_image(x, (1, 7), mode)[0, 0].tolist() == row
