"""Layer 6: the segmentation task, whole: its data (`SegmentationItemList`, `SegmentationDataBunch`,
masks as `ImageSegment` items), model (`DynamicUnet`, `unet_learner`), metrics (`MeanIoU`, `dice`,
pixel accuracy), interpretation (`SegmentationInterpretation`) and drawing (`show_mask`). It builds
on what every image task shares (`fastbase.vision`'s image, transforms, bodies, show) and imports
no other task. `fastbase.vision`'s namespace re-exports these names for notebooks.
"""
from .data import (
    ImageSegment,
    SegmentationDataBunch,
    SegmentationDataset,
    SegmentationItemList,
    SegmentationLabelList,
    load_mask,
    open_mask,
)
from .interpret import SegmentationInterpretation
from .metrics import (
    MeanIoU,
    acc_segmentation,
    dice,
    foreground_acc,
    iou_per_class,
    pixel_confusion,
)
from .show import mask_colormap, show_mask, show_segment_results
from .unet import (
    DynamicUnet,
    UnetBlock,
    build_unet_model,
    unet_layer_groups,
    unet_learner,
)

__all__ = ["DynamicUnet", "ImageSegment", "MeanIoU", "SegmentationDataBunch", "SegmentationDataset",
           "SegmentationInterpretation", "SegmentationItemList", "SegmentationLabelList", "UnetBlock",
           "acc_segmentation", "build_unet_model", "dice", "foreground_acc", "iou_per_class", "load_mask",
           "mask_colormap", "open_mask", "pixel_confusion", "show_mask", "show_segment_results", "unet_layer_groups",
           "unet_learner"]
