"""The data block chain for images: ImageList ends in the same ImageDataBunch the factories build,
items show themselves, and single-label, multi-label and regression data train, predict and draw
with the same calls."""
import matplotlib
import numpy as np
import pytest
import torch
from conftest import shared_path
from image_fixtures import digits_fixture  # noqa: F401
from tiny_vision import tiny_arch

from fastbase.data import (
    Category,
    DatasetType,
    FloatItem,
    FloatList,
    LabelError,
    MultiCategory,
    imagenet_stats,
    load_data,
)
from fastbase.metrics import accuracy_thresh, fbeta
from fastbase.vision.data import ImageDataBunch, ImageList
from fastbase.vision.image import Image
from fastbase.vision.learner import cnn_learner
from fastbase.vision.transforms import get_transforms

matplotlib.use("Agg")
pytestmark = pytest.mark.filterwarnings("ignore:The image decoding:DeprecationWarning")
FAST = {"num_workers": 0, "device": "cpu"}


def tags(fn) -> str:
    """Three tags of a digit image, from its class folder: odd/even, round/straight, big/small."""
    d = int(fn.parent.name)
    return " ".join(["odd" if d % 2 else "even", "round" if d in (0, 3, 6, 8, 9) else "straight",
                     "big" if d >= 5 else "small"])


def same_data(a, b):
    """Same files, classes, targets and first batches (training order from the same seed)."""
    for ds_type in (DatasetType.Train, DatasetType.Valid):
        da, db = a.dl(ds_type).dataset, b.dl(ds_type).dataset
        assert da.items == db.items and torch.equal(da.targets, db.targets)
        xa, ya = a.one_batch(ds_type)
        xb, yb = b.one_batch(ds_type)
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    assert a.classes == b.classes and type(a) is type(b)


def test_factory_and_chain_give_the_same_data(digits):
    chain = (ImageList.from_folder(digits).split_by_folder().label_from_folder()
             .transform(get_transforms(), size=8).databunch(bs=32, seed=0, **FAST))
    same_data(ImageDataBunch.from_folder(digits, ds_tfms=get_transforms(), size=8, bs=32, seed=0, **FAST), chain)
    rand = (ImageList.from_folder(digits / "train").split_by_rand_pct(0.2, seed=3).label_from_folder()
            .transform(None, size=8).databunch(bs=32, seed=3, **FAST))
    same_data(ImageDataBunch.from_folder(digits, valid_pct=0.2, seed=3, size=8, bs=32, **FAST), rand)


def test_csv_factory_and_csv_chain_agree(digits):
    pytest.importorskip("pandas")
    factory = ImageDataBunch.from_csv(digits, valid_pct=0.2, seed=7, size=8, bs=16, **FAST)
    chain = (ImageList.from_csv(digits, "labels.csv").split_by_rand_pct(0.2, seed=7)
             .label_from_df(label_cls=None).transform(size=8).databunch(bs=16, **FAST))
    assert factory.train_ds.items == chain.train_ds.items and factory.valid_ds.items == chain.valid_ds.items
    assert [str(c) for c in chain.classes] == factory.classes


def test_items_show_themselves_and_the_datasets_speak_in_items(digits):
    data = (ImageList.from_folder(digits).split_by_folder().label_from_folder()
            .transform(size=12).databunch(bs=16, **FAST)).normalize(imagenet_stats)
    x, y = data.train_ds[0]
    assert isinstance(x, Image) and x.shape == (3, 12, 12) and x.size == (12, 12)
    assert isinstance(y, Category) and y.obj == data.train_ds.items[0].parent.name and str(y) == y.obj
    assert data.valid_ds.y[5] == data.valid_ds.items[5].parent.name and data.valid_ds.y.classes == data.classes
    assert data.train_ds.x.items == data.train_ds.items
    ax = x.show(y=y)
    assert ax.get_title() == y.obj
    assert x.resize(6).shape == (3, 6, 6)
    matplotlib.pyplot.close("all")


def test_np_random_seed_makes_the_chain_reproducible(digits):
    def build():
        np.random.seed(2)
        return ImageList.from_folder(digits / "train").split_by_rand_pct(0.2).label_from_folder()
    assert build().valid.x.items == build().valid.x.items


def test_add_test_folder_and_predictions_on_it(digits):
    lls = ImageList.from_folder(digits, include=["train"]).split_by_rand_pct(0.1, seed=0).label_from_folder()
    data = lls.add_test_folder("valid").transform(size=8).databunch(bs=64, seed=0, **FAST)
    assert len(data.test_ds) == 359 and str(data.test_ds.y[0]) == ""
    torch.manual_seed(0)
    learn = cnn_learner(data, tiny_arch, pretrained=False, silent=True)
    preds, _ = learn.get_preds(ds_type=DatasetType.Test)
    assert preds.shape == (359, 10)


def test_predict_returns_a_category_as_fastai(digits):
    data = (ImageList.from_folder(digits).split_by_folder().label_from_folder()
            .transform(size=8).databunch(bs=64, seed=0, **FAST)).normalize(imagenet_stats)
    torch.manual_seed(0)
    learn = cnn_learner(data, tiny_arch, pretrained=False, silent=True)
    learn.fit(1, 1e-2)
    pred_class, idx, probs = learn.predict(data.valid_ds.items[0])
    assert isinstance(pred_class, Category) and pred_class.obj == data.classes[int(idx)]
    assert probs.shape == (10,) and int(probs.argmax()) == int(idx)
    fig = learn.show_results(rows=2)
    assert len(fig.axes) == 4 and "\n" in fig.axes[0].get_title()
    matplotlib.pyplot.close("all")


def test_multi_label_end_to_end(digits):
    src = ImageList.from_folder(digits).split_by_folder().label_from_func(tags, label_delim=" ")
    data = src.transform(get_transforms(do_flip=False), size=8).databunch(bs=64, seed=0, **FAST)
    data.normalize(imagenet_stats)
    assert data.multi_label and data.classes == ["big", "even", "odd", "round", "small", "straight"]
    _, y = data.train_ds[0]
    assert isinstance(y, MultiCategory) and sorted(y.obj) == sorted(tags(data.train_ds.items[0]).split())
    torch.manual_seed(0)
    learn = cnn_learner(data, tiny_arch, pretrained=False, silent=True,
                        metrics=[accuracy_thresh, lambda p, t: fbeta(p, t, thresh=0.3)])
    assert isinstance(learn.loss_func, torch.nn.BCEWithLogitsLoss)
    learn.fit(2, 1e-2)
    assert learn.recorder.metrics[-1][0] > 0.6  # six tags, three present: above always-no
    label, hot, probs = learn.predict(data.valid_ds.items[0], thresh=0.3)
    assert isinstance(label, MultiCategory) and hot.tolist() == (probs > 0.3).float().tolist()
    assert label.obj == [c for c, h in zip(data.classes, hot) if h]
    assert ";" in data.show_batch(rows=2).axes[0].get_title()
    assert len(learn.show_results(rows=2).axes) == 4
    matplotlib.pyplot.close("all")


def test_regression_end_to_end(digits):
    src = ImageList.from_folder(digits).split_by_folder()
    data = (src.label_from_func(lambda fn: float(fn.parent.name), label_cls=FloatList)
            .transform(size=8).databunch(bs=64, seed=0, **FAST)).normalize(imagenet_stats)
    assert data.c == 1 and data.classes is None
    _, y = data.train_ds[0]
    assert isinstance(y, FloatItem) and float(y.data) == float(data.train_ds.items[0].parent.name)
    torch.manual_seed(0)
    learn = cnn_learner(data, tiny_arch, pretrained=False, silent=True)
    assert isinstance(learn.loss_func, torch.nn.MSELoss)
    learn.fit(2, 1e-2)
    value, out, _ = learn.predict(data.valid_ds.items[0])
    assert isinstance(value, FloatItem) and out.shape == (1,)
    assert learn.show_results(rows=2).axes[0].get_title().count("\n") == 1
    assert data.show_batch(rows=2).axes[0].get_title()
    matplotlib.pyplot.close("all")


def test_skip_bad_in_the_chain_drops_the_file_with_its_label(digits, tmp_path):
    bad = tmp_path / "bad" / "train" / "3"
    bad.mkdir(parents=True)
    (bad / "broken.png").write_bytes(b"not a png")
    files = ImageList([*ImageList.from_folder(digits / "train" / "3").items[:10], bad / "broken.png",
                       *ImageList.from_folder(digits / "valid" / "3").items[:3]], path=tmp_path)
    lls = files.split_by_idx([11, 12, 13]).label_from_folder()
    with pytest.raises(Exception, match="broken.png"):
        lls.transform(size=8).databunch(bs=4, **FAST)
    with pytest.warns(UserWarning, match="broken.png"):
        data = lls.databunch(bs=4, skip_bad=True, **FAST)
    assert len(data.train_ds) == 10 and bad / "broken.png" not in data.train_ds.items


def test_save_and_load_data_as_plain_json(digits, tmp_path):
    lls = (ImageList.from_folder(digits / "valid").split_by_rand_pct(0.3, seed=0)
           .label_from_func(tags, label_delim=" ").transform(get_transforms(max_rotate=5.0), size=8))
    lls.path = tmp_path
    file = lls.save("data.json")
    assert file.read_text().startswith("{")
    data = load_data(tmp_path, "data.json", bs=8, device="cpu", num_workers=0)
    assert data.size == (8, 8) and [repr(t) for t in data.ds_tfms[0]] == [repr(t) for t in lls.tfms[0]]
    data.path = tmp_path / "again"
    again = load_data(tmp_path / "again", data.save().name, bs=8, device="cpu", num_workers=0)
    assert again.train_ds.items == data.train_ds.items
    assert isinstance(data, ImageDataBunch) and data.multi_label and data.classes == lls.train.y.classes
    assert data.train_ds.items == lls.train.x.items and torch.equal(data.valid_ds.targets, lls.valid.y.targets)
    with pytest.raises(Exception, match="No saved data"):
        load_data(tmp_path, "missing.json")


def test_wrong_transform_settings_and_label_errors_are_named(digits):
    lls = ImageList.from_folder(digits / "valid").split_by_rand_pct(0.2, seed=0).label_from_folder()
    with pytest.raises(Exception, match="tfm_y"):
        lls.transform(size=8, tfm_y=True).databunch(**FAST)
    with pytest.raises(LabelError, match="matches no item"):
        ImageList.from_folder(digits / "valid").split_by_rand_pct(0.2, seed=0).label_from_re(r"/(x)\d")


def test_mnist_tiny_from_csv_chain():
    path = shared_path("data", "mnist_tiny")
    data = (ImageList.from_csv(path, "labels.csv").split_by_rand_pct(0.2, seed=0).label_from_df()
            .transform(size=16).databunch(bs=16, **FAST))
    assert data.c == 2 and len(data.train_ds) + len(data.valid_ds) == 1408


def test_planet_tiny_multi_label_chain():
    path = shared_path("data", "planet_tiny")
    np.random.seed(42)
    src = (ImageList.from_csv(path, "labels.csv", folder="train", suffix=".jpg")
           .split_by_rand_pct(0.2).label_from_df(label_delim=" "))
    data = src.transform(get_transforms(flip_vert=True, max_lighting=0.1, max_zoom=1.05, max_warp=0.0),
                         size=32).databunch(bs=8, **FAST).normalize(imagenet_stats)
    assert data.multi_label and "clear" in data.classes
    x, y = data.one_batch()
    assert x.shape == (8, 3, 32, 32) and y.shape == (8, data.c)
