"""Layer 6: the data block chain for segmentation, as lesson 3's CamVid notebook writes it:

    SegmentationItemList.from_folder(path/'images').split_by_rand_pct(0.2)
        .label_from_func(get_y_fn, classes=codes).transform(get_transforms(), size=128, tfm_y=True)
        .databunch(bs=8).normalize(imagenet_stats)

Images and masks (`segment`) go through the image pipeline together: the same resize in the workers
and the same batch resample (nearest-neighbour for the masks, lighting for the images only).
"""
from __future__ import annotations

from .data import ImageList
from .segment import ImageSegment, SegmentationLabelList, open_mask

__all__ = ["ImageSegment", "SegmentationItemList", "SegmentationLabelList", "open_mask"]


class SegmentationItemList(ImageList):
    """Image files whose labels are mask files: `label_from_func(get_y_fn, classes=codes)` makes a
    `SegmentationLabelList` (pass `classes`, the names of the mask codes)."""

    def __init__(self, items, path=".", inner_df=None, label_cls=None, **settings):
        super().__init__(items, path=path, inner_df=inner_df, label_cls=label_cls or SegmentationLabelList, **settings)
