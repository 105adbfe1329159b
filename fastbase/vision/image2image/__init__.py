"""Layer 6: the image-to-image task, whole (lesson 7's super-resolution): data whose inputs and
targets are both images (`ImageImageList`, `ImageImageDataBunch`), moved together by one batch
resample, normalised together, and drawn as input | prediction | target. The model is a U-Net
(`unet_learner`, shared by the namespace); a feature loss is written in the notebook, as the course
does. `fastbase.vision`'s namespace re-exports these names.
"""
from .data import (
    ImageImageDataBunch,
    ImageImageDataset,
    ImageImageList,
    ImagePairAugment,
    ImageTargetList,
    PairToFloat,
)
from .show import show_pair_batch, show_pair_results

__all__ = ["ImageImageDataBunch", "ImageImageDataset", "ImageImageList", "ImagePairAugment", "ImageTargetList",
           "PairToFloat", "show_pair_batch", "show_pair_results"]
