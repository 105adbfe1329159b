"""Boxes as targets: fastai v1's ObjectItemList pipeline as its documentation writes it, on a tiny
COCO-format set (and on ../shared/data/coco_tiny when present); COCO files with mistakes named."""
import json
import os

import matplotlib
import pytest
import torch
from boxes_fixtures import coco_folder
from conftest import SHARED

from fastbase.data import DataError, LabelError
from fastbase.vision import (
    DatasetType,
    ImageBBox,
    ObjectItemList,
    bb_pad_collate,
    get_annotations,
    get_transforms,
)

matplotlib.use("Agg")


@pytest.fixture(scope="module")
def coco(tmp_path_factory):
    return coco_folder(tmp_path_factory.mktemp("coco_tiny"))


def docs_pipeline(coco, tfms=None, **kwargs):
    """fastai v1's documented ObjectItemList chain."""
    images, lbl_bbox = get_annotations(coco / "train.json")
    img2bbox = dict(zip(images, lbl_bbox))
    get_y_func = lambda o: img2bbox[o.name]  # as the documentation writes it
    return (ObjectItemList.from_folder(coco)
            .split_by_rand_pct(seed=0)
            .label_from_func(get_y_func)
            .transform(tfms if tfms is not None else get_transforms(), tfm_y=True, **kwargs)
            .databunch(bs=4, collate_fn=bb_pad_collate, num_workers=0, seed=0))


def test_get_annotations_reads_coco_boxes_top_left_bottom_right(coco):
    images, lbl_bbox = get_annotations(coco / "train.json", prefix="train/")
    raw = json.loads((coco / "train.json").read_text())
    first = next(a for a in raw["annotations"] if a["image_id"] == 101)
    x, y, w, h = first["bbox"]
    assert images[1] == "train/000000000101.jpg"
    assert lbl_bbox[1][0][0] == [y, x, y + h, x + w] and lbl_bbox[1][1][0] in ("square", "bar")
    assert lbl_bbox[0] == [[], []]  # an image without boxes


def test_the_documented_pipeline_runs_and_boxes_follow_the_rectangles(coco):
    data = docs_pipeline(coco, tfms=get_transforms(max_lighting=0, max_rotate=0, max_warp=0), padding_mode="zeros")
    assert data.classes == ["background", "bar", "square"] and data.c == 3
    data.show_batch(rows=2, ds_type=DatasetType.Valid, figsize=(6, 6))
    x, (boxes, labels) = data.one_batch(DatasetType.Train, denorm=False)
    assert x.shape[:2] == (4, 3) and boxes.shape[0] == 4 and boxes.shape[2] == 4 and labels.shape == boxes.shape[:2]
    for img, b, lbl in zip(x, boxes, labels):  # each kept box sits on a bright rectangle
        bbox = ImageBBox(b[lbl > 0], lbl[lbl > 0], img.shape[-2:])
        for t, lft, bot, r in bbox.pixels.round().long().tolist():
            inside = img[:, t:bot, lft:r].mean()
            assert inside > 0.45, (t, lft, bot, r, float(inside))
    img, target = data.valid_ds[0]
    assert isinstance(target, ImageBBox) and target.size == img.size


def test_an_image_without_boxes_is_an_empty_target(coco):
    data = docs_pipeline(coco, tfms=([], []))
    ds = data.train_ds if any(p.name.endswith("100.jpg") for p in data.train_ds.items) else data.valid_ds
    i = next(k for k, p in enumerate(ds.items) if p.name.endswith("100.jpg"))
    _, target = ds[i]
    assert len(target) == 0
    _, (boxes, labels), _ = bb_pad_collate([ds.raw_item(i), ds.raw_item((i + 1) % len(ds))])
    assert (labels[0] == 0).all() and boxes.shape[1] >= 1


def write_coco(path, images, annotations, categories=({"id": 1, "name": "a"},)):
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": list(categories)}))
    return path


def test_coco_files_with_mistakes_are_named(tmp_path):
    img = [{"id": 1, "file_name": "x.jpg"}]
    with pytest.raises(DataError, match=r"bad\.json.*image id\(s\) 5"):
        get_annotations(write_coco(tmp_path / "bad.json", img, [{"image_id": 5, "bbox": [0, 0, 2, 2], "category_id": 1}]))
    with pytest.raises(DataError, match=r"cat\.json.*category id\(s\) 3"):
        get_annotations(write_coco(tmp_path / "cat.json", img, [{"image_id": 1, "bbox": [0, 0, 2, 2], "category_id": 3}]))
    with pytest.raises(DataError, match=r"flat\.json.*zero or negative.*x\.jpg"):
        get_annotations(write_coco(tmp_path / "flat.json", img, [{"image_id": 1, "bbox": [0, 0, 0, 2], "category_id": 1}]))


def test_box_labels_with_mistakes_are_named_with_their_files(coco):
    items = ObjectItemList.from_folder(coco).split_by_rand_pct(seed=0)
    with pytest.raises(LabelError, match=r"\d+\.jpg.*zero or negative area"):
        items.label_from_func(lambda o: [[[4, 4, 4, 9]], ["square"]])
    with pytest.raises(LabelError, match=r"\d+\.jpg.*2 labels for boxes"):
        items.label_from_func(lambda o: [[[1, 1, 4, 9]], ["square", "bar"]])


@pytest.mark.skipif(not os.path.isdir(os.path.join(SHARED, "data", "coco_tiny")),
                    reason="../shared/data/coco_tiny is absent (a clone without the shared data)")
def test_coco_tiny_through_the_documented_pipeline():
    from pathlib import Path
    data = docs_pipeline(Path(SHARED) / "data" / "coco_tiny", size=64)
    assert data.classes == ["background", "book", "chair", "couch", "remote", "tv", "vase"]
    x, (boxes, labels) = data.one_batch()
    assert x.shape == (4, 3, 64, 64) and boxes.abs().max() <= 1 and torch.equal(labels > 0, (boxes != 0).any(-1))
