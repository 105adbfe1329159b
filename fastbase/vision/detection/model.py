"""Layer 6: the detector: torchvision's FCOS over a fastbase body, with a feature pyramid from
`torchvision.ops.FeaturePyramidNetwork`, as one module that takes a fastbase batch.

`Detector(x, boxes, labels)` takes images already normalised and sized by the data (torchvision's
own resize and normalisation are left out) and boxes as the batches carry them (`(bs, b, 4)` top-
left-bottom-right scaled to [-1, 1], padded with label 0). In training mode it returns FCOS's own
training-mode loss dict; in eval mode its losses (when given targets) and its detections, padded to
`detections_per_img` rows `[top, left, bottom, right (scaled), score, label]` (score 0: no box), a
`DetectorOutput`. `DetectionLoss` sums the losses; its activation gives the detections.

The body is read through one adapter over the `Encoder` interface, `body_levels` / `body_maps`:
which of the body's stage outputs the pyramid reads (the last map at each resolution), their
channels and strides.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import NamedTuple

import torch
from torch import nn
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.fcos import FCOS, FCOSHead
from torchvision.models.detection.image_list import ImageList
from torchvision.ops import FeaturePyramidNetwork
from torchvision.ops.feature_pyramid_network import LastLevelP6P7

from ...core import FastbaseError
from ..coords import scale_points, unscale_points
from ..encoder import as_encoder

__all__ = ["BodyFPN", "DetectionLoss", "Detector", "DetectorOutput", "body_levels", "body_maps",
           "boxes_to_targets", "detections_to_boxes"]

N_LEVELS = 3  # body stages the pyramid reads (the deepest ones with stride >= 8); two more come from P5


class DetectorOutput(NamedTuple):
    """What a `Detector` returns: `losses` (name -> scalar; empty without targets) and `detections`
    `(bs, n, 6)` (empty in training mode)."""
    losses: dict
    detections: torch.Tensor


def body_maps(body: nn.Module, x: torch.Tensor, keep=None) -> list[torch.Tensor | None]:
    """Every stage's feature map of `body` for `x`, shallow to deep (`keep`: the indexes wanted, the
    others may be None): the body's `Encoder.features` (`fastbase.vision.encoder`), so any body
    `create_body` or timm gives is read the same way. The one place the detector reads a body."""
    return as_encoder(body).features(x, keep=keep)


def body_levels(body: nn.Module, img_size=(64, 64), n_levels: int = N_LEVELS):
    """`(indexes, channels, strides)` of the stage outputs the pyramid reads: the last map at each
    resolution (`Encoder.pyramid`), the deepest `n_levels` of those with a stride of at least 8
    (fewer when the body has fewer)."""
    encoder = as_encoder(body)
    ends, channels, strides = encoder.pyramid(img_size), encoder.channels(img_size), encoder.strides(img_size)
    picked = [i for i in ends if strides[i] >= 8][-n_levels:] or ends[-1:]
    return picked, [channels[i] for i in picked], [strides[i] for i in picked]


class BodyFPN(nn.Module):
    """A body and a feature pyramid over its stages `idxs` (`channels` each): P3-P5 from the stages,
    P6 and P7 from P5 (`LastLevelP6P7`), all `out_channels` wide, as FCOS and RetinaNet read them."""

    def __init__(self, body: nn.Module, idxs, channels, out_channels: int = 256):
        super().__init__()
        self.body, self.idxs, self.out_channels = as_encoder(body), list(idxs), out_channels
        self.fpn = FeaturePyramidNetwork(list(channels), out_channels, extra_blocks=LastLevelP6P7(out_channels,
                                                                                                  out_channels))

    def forward(self, x: torch.Tensor) -> OrderedDict:
        maps = body_maps(self.body, x, keep=self.idxs)
        return self.fpn(OrderedDict((str(k), maps[i]) for k, i in enumerate(self.idxs)))


class _AsIs(nn.Module):
    """torchvision's detection transform, minus resizing and normalising (the data did both): a
    batch tensor becomes an `ImageList` of its size, and detections stay on the input's pixels."""

    def forward(self, images, targets=None):
        return ImageList(images, [tuple(images.shape[-2:])] * len(images)), targets

    def postprocess(self, result, image_sizes, original_image_sizes):
        return result


def _xyxy_pixels(tlbr: torch.Tensor, hw) -> torch.Tensor:
    """`(n, 4)` top-left-bottom-right boxes scaled to [-1, 1] -> `(n, 4)` x1 y1 x2 y2 in pixels of `hw`."""
    return unscale_points(tlbr.float().reshape(-1, 2, 2), hw).reshape(-1, 4)[:, [1, 0, 3, 2]]


def boxes_to_targets(boxes: torch.Tensor, labels: torch.Tensor, hw) -> list[dict]:
    """A batch's `(bs, b, 4)` scaled boxes and `(bs, b)` labels -> torchvision's targets: per image
    `{'boxes': (n, 4) x1 y1 x2 y2 pixels, 'labels': (n,)}` without the padding (label 0)."""
    out = []
    for b, lbl in zip(boxes, labels):
        keep = lbl > 0
        out.append({"boxes": _xyxy_pixels(b[keep], hw), "labels": lbl[keep]})
    return out


def detections_to_boxes(dets: torch.Tensor, hw) -> list[dict]:
    """The padded `(bs, n, 6)` detections -> per image `{'boxes': x1 y1 x2 y2 pixels, 'scores', 'labels'}`
    (the rows with a score), as torchmetrics and torchvision write them."""
    out = []
    for d in dets:
        d = d[d[:, 4] > 0]
        out.append({"boxes": _xyxy_pixels(d[:, :4], hw), "scores": d[:, 4].float(), "labels": d[:, 5].long()})
    return out


class Detector(nn.Module):
    """FCOS (torchvision) on `body` for `n_classes` classes (background, index 0, included) laid out
    for images of `img_size`: a pyramid of `fpn_channels` (`BodyFPN`), one point per location with
    the level's stride as its size (FCOS's default, so objects of any size in images of any size
    need no anchor settings), a head of `head_convs` convolutions per branch. Detections keep those
    scoring at least `score_thresh` (low, so mAP sees the whole precision-recall curve)."""

    def __init__(self, body: nn.Module, n_classes: int, img_size=(224, 224), fpn_channels: int = 256,
                 head_convs: int = 4, score_thresh: float = 0.05, nms_thresh: float = 0.6,
                 detections_per_img: int = 100):
        super().__init__()
        if fpn_channels % 32:
            raise FastbaseError(f"fpn_channels={fpn_channels}: FCOS's head uses GroupNorm of 32 groups, so it must be "
                                "a multiple of 32.")
        body = as_encoder(body)
        idxs, channels, strides = body_levels(body, img_size)
        strides = [*strides, strides[-1] * 2, strides[-1] * 4]
        anchors = AnchorGenerator(tuple((s,) for s in strides), ((1.0,),) * len(strides))
        head = FCOSHead(fpn_channels, 1, n_classes, num_convs=head_convs)
        self.fcos = FCOS(BodyFPN(body, idxs, channels, fpn_channels), n_classes, anchor_generator=anchors, head=head,
                         score_thresh=score_thresh, nms_thresh=nms_thresh, detections_per_img=detections_per_img)
        self.fcos.transform = _AsIs()
        self.n_classes, self.detections_per_img = n_classes, detections_per_img

    @property
    def body(self) -> nn.Module:
        return self.fcos.backbone.body

    def head_parts(self) -> nn.ModuleList:
        """Everything after the body (the pyramid and FCOS's head): the last layer group."""
        return nn.ModuleList([self.fcos.backbone.fpn, self.fcos.head])

    def forward(self, x: torch.Tensor, boxes: torch.Tensor | None = None,
                labels: torch.Tensor | None = None) -> DetectorOutput:
        hw = tuple(x.shape[-2:])
        targets = None if boxes is None else boxes_to_targets(boxes, labels, hw)
        if self.training:
            if targets is None:
                raise FastbaseError("A Detector in training mode needs the batch's boxes and labels.")
            return DetectorOutput(self.fcos(x, targets), x.new_zeros(0, self.detections_per_img, 6))
        return self._evaluate(x, targets)

    def _evaluate(self, x: torch.Tensor, targets) -> DetectorOutput:
        """FCOS's eval-mode pass through its parts, with the training losses too when there are targets
        (the validation loss)."""
        fcos, images = self.fcos, ImageList(x, [tuple(x.shape[-2:])] * len(x))
        features = list(fcos.backbone(x).values())
        head_outputs = fcos.head(features)
        anchors = fcos.anchor_generator(images, features)
        per_level = [f.size(2) * f.size(3) for f in features]
        losses = {} if targets is None else fcos.compute_loss(targets, head_outputs, anchors, per_level)
        split_outputs = {k: list(v.split(per_level, dim=1)) for k, v in head_outputs.items()}
        split_anchors = [list(a.split(per_level)) for a in anchors]
        dets = fcos.postprocess_detections(split_outputs, split_anchors, images.image_sizes)
        return DetectorOutput(losses, self._pad(dets, tuple(x.shape[-2:]), x))

    def _pad(self, dets: list[dict], hw, x: torch.Tensor) -> torch.Tensor:
        out = x.new_zeros(len(dets), self.detections_per_img, 6, dtype=torch.float32)
        for i, d in enumerate(dets):
            n = min(len(d["scores"]), self.detections_per_img)
            tlbr = d["boxes"][:n, [1, 0, 3, 2]].detach().float().reshape(-1, 2, 2)
            out[i, :n, :4] = scale_points(tlbr, hw).reshape(-1, 4)
            out[i, :n, 4], out[i, :n, 5] = d["scores"][:n].detach(), d["labels"][:n].float()
        return out


class DetectionLoss(nn.Module):
    """The loss of a `Detector`: the sum of the losses it computed itself (FCOS: classification,
    box regression, centerness). Its `activation` gives the detections (`predict`, `pred_batch`)."""

    def forward(self, output: DetectorOutput, *targets) -> torch.Tensor:
        if not output.losses:
            raise FastbaseError("The detector computed no loss: it was called without the batch's boxes. The data's "
                                "targets_to_model must be True (an ObjectDataBunch's is).")
        return sum(output.losses.values())

    @staticmethod
    def activation(output: DetectorOutput) -> torch.Tensor:
        return output.detections

    def __repr__(self):
        return "DetectionLoss()"
