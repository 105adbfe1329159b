"""ImageDataBunch: the factories agree, splits are reproducible, batches are what a model expects,
labels stay with their images, and prediction/export work on single items."""
import csv
import re
import sys

import matplotlib
import numpy as np
import PIL.Image
import pytest
import torch
from image_fixtures import (  # noqa: F401
    COLORS,
    color_folder_fixture,
    digits_fixture,
    digits_labels,
    make_color_folder,
    save_image,
)

from fastbase.core import Path
from fastbase.data import DataError, DatasetType, imagenet_stats
from fastbase.vision.data import ImageDataBunch
from fastbase.vision.dataset import CANVAS_SCALE, ImageDataset
from fastbase.vision.image import (
    Image,
    ResizeMethod,
    get_image_files,
    load_image,
    open_image,
)
from fastbase.vision.transforms import BatchAugment, ToFloat, get_transforms

matplotlib.use("Agg")
pytestmark = pytest.mark.filterwarnings("ignore:The image decoding:DeprecationWarning")  # torchvision 0.29
FAST = {"num_workers": 0, "device": "cpu"}
NO_LIGHT = {"max_lighting": 0.0}  # colours must survive: geometry only


def contents(data, ds_type):
    """{(file, label)} of a loader's dataset."""
    ds = data.dl(ds_type).dataset
    return {(str(fn), ds.label_text(y)) for fn, y in zip(ds.items, ds.targets)}


def test_from_folder_on_the_digits(digits):
    data = ImageDataBunch.from_folder(digits, size=16, bs=64, **FAST)
    assert data.classes == [str(i) for i in range(10)] and data.c == 10 and not data.multi_label
    rows = digits_labels(digits)
    assert len(data.train_ds) == sum(n.startswith("train/") for n, _ in rows) == 1438
    assert len(data.valid_ds) == sum(n.startswith("valid/") for n, _ in rows) == 359
    x, y = data.one_batch()
    assert x.shape == (64, 3, 16, 16) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert 0 <= x.min() and x.max() <= 1
    assert torch.equal(x[:, 0], x[:, 1]) and torch.equal(x[:, 1], x[:, 2])  # gray became 3 equal channels


def test_every_factory_gives_the_same_items_classes_and_split(digits):
    rows = digits_labels(digits)
    fnames = [digits / name for name, _ in rows]
    common = {"valid_pct": 0.2, "seed": 7, "size": 8, **FAST}
    pd = pytest.importorskip("pandas")
    bunches = {
        "csv": ImageDataBunch.from_csv(digits, **common),
        "df": ImageDataBunch.from_df(digits, pd.read_csv(digits / "labels.csv"), **common),
        "re": ImageDataBunch.from_name_re(digits, fnames, r"/(\d)/\d+\.png$", **common),
        "func": ImageDataBunch.from_name_func(digits, fnames, lambda fn: fn.parent.name, **common),
        "lists": ImageDataBunch.from_lists(digits, fnames, [label for _, label in rows], **common),
    }
    reference = bunches.pop("csv")
    assert len(reference.valid_ds) == int(0.2 * len(rows))
    for name, data in bunches.items():
        assert data.classes == reference.classes, name
        assert contents(data, DatasetType.Train) == contents(reference, DatasetType.Train), name
        assert contents(data, DatasetType.Valid) == contents(reference, DatasetType.Valid), name


def test_random_split_is_reproducible_from_seed(color_folder):
    def split(seed):
        data = ImageDataBunch.from_folder(color_folder, valid_pct=0.25, seed=seed, size=8, **FAST)
        return contents(data, DatasetType.Valid)

    assert split(1) == split(1) and split(1) != split(2)
    assert len(split(1)) == int(0.25 * 18)


def test_from_csv_without_pandas_and_with_options(color_folder, monkeypatch):
    monkeypatch.setitem(sys.modules, "pandas", None)  # `import pandas` now fails
    files = sorted(get_image_files(color_folder / "train"))
    with open(color_folder / "labels.tsv", "w", newline="") as f:
        writer = csv.writer(f, delimiter="\t")
        writer.writerow(["label", "file"])
        writer.writerows([fn.parent.name, fn.relative_to(color_folder / "train").with_suffix("").as_posix()]
                         for fn in files)
    data = ImageDataBunch.from_csv(color_folder, folder="train", csv_labels="labels.tsv", delimiter="\t",
                                   fn_col="file", label_col="label", suffix=".png", valid_pct=0.0, size=8, **FAST)
    assert data.classes == sorted(COLORS) and len(data.train_ds) == len(files)
    with pytest.raises(DataError, match="pandas"):
        ImageDataBunch.from_df(color_folder, object())


def test_multi_label_with_label_delim(tmp_path):
    tags = {"a.png": "red round", "b.png": "blue", "c.png": "red blue", "d.png": "round", "e.png": "blue round"}
    for name in tags:
        save_image(tmp_path / "imgs" / name, (12, 12), (10, 20, 30))
    (tmp_path / "labels.csv").write_text("name,tags\n" + "".join(f"{n},{t}\n" for n, t in tags.items()))
    data = ImageDataBunch.from_csv(tmp_path, folder="imgs", label_delim=" ", valid_pct=0.0, size=8, bs=5, **FAST)
    assert data.multi_label and data.classes == ["blue", "red", "round"] and data.c == 3
    ds = data.train_ds
    row = ds.items.index(tmp_path / "imgs" / "c.png")
    assert ds.targets.dtype == torch.float32 and ds.targets[row].tolist() == [1.0, 1.0, 0.0]
    assert ds.label_text(ds.targets[row]) == "blue;red"
    _, y = data.one_batch()
    assert y.shape == (5, 3) and y.dtype == torch.float32


def test_labels_stay_with_their_images_through_augmentation(color_folder):
    data = ImageDataBunch.from_folder(color_folder, ds_tfms=get_transforms(max_rotate=45, max_warp=0.4, **NO_LIGHT),
                                      size=16, bs=9, seed=0, **FAST)
    for ds_type in (DatasetType.Train, DatasetType.Valid, DatasetType.Fix):
        for x, y in data.dl(ds_type):
            colours = x.mean(dim=(2, 3)) * 255  # solid colours survive any geometry with reflection padding
            for c, label in zip(colours, y):
                assert torch.allclose(c, torch.tensor(COLORS[data.classes[label]], dtype=torch.float), atol=1.0)


def test_training_batches_are_augmented_once_and_validation_ones_not(color_folder, monkeypatch):
    import torch.nn.functional as F
    calls, original = [], F.grid_sample
    monkeypatch.setattr(F, "grid_sample", lambda *a, **k: calls.append(1) or original(*a, **k))
    data = ImageDataBunch.from_folder(color_folder, ds_tfms=get_transforms(), size=16, bs=6, **FAST)
    assert isinstance(data.train_dl.tfms[0], BatchAugment) and isinstance(data.valid_dl.tfms[0], ToFloat)
    assert data.train_ds.canvas and not data.fix_dl.dataset.canvas
    n_train = sum(1 for _ in data.train_dl)
    assert len(calls) == n_train == 3
    list(data.valid_dl), list(data.fix_dl)
    assert len(calls) == n_train
    first, second = (torch.cat([x for x, _ in data.valid_dl]) for _ in range(2))
    assert torch.equal(first, second)


def test_training_canvas_keeps_the_whole_image_at_the_validation_scale(color_folder):
    data = ImageDataBunch.from_folder(color_folder, ds_tfms=get_transforms(), size=16, **FAST)
    x, _, src = data.train_ds.raw_item(0)  # a 20 x 28 image: resized to cover 16 x 16 it is 16 x 22
    side = int(np.ceil(16 * CANVAS_SCALE))
    assert x.dtype == torch.uint8 and x.shape == (3, side, side) and src.tolist() == [16, 22] and side >= 22
    squished = data.train_ds.new(resize_method=ResizeMethod.SQUISH)
    x, _, src = squished.raw_item(0)  # PAD and SQUISH: the whole image squished into the output size
    assert x.shape == (3, 16, 16) and src.tolist() == [20, 28]
    x, _ = data.train_ds[0]  # what users see: the deterministic resize, as floats
    assert x.shape == (3, 16, 16) and x.dtype == torch.float32


@pytest.mark.parametrize("size", [12, (10, 14)])
def test_size_as_int_or_height_width(color_folder, size):
    data = ImageDataBunch.from_folder(color_folder, ds_tfms=get_transforms(), size=size, bs=4, **FAST)
    hw = (size, size) if isinstance(size, int) else size
    assert data.one_batch()[0].shape[-2:] == hw and data.one_batch(DatasetType.Valid)[0].shape[-2:] == hw


def three_stripes(path, mode=None):
    """A 12x36 image: blue, red, green thirds left to right."""
    a = np.zeros((12, 36, 3), dtype=np.uint8)
    a[:, :12], a[:, 12:24], a[:, 24:] = COLORS["blue"], COLORS["red"], COLORS["green"]
    return save_image(path, array=a)


@pytest.mark.parametrize("method", list(ResizeMethod))
def test_resize_methods_on_validation_images(tmp_path, method):
    for split in ("train", "valid"):
        three_stripes(tmp_path / split / "s" / "x.png")
    data = ImageDataBunch.from_folder(tmp_path, size=12, resize_method=method, padding_mode="zeros", **FAST)
    x = (data.one_batch(DatasetType.Valid)[0][0] * 255).round()
    if method == ResizeMethod.CROP:  # the red centre third
        assert (x[0] == 255).all() and (x[2] == 0).all()
    elif method == ResizeMethod.PAD:  # the whole strip, 4 rows high, with zero rows above and below
        assert (x[:, :4] == 0).all() and (x[:, -4:] == 0).all() and x[2, 5, 0] == 255 and x[1, 5, -1] == 255
    else:  # squished: all three colours side by side
        assert x[2, :, 0].min() == 255 and x[0, :, 6].min() == 255 and x[1, :, -1].min() == 255


def test_normalize_and_denorm_round_trip_on_images(color_folder):
    data = ImageDataBunch.from_folder(color_folder, test="valid", size=8, bs=9, **FAST)
    raw = {t: data.one_batch(t)[0] for t in (DatasetType.Valid, DatasetType.Test, DatasetType.Fix)}
    assert data.normalize(imagenet_stats) is data
    for t, x in raw.items():
        assert torch.allclose(data.one_batch(t, denorm=True)[0], x, atol=1e-5)
        assert not torch.allclose(data.one_batch(t)[0], x, atol=1e-2)


def test_show_batch_draws_a_grid_with_labels(color_folder):
    data = ImageDataBunch.from_folder(color_folder, ds_tfms=get_transforms(), size=8, bs=6, **FAST)
    fig = data.normalize(imagenet_stats).show_batch(rows=2)
    assert isinstance(fig, matplotlib.figure.Figure) and len(fig.axes) == 4
    assert {ax.get_title() for ax in fig.axes} <= set(COLORS) and fig.axes[0].get_title()
    fig = data.show_batch(rows=3, ds_type=DatasetType.Valid)
    assert len(fig.axes) == 9 and len([ax for ax in fig.axes if ax.images]) == 6  # a batch of 6
    matplotlib.pyplot.close("all")


def test_add_test_takes_file_names_and_folders(color_folder):
    data = ImageDataBunch.from_folder(color_folder, size=8, bs=4, **FAST).normalize(imagenet_stats)
    files = get_image_files(color_folder / "valid")[:5]
    data.add_test(files)
    assert len(data.test_ds) == 5 and not data.test_ds.labelled
    x, y = data.one_batch(DatasetType.Test)
    assert x.shape == (4, 3, 8, 8) and (y == 0).all()
    data.add_test(color_folder / "valid")
    assert len(data.test_ds) == 9


def test_one_item_matches_the_validation_pipeline(color_folder):
    data = ImageDataBunch.from_folder(color_folder, ds_tfms=get_transforms(), size=8, **FAST)
    data.normalize(imagenet_stats)
    fn = data.valid_ds.items[0]
    expected = data.one_batch(DatasetType.Valid)[0][:1]
    for item in (fn, str(fn), PIL.Image.open(fn), open_image(fn), open_image(fn).data):
        x, _ = data.one_item(item)
        assert x.shape == (1, 3, 8, 8) and torch.allclose(x, expected, atol=1e-5), type(item)
    with pytest.raises(DataError, match="3 x H x W"):
        data.one_item(torch.zeros(2, 4, 4, 4))


def test_export_state_round_trip_for_prediction(color_folder):
    data = ImageDataBunch.from_folder(color_folder, size=(8, 6), resize_method=ResizeMethod.PAD,
                                      padding_mode="border", **FAST).normalize(imagenet_stats)
    state = data.export_state()
    assert state["type"] == "fastbase.vision.data:ImageDataBunch" and state["classes"] == sorted(COLORS)
    assert state["size"] == [8, 6] and state["resize_method"] == "PAD" and state["padding_mode"] == "border"
    torch.save(state, color_folder / "state.pt")
    loaded = ImageDataBunch.load_export_state(torch.load(color_folder / "state.pt", weights_only=True), "cpu")
    assert loaded.inference_only and loaded.classes == data.classes and loaded.c == 3
    fn = data.valid_ds.items[4]
    assert torch.allclose(loaded.one_item(fn)[0], data.one_item(fn)[0])


def test_tta_loader_zooms_the_items_in_order(color_folder):
    data = ImageDataBunch.from_folder(color_folder, ds_tfms=get_transforms(), size=8, bs=4, **FAST)
    tta = data.tta_dl(DatasetType.Valid, scale=1.5)
    ys = torch.cat([y for _, y in tta])
    assert torch.equal(ys, data.valid_ds.targets) and tta.tfms[0].tfms[-1].params["min_zoom"] == 1.5


def test_get_image_files_is_sorted_recursive_and_skips_hidden(tmp_path):
    for name in ("b/2.png", "a/1.jpg", "a/sub/3.png", ".hidden/4.png", "a/._5.png", "a/notes.txt", "c.PNG"):
        save_image(tmp_path / name, fmt="PNG") if name.endswith(("png", "jpg", "PNG")) else \
            (tmp_path / name).write_text("x")
    files = get_image_files(tmp_path)
    assert [f.relative_to(tmp_path).as_posix() for f in files] == ["a/1.jpg", "a/sub/3.png", "b/2.png", "c.PNG"]
    assert all(isinstance(f, Path) for f in files)
    assert len(get_image_files(tmp_path, recurse=False)) == 1
    assert len(get_image_files(tmp_path, folders=["a"])) == 2
    with pytest.raises(DataError, match="holds"):
        get_image_files(tmp_path, folders=["nope"])


@pytest.mark.parametrize("mode", ["L", "LA", "RGBA", "P", "CMYK", "I;16", "1"])
def test_every_mode_becomes_rgb_uint8(tmp_path, mode):
    a = np.zeros((6, 5, 3), dtype=np.uint8)
    a[:, :, :] = 200
    img = PIL.Image.fromarray(a).convert(mode) if mode != "I;16" else \
        PIL.Image.fromarray(np.full((6, 5), 51400, dtype=np.uint16))
    fn = tmp_path / f"x.{'jpg' if mode == 'CMYK' else 'png'}"
    img.save(fn)
    x, hw = load_image(fn)
    assert x.dtype == torch.uint8 and x.shape == (3, 6, 5) and hw == (6, 5)
    assert abs(int(x.float().mean()) - 200) <= 56  # '1' thresholds to 255; the rest stay near 200


def test_exif_orientation_is_applied(tmp_path):
    a = np.zeros((10, 20, 3), dtype=np.uint8)
    a[:, :10] = 255  # left half white
    exif = PIL.Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    PIL.Image.fromarray(a).save(tmp_path / "turned.jpg", exif=exif, quality=95)
    x, hw = load_image(tmp_path / "turned.jpg")
    assert x.shape == (3, 20, 10) and hw == (20, 10)
    assert x[:, :8].float().mean() > 200 and x[:, -8:].float().mean() < 50  # white now on top
    assert open_image(tmp_path / "turned.jpg").size == (20, 10)


def test_large_jpegs_decode_at_reduced_scale(tmp_path):
    save_image(tmp_path / "big.jpg", (600, 800), (90, 120, 150))
    x, hw = load_image(tmp_path / "big.jpg", (64, 64), ResizeMethod.CROP)
    assert hw == (600, 800) and x.shape[1] < 600 and x.shape[1] >= 64 and x.shape[2] >= 64
    x, hw = load_image(tmp_path / "big.jpg", (400, 400), ResizeMethod.CROP)
    assert x.shape == (3, 600, 800)  # no smaller scale covers the target


def test_open_image_gives_a_displayable_image(color_folder, tmp_path):
    img = open_image(color_folder / "train" / "red" / "red_0.png")
    assert isinstance(img, Image) and img.shape == (3, 20, 28) and img.data.max() == 1.0
    assert re.match(r"Image\(3 x 20 x 28\)", repr(img))
    ax = img.show(title="red")
    assert ax.get_title() == "red"
    matplotlib.pyplot.close("all")


def test_images_of_different_sizes_need_a_size(tmp_path):
    make_color_folder(tmp_path, per_class=(2, 1), hw=(10, 10))
    save_image(tmp_path / "train" / "red" / "big.png", (12, 12), COLORS["red"])
    data = ImageDataBunch.from_folder(tmp_path, bs=16, **FAST)
    with pytest.raises(DataError, match="size="):
        data.one_batch()


def test_dataset_repr_and_len(color_folder):
    ds = ImageDataBunch.from_folder(color_folder, size=8, **FAST).train_ds
    assert isinstance(ds, ImageDataset) and len(ds) == 18
    assert repr(ds) == "ImageDataset(18 items, 3 classes, size=(8, 8), cached 0/18)"
    ds[0]  # what users see (no canvas) is not what the loader caches
    ds.raw_item(0)
    assert repr(ds.new(cache=False)) == "ImageDataset(18 items, 3 classes, size=(8, 8))" and ds.cache.n_filled == 1
