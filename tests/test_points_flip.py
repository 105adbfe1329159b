"""Ordered points on mirrored images: `flip_idx` renumbers them where a flip (or a dihedral move with one)
mirrors the image, and without it several points are not mirrored at all (a warning says so), since a
flip would put each landmark on the other side of the face under its old number."""
import pytest
import torch
from points_fixtures import biwi_folder

from fastbase.data import LabelError
from fastbase.vision import Dihedral, Flip, PointsItemList, Rotate, get_transforms
from fastbase.vision.coords import PointTargets, scale_points, unscale_points
from fastbase.vision.transforms import BatchAugment

HW = (20, 30)
# a left and a right point, (y, x) pixels: mirrored and renumbered, each lands where the other was
LEFT_RIGHT = torch.tensor([[[5.0, 6.0], [5.0, 24.0]]])


def moved(tfms, flip_idx, points=LEFT_RIGHT):
    augment = BatchAugment(tfms, HW, tfm_y=PointTargets(flip_idx))
    img = torch.zeros(len(points), 3, *HW, dtype=torch.uint8)
    _, out = augment((img, scale_points(points, HW), torch.tensor([HW] * len(points))))
    return unscale_points(out, HW)


def test_a_flip_renumbers_the_points_by_flip_idx():
    assert torch.allclose(moved([Flip(p=1.0)], None), torch.tensor([[[5.0, 24.0], [5.0, 6.0]]]), atol=1e-4)
    assert torch.allclose(moved([Flip(p=1.0)], [1, 0]), LEFT_RIGHT, atol=1e-4)
    turned = moved([Rotate(degrees=20, p=1.0)], [1, 0])  # not mirrored: numbers kept
    assert turned[0, 0, 1] < turned[0, 1, 1]


def test_dihedral_moves_renumber_only_when_they_mirror():
    for k, mirrors in [(1, True), (2, True), (3, False), (4, True), (7, True), (5, False)]:
        out = moved([Dihedral(p=1.0, k=k)], [1, 0])
        plain = moved([Dihedral(p=1.0, k=k)], None)
        assert torch.allclose(out, plain.flip(1) if mirrors else plain, atol=1e-4), k


@pytest.fixture(scope="module")
def biwi(tmp_path_factory):
    return biwi_folder(tmp_path_factory.mktemp("biwi_flip"), people=("01", "13"), frames=(667, 668))


def two_points(path, tfms, **kwargs):
    def label(f):  # the disc's centre and a second point to its right: an ordered pair
        y, x = 8.0 + (f.stat().st_size % 5), 10.0
        return torch.tensor([[y, x], [y, x + 8.0]])
    return (PointsItemList.from_folder(path).split_by_valid_func(lambda o: o.parent.name == "13")
            .label_from_func(label, **kwargs).transform(tfms, tfm_y=True, size=(12, 16))
            .databunch(bs=2, num_workers=0, seed=0))


def test_ordered_points_are_not_flipped_without_flip_idx(biwi):
    with pytest.warns(UserWarning, match="Flip left out of the training transforms"):
        data = two_points(biwi, get_transforms())
    assert not any(isinstance(t, Flip) for t in data.ds_tfms[0]) and data.tfm_y.flip_idx is None
    data = two_points(biwi, get_transforms(), flip_idx=[1, 0])
    assert any(isinstance(t, Flip) for t in data.ds_tfms[0]) and data.tfm_y.flip_idx.tolist() == [1, 0]
    _, y = two_points(biwi, [[Flip(p=1.0)], []], flip_idx=[1, 0]).one_batch()
    assert (y[:, 0, 1] < y[:, 1, 1]).all()  # every image mirrored, and point 0 still the left one


def test_a_flip_idx_that_is_no_permutation_is_refused(biwi):
    with pytest.raises(LabelError, match="permutation of 0..1"):
        two_points(biwi, get_transforms(), flip_idx=[0, 0])
