"""Layer 6: `detection_learner`, a Learner that trains a one-stage detector (torchvision's FCOS on a
fastbase body with a feature pyramid, `Detector`) on an `ObjectDataBunch`, set up as `cnn_learner`
sets up a classifier: the body pretrained and frozen at first, layer groups (the body's, then the
pyramid and head) for `freeze_to` and `slice` learning rates, the same BatchNorm defaults, mAP@0.5 and
mAP@0.5:0.95 as metrics, and a `model_spec` so `export` / `load_learner` rebuild it.

The model computes its own loss: the data's `targets_to_model` makes the loop call it with the boxes
(`Loop.model_args`), and `DetectionLoss` sums the loss dict it returns.
"""
from __future__ import annotations

from collections.abc import Callable

from torch import nn

from ...core import FastbaseError, ifnone
from ...export import model_spec
from ...learner import Learner
from ..learner import body_layer_groups, create_body, pretrained_learner, resolve_pretrained_arch
from ..timm_models import arch_ref, resolve_arch
from .data import ObjectDataBunch
from .metrics import mean_ap
from .model import DetectionLoss, Detector

__all__ = ["build_detector", "detection_layer_groups", "detection_learner"]


def build_detector(arch: Callable | str | dict, n_classes: int, img_size, pretrained: bool | str = False, cut=None,
                   fpn_channels: int = 256, head_convs: int = 4, score_thresh: float = 0.05,
                   detections_per_img: int = 100) -> Detector:
    """A `Detector` from plain arguments (how an export names them): `arch` as `resolve_arch` takes
    it, its body from `create_body(arch, pretrained, cut)`."""
    body = create_body(resolve_arch(arch), pretrained, cut)
    return Detector(body, n_classes, tuple(img_size), fpn_channels=fpn_channels, head_convs=head_convs,
                    score_thresh=score_thresh, detections_per_img=detections_per_img)


def detection_layer_groups(model: Detector, split: tuple[int, ...] | None) -> list[nn.Module]:
    """The body split by `body_layer_groups` (as `cnn_learner` splits it), then the pyramid and head."""
    return [*body_layer_groups(model.body, split), model.head_parts()]


def _image_size(data) -> tuple[int, int]:
    size = data.input_spec()["size"]
    if size is None:
        size = tuple(data.one_batch()[0].shape[-2:])
    return (size, size) if isinstance(size, int) else tuple(size)


def detection_learner(data: ObjectDataBunch, arch: Callable | str, pretrained: bool | str = True, cut=None,
                      split_on=None, fpn_channels: int = 256, head_convs: int = 4, score_thresh: float = 0.05,
                      detections_per_img: int = 100, channels_last: bool | None = None,
                      train_bn: bool | None = None, freeze_bn_stats: bool | str | None = None,
                      **learn_kwargs) -> Learner:
    """A Learner for object detection on `data` (an `ObjectDataBunch`) with FCOS over `arch`'s body
    (pretrained by default, frozen so the first fit trains the pyramid and head). `arch` is anything
    `cnn_learner` takes ('resnet34', a torchvision function, a timm name). `fpn_channels` and
    `head_convs` size the pyramid and FCOS's head (256 and 4 as in the paper; smaller for tiny data);
    detections keep scores from `score_thresh`, at most `detections_per_img` per image.

    Metrics default to mAP@0.5 and mAP@0.5:0.95 (`MeanAP`); the loss is the model's own
    (`DetectionLoss`). `learn.predict(img, thresh=0.5)` gives an `ImageBBox` on `img` in its pixels.
    The rest is `cnn_learner`'s set-up (`pretrained_learner`): layer groups from the architecture's
    split (`split_on` overrides), BatchNorm kept as pretrained, unnormalised data normalised with the
    architecture's stats, channels-last on the CPU for the families measured faster that way."""
    if not isinstance(data, ObjectDataBunch):
        raise FastbaseError(f"detection_learner needs an ObjectDataBunch (boxes as targets); this data is a "
                            f"{type(data).__name__}. Start the data block chain with ObjectItemList.")
    arch, meta = resolve_pretrained_arch(data, arch, pretrained)
    img_size = _image_size(data)
    kwargs = {"fpn_channels": fpn_channels, "head_convs": head_convs, "score_thresh": score_thresh,
              "detections_per_img": detections_per_img}
    model = build_detector(arch, data.c, img_size, pretrained, cut, **kwargs)
    spec = None
    if not callable(cut):
        try:
            spec = model_spec(build_detector, {"arch": arch_ref(arch), "n_classes": data.c,
                                               "img_size": list(img_size), "cut": cut, **kwargs})
        except FastbaseError:  # an architecture that cannot be imported by name: no export
            spec = None
    learn_kwargs["loss_func"] = ifnone(learn_kwargs.get("loss_func"), DetectionLoss())
    learn_kwargs["metrics"] = ifnone(learn_kwargs.get("metrics"), mean_ap())
    return pretrained_learner(data, model, meta, pretrained, detection_layer_groups, split_on, cut, spec, train_bn,
                              freeze_bn_stats, channels_last, **learn_kwargs)
