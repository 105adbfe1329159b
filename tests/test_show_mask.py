"""show_mask: a mask of class indexes drawn as coloured regions, the same colour for a class in every mask."""
import pytest
import torch

from fastbase.vision.segmentation import mask_colormap, show_mask


def test_show_mask_draws_the_classes_over_the_image_with_alpha():
    mask = torch.tensor([[0, 1], [2, 1]])
    ax = show_mask(mask, image=torch.rand(3, 2, 2), alpha=0.4, classes=["road", "car", "sky"], legend=True)
    under, over = ax.get_images()
    assert under.get_array().shape == (2, 2, 3) and over.get_alpha() == 0.4
    assert over.get_array().tolist() == mask.tolist()
    assert over.get_clim() == (-0.5, 2.5)  # one colour per class index, fixed by the classes
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["road", "car", "sky"]


def test_a_class_has_one_colour_whatever_the_mask_holds():
    cmap = mask_colormap(32)
    ax_a = show_mask(torch.tensor([[5]]), n_classes=32)
    ax_b = show_mask(torch.tensor([[5, 31]]), n_classes=32)
    rgba = [ax.get_images()[0].to_rgba(ax.get_images()[0].get_array())[0, 0] for ax in (ax_a, ax_b)]
    assert rgba[0].tolist() == rgba[1].tolist() == pytest.approx(list(cmap(5)))
    assert cmap(0) == cmap(20)  # tab20 cycles its 20 colours


def test_show_mask_refuses_a_batch_with_its_shape():
    with pytest.raises(ValueError, match=r"\(2, 3, 4\)"):
        show_mask(torch.zeros(2, 3, 4))
