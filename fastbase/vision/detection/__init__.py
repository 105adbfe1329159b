"""Layer 6: the object detection task: labelled boxes as targets that move with their images. Its
data (`ObjectItemList`, `ObjectCategoryList`, `ObjectDataBunch`, `ImageBBox`, `get_annotations` for
COCO JSON, `bb_pad_collate`) and drawing. It builds on the shared `fastbase.vision` modules (`coords`
moves the boxes) and imports no other task. `fastbase.vision`'s namespace re-exports these names.
"""
from .data import ObjectDataBunch, ObjectDataset, ObjectItemList
from .items import ImageBBox, ObjectCategoryList, bb_pad_collate, get_annotations
from .show import show_boxes_batch

__all__ = ["ImageBBox", "ObjectCategoryList", "ObjectDataBunch", "ObjectDataset", "ObjectItemList", "bb_pad_collate",
           "get_annotations", "show_boxes_batch"]
