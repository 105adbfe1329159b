"""Layer 6: the points task (lesson 3's head pose, face landmarks): points as targets that move with
their images. Its data (`PointsItemList`, `PointsLabelList`, `PointsDataBunch`, `ImagePoints`) and
drawing; the model is `cnn_learner`'s (a head of `2 * n_points` outputs, `MSELossFlat`). It builds on
the shared `fastbase.vision` modules (`coords` moves the points) and imports no other task.
`fastbase.vision`'s namespace re-exports these names for notebooks.
"""
from .data import PointsDataBunch, PointsDataset, PointsItemList
from .items import ImagePoints, PointsLabelList, PointsProcessor
from .show import show_points_batch, show_points_results

__all__ = ["ImagePoints", "PointsDataBunch", "PointsDataset", "PointsItemList", "PointsLabelList", "PointsProcessor",
           "show_points_batch", "show_points_results"]
