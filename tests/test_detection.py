"""The detector: detection_learner (FCOS over a tiny random body) trains through the Learner loop with
the model's own loss, reports mAP from torchmetrics, predicts boxes in the pixels of the image asked
about, exports, serves, interprets, and `fastbase train --task detection` runs on a COCO-format set."""
import copy
import json

import matplotlib
import pytest
import torch
from boxes_fixtures import HW, coco_folder
from tiny_models import tiny_detector_arch

from fastbase.data import DatasetType
from fastbase.vision import (
    Detector,
    ImageBBox,
    MeanAP,
    ObjectDetectionInterpretation,
    ObjectItemList,
    ResizeMethod,
    bb_pad_collate,
    create_body,
    detection_learner,
    get_annotations,
    load_learner,
    open_image,
)
from fastbase.vision.detection import DetectorOutput

matplotlib.use("Agg")
TINY = {"fpn_channels": 64, "head_convs": 1}  # GroupNorm of 32 groups needs 2 channels per group on 1x1 maps


def coco_data(coco, size=16, tfms=([], [])):
    images, lbl_bbox = get_annotations(coco / "train.json")
    img2bbox = dict(zip(images, lbl_bbox))
    return (ObjectItemList.from_folder(coco).split_by_rand_pct(0.25, seed=0)
            .label_from_func(lambda o: img2bbox[o.name])
            .transform(tfms, tfm_y=True, size=size, resize_method=ResizeMethod.SQUISH)
            .databunch(bs=4, collate_fn=bb_pad_collate, num_workers=0, seed=0))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A detector trained for one epoch on 32x32 images squished to 16x16, and its export."""
    root = tmp_path_factory.mktemp("detect")
    coco = coco_folder(root / "coco", n=12)
    torch.manual_seed(0)
    learn = detection_learner(coco_data(coco), tiny_detector_arch, pretrained=False, path=root, silent=True, **TINY)
    learn.fit_one_cycle(1, 1e-2)
    learn.export(root / "export.pkl")
    return learn, coco, root


def test_layer_groups_freeze_and_discriminative_lrs_as_for_cnn_learner(trained):
    learn, _, _ = trained
    split = detection_learner(learn.data, tiny_detector_arch, pretrained=False, split_on=(2,), silent=True, **TINY)
    assert len(split.layer_groups) == 3 and split.layer_groups[-1] is not None
    split.freeze()
    head = {id(p) for p in split.model.head_parts().parameters()}
    frozen = [p for p in split.model.parameters() if not p.requires_grad and p.dim() > 1]
    assert frozen and all(id(p) not in head for p in frozen)  # the body's convolutions only
    assert all(p.requires_grad for p in split.model.head_parts().parameters())
    assert len(split.lr_range(slice(1e-4, 1e-2))) == 3


def test_the_loop_trains_on_the_models_own_loss_and_reports_map(trained):
    learn, _, _ = trained
    assert learn.data.targets_to_model and learn.metric_names[-2:] == ["map50", "map"]
    losses = learn.recorder.losses
    assert len(losses) > 0 and all(torch.isfinite(torch.as_tensor(v)) for v in losses)
    valid_loss, map50, map_ = learn.validate()
    assert valid_loss > 0 and 0 <= map_ <= map50 <= 1
    x, (boxes, labels) = learn.data.one_batch(DatasetType.Train)
    model = copy.deepcopy(learn.model).train()  # the module's learner stays as exported
    out = model(x, boxes, labels)  # torchvision's training-mode loss dict
    assert set(out.losses) == {"classification", "bbox_regression", "bbox_ctrness"}
    labels[0] = 0  # an image with no boxes is a valid, empty target
    assert torch.isfinite(learn.loss_func(model(x, boxes, labels))).item()


def test_map_comes_from_coco_evaluation():
    boxes = torch.tensor([[[-0.5, -0.5, 0.0, 0.0], [0.2, 0.2, 0.8, 0.9]]])
    labels = torch.tensor([[1, 2]])
    exact = torch.cat([boxes[0], torch.ones(2, 1), labels[0, :, None].float()], 1)[None]
    shifted = exact.clone()
    shifted[..., :4] += 0.4
    for dets, expected in ((exact, 1.0), (shifted, 0.0)):
        metric = MeanAP(iou=0.5)
        metric.reset()
        metric.accumulate(DetectorOutput({}, dets), boxes, labels)
        assert metric.value.item() == pytest.approx(expected)


def test_predict_gives_boxes_in_the_pixels_of_the_image_asked_about(trained):
    learn, _, root = trained
    fn = learn.data.valid_ds.items[0]
    bbox, rows, dets = learn.predict(open_image(fn), thresh=0.0)
    assert isinstance(bbox, ImageBBox) and bbox.size == HW and dets.shape == (100, 6) and len(bbox) == len(rows)
    # the input was squished by 2 on both axes (32x32 -> 16x16): pixels double, clipped to the image
    on_input = ((rows[:, :4].reshape(-1, 2, 2) + 1) * 8).reshape(-1, 4)
    assert torch.allclose(bbox.pixels, (on_input * 2).clamp(0, 32), atol=1e-3)
    assert (bbox.scores >= 0.05).all() and len(learn.predict(fn, thresh=1.01)[0]) == 0
    again, _, dets2 = load_learner(root).predict(fn, thresh=0.0)
    assert torch.allclose(dets2, dets, atol=1e-4) and torch.allclose(again.pixels, bbox.pixels, atol=1e-3)


def test_served_boxes_are_in_the_pixels_of_the_upload(trained):
    from fastbase.serve import ServedModel
    learn, _, root = trained
    served = ServedModel(root / "export.pkl")
    fn = learn.data.valid_ds.items[1]
    (answer,) = served.predict([served.decode(fn.read_bytes(), fn.name)])
    bbox, _, _ = learn.predict(fn, thresh=0.5)
    assert answer["size"] == list(HW) and len(answer["boxes"]) == len(bbox)
    for got, box, name in zip(answer["boxes"], bbox.pixels.tolist(), bbox.names()):
        assert got["label"] == name and got["box"] == pytest.approx(box, abs=0.01)
    json.dumps(answer)


def test_interpretation_gives_an_ap_table_and_draws_the_worst_images(trained):
    learn, _, _ = trained
    interp = ObjectDetectionInterpretation.from_learner(learn)
    n = len(learn.data.valid_ds)
    assert len(interp.images) == len(interp.targets) == len(interp.detections) == n
    table = interp.ap_table()
    assert list(table.columns) == ["class", "n_true", "AP@0.5", "AP@0.5:0.95"]
    assert table["class"].iloc[-1] == "mean (mAP)" and set(table["class"][:-1]) <= {"bar", "square"}
    assert table["n_true"].iloc[-1] == sum(len(t[1]) for t in interp.targets)
    missed, false_pos = zip(*interp.mistakes(thresh=1.01))  # nothing detected: every true box is missed
    assert list(missed) == [len(t[1]) for t in interp.targets] and not any(false_pos)
    assert interp.plot_worst(k=2, thresh=0.0) is not None
    assert learn.show_results(rows=2) is not None


def test_the_body_adapter_reads_the_stages_of_a_create_body_body():
    from fastbase.vision.detection import body_levels
    body = create_body(tiny_detector_arch, pretrained=False)
    idxs, channels, strides = body_levels(body, (32, 32))
    assert (idxs, channels, strides) == ([2, 3], [16, 32], [8, 16])  # the stages of stride 8 and more
    assert Detector(body, 3, (32, 32), **TINY).eval()(torch.zeros(1, 3, 32, 32)).detections.shape == (1, 100, 6)


def test_fastbase_train_task_detection_reads_a_coco_json(tmp_path):
    from fastbase.cli import main
    coco = coco_folder(tmp_path / "coco", n=8)
    out = tmp_path / "out"
    rc = main(["train", str(coco), "--task", "detection", "--arch", "tiny_models:tiny_detector_arch",
               "--no-pretrained", "--size", "16", "--bs", "4", "--epochs", "1", "--unfreeze-epochs", "0", "--lr",
               "1e-2", "--workers", "0", "--out", str(out)])
    assert rc == 0 and {"export.pkl", "ap_table.csv", "worst.png"} <= {p.name for p in out.iterdir()}
    (coco / "extra.json").write_text("{}")
    assert main(["train", str(coco), "--task", "detection", "--out", str(out)]) == 2  # two JSON files: name one
