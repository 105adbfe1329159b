"""Coordinates move with their images: points placed by the workers' resize and moved by the one batch
resample land where the same transform puts a mark drawn on the image (within a pixel)."""
import pytest
import torch

from fastbase.vision.coords import (
    BoxTargets,
    FlowField,
    PointTargets,
    outside,
    place_points,
    scale_flow,
    scale_points,
    unscale_points,
)
from fastbase.vision.dataset import ImageDataset
from fastbase.vision.sizing import ResizeMethod
from fastbase.vision.transforms import (
    BatchAugment,
    Dihedral,
    Flip,
    RandomCrop,
    Rotate,
    Warp,
    Zoom,
)


def marked(hw, centres, radius=1.5):
    """uint8 (n, 3, h, w) images, image i black with one soft white disc at pixel centre `centres[i]` (y, x)."""
    h, w = hw
    ys, xs = torch.meshgrid(torch.arange(h) + 0.5, torch.arange(w) + 0.5, indexing="ij")
    out = []
    for cy, cx in centres:
        d2 = (ys - cy) ** 2 + (xs - cx) ** 2
        out.append((255 * torch.exp(-d2 / (2 * radius ** 2))).round().to(torch.uint8).expand(3, h, w))
    return torch.stack(out)


def centroid(img):
    """(y, x) in pixels of the intensity centroid of a (C, h, w) float image."""
    v = img.float().mean(0)
    v = torch.where(v > 0.25 * v.max(), v, torch.zeros(()))
    h, w = v.shape
    ys, xs = torch.meshgrid(torch.arange(h) + 0.5, torch.arange(w) + 0.5, indexing="ij")
    return torch.stack([(v * ys).sum() / v.sum(), (v * xs).sum() / v.sum()])


CENTRES = [(10.5, 12.5), (20.5, 26.5), (14.5, 20.5), (16.0, 17.0)]

TRANSFORMS = {
    "none": [], "crop": [RandomCrop()], "flip": [Flip(p=1.0)], "dihedral": [Dihedral(p=1.0)],
    "rotate": [Rotate(max_deg=30, p=1.0)], "zoom": [Zoom(max_zoom=1.5, p=1.0)], "warp": [Warp(magnitude=0.3, p=1.0)],
    "all": [RandomCrop(), Flip(p=1.0), Warp(magnitude=0.2, p=1.0), Rotate(max_deg=20, p=1.0), Zoom(max_zoom=1.3, p=1.0)],
}


@pytest.mark.parametrize("name", sorted(TRANSFORMS))
@pytest.mark.parametrize("out_hw", [(32, 40), (24, 28)], ids=["same", "resized"])
def test_points_move_as_a_drawn_mark_does(name, out_hw):
    in_hw = (32, 40)
    x = marked(in_hw, CENTRES)
    points = scale_points(torch.tensor(CENTRES)[:, None], in_hw)  # (n, 1, 2)
    src_hw = torch.tensor([in_hw] * len(CENTRES))
    augment = BatchAugment(TRANSFORMS[name], out_hw, ResizeMethod.SQUISH, "zeros",
                           torch.Generator().manual_seed(3), tfm_y=PointTargets())
    out, moved = augment((x, points, src_hw))
    for img, pt in zip(out, moved):
        expected = unscale_points(pt[0], out_hw)
        assert torch.allclose(centroid(img), expected, atol=1.0), (name, centroid(img), expected)


@pytest.mark.parametrize("method", list(ResizeMethod), ids=lambda m: m.name)
@pytest.mark.parametrize("canvas", [False, True], ids=["output", "canvas"])
def test_points_follow_the_workers_placement(method, canvas):
    full_hw, size = (30, 50), (16, 20)
    centre = (12.5, 30.5)
    ds = ImageDataset([], size=size, resize_method=method, padding_mode="zeros")
    x, _ = ds.place(marked(full_hw, [centre], radius=3.0)[0], full_hw, canvas)
    expected = unscale_points(place_points(torch.tensor(centre), full_hw, size, method, canvas), x.shape[-2:])
    assert torch.allclose(centroid(x), expected, atol=1.0), (centroid(x), expected)


def test_points_leaving_the_image_are_kept_and_flagged():
    points = torch.tensor([[[0.0, 0.8], [0.3, -0.2]]])  # (y, x): near the right edge, and near the centre
    zoom_2x = torch.diag(torch.tensor([0.5, 0.5, 1.0]))[None]  # output -> input: a zoom of 2 about the centre
    moved = PointTargets().move(points, zoom_2x)
    assert torch.allclose(moved, 2 * points)
    assert outside(moved).tolist() == [[True, False]]


def test_boxes_are_clipped_and_dropped_when_they_leave():
    boxes = torch.tensor([[[-0.5, -0.5, 0.5, 0.5], [0.6, 0.6, 0.9, 0.9]]])  # centre box, box in a corner
    labels = torch.tensor([[1, 2]])
    flip_zoom = BatchAugment([Zoom(max_zoom=4, min_zoom=4, p=1.0)], (16, 16), tfm_y=BoxTargets(),
                             generator=torch.Generator().manual_seed(0))
    # a zoom of 4 towards a random point: whatever survives is clipped to [-1, 1]
    _, (moved, kept) = flip_zoom((torch.zeros(1, 3, 16, 16, dtype=torch.uint8), (boxes, labels),
                                  torch.tensor([[16, 16]])))
    assert moved.abs().max() <= 1
    assert ((moved[..., 2:] - moved[..., :2]) > 0).all(-1).eq(kept > 0).all()
    flip = BatchAugment([Flip(p=1.0)], (16, 16), tfm_y=BoxTargets())
    _, (flipped, same) = flip((torch.zeros(1, 3, 16, 16, dtype=torch.uint8), (boxes, labels), torch.tensor([[16, 16]])))
    assert torch.allclose(flipped[0, 1], torch.tensor([0.6, -0.9, 0.9, -0.6]), atol=1e-5)
    assert same.tolist() == [[1, 2]]


def test_flow_field_scales_to_unit_and_back():
    flow = FlowField((20, 40), torch.tensor([[0.0, 0.0], [20.0, 40.0], [10.0, 10.0]]))
    scaled = scale_flow(flow).flow
    assert torch.allclose(scaled, torch.tensor([[-1.0, -1.0], [1.0, 1.0], [0.0, -0.5]]))
    assert torch.allclose(scale_flow(flow, to_unit=False).flow, torch.tensor([[0.0, 0.0], [20.0, 40.0], [10.0, 10.0]]))


def test_grid_moves_are_refused_with_coordinate_targets():
    from fastbase.data import DataError
    from fastbase.vision.tfm_funcs import jitter

    with pytest.raises(DataError, match="Jitter.*no exact inverse"):
        BatchAugment([jitter(0.01)], size=16, tfm_y=PointTargets())
