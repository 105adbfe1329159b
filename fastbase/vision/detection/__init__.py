"""Layer 6: the object detection task: labelled boxes as targets that move with their images. Its
data (`ObjectItemList`, `ObjectCategoryList`, `ObjectDataBunch`, `ImageBBox`, `get_annotations` for
COCO JSON, `bb_pad_collate`), drawing, the detector (`Detector`: torchvision's FCOS over a fastbase
body with a feature pyramid; `detection_learner`), its metric (`MeanAP`) and interpretation
(`ObjectDetectionInterpretation`). It builds on the shared `fastbase.vision` modules (`coords` moves
the boxes) and imports no other task. `fastbase.vision`'s namespace re-exports the public names.
"""
from .data import ObjectDataBunch, ObjectDataset, ObjectItemList
from .interpret import ObjectDetectionInterpretation, show_boxes_results
from .items import ImageBBox, ObjectCategoryList, bb_pad_collate, get_annotations
from .learner import build_detector, detection_layer_groups, detection_learner
from .metrics import MeanAP, coco_map, mean_ap
from .model import DetectionLoss, Detector, DetectorOutput, body_levels, body_maps
from .show import show_boxes_batch

__all__ = ["DetectionLoss", "Detector", "DetectorOutput", "ImageBBox", "MeanAP", "ObjectCategoryList",
           "ObjectDataBunch", "ObjectDataset", "ObjectDetectionInterpretation", "ObjectItemList", "bb_pad_collate",
           "body_levels", "body_maps", "build_detector", "coco_map", "detection_layer_groups", "detection_learner",
           "get_annotations", "mean_ap", "show_boxes_batch", "show_boxes_results"]
