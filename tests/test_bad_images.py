"""Bad input fails early, with a typed error that names the files and says what to do."""
import io

import numpy as np
import PIL.Image
import pytest
from image_fixtures import COLORS, make_color_folder, save_image

from fastbase.data import BadFilesError, DataError, EmptyDatasetError, LabelError
from fastbase.vision.data import ImageDataBunch
from fastbase.vision.image import check_image, get_image_files, open_image

FAST = {"num_workers": 0, "device": "cpu", "size": 8}
pytestmark = pytest.mark.filterwarnings("ignore:The image decoding:DeprecationWarning")  # torchvision 0.29


def jpeg_bytes(hw=(32, 32)):
    buf = io.BytesIO()
    rng = np.random.default_rng(0)
    PIL.Image.fromarray(rng.integers(0, 255, (*hw, 3), dtype=np.uint8)).save(buf, "JPEG")
    return buf.getvalue()


def png_bytes(hw=(32, 32)):
    buf = io.BytesIO()
    PIL.Image.fromarray(np.zeros((*hw, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


BAD_FILES = {  # name -> (contents, words the reason must contain)
    "notes.png": (b"this is text, not a picture", "not an image"),
    "cut.jpg": (jpeg_bytes()[:600], "truncated"),
    "cut.png": (png_bytes()[:60], "truncated"),
    "empty.jpg": (b"", "empty (0 bytes)"),
}


@pytest.fixture
def folder(tmp_path):
    return make_color_folder(tmp_path / "data", per_class=(4, 2), hw=(12, 12))


def add_bad_files(folder, names=BAD_FILES):
    for name in names:
        (folder / "train" / "red" / name).write_bytes(BAD_FILES[name][0])


@pytest.mark.parametrize("name", BAD_FILES)
def test_check_image_says_why_a_file_is_unusable(tmp_path, name):
    fn = tmp_path / name
    fn.write_bytes(BAD_FILES[name][0])
    assert BAD_FILES[name][1] in check_image(fn)


def test_one_pixel_images_are_refused(tmp_path):
    assert check_image(save_image(tmp_path / "dot.png", (1, 1))) == "is only 1x1 pixels"
    assert check_image(save_image(tmp_path / "ok.png", (2, 3))) is None
    assert check_image(tmp_path / "missing.png") == "does not exist"


def test_creation_lists_every_bad_file_and_what_to_do(folder):
    add_bad_files(folder)
    save_image(folder / "train" / "red" / "dot.png", (1, 1))
    with pytest.raises(BadFilesError) as info:
        ImageDataBunch.from_folder(folder, **FAST)
    message = str(info.value)
    assert "5 of the 17 training files cannot be used" in message and "skip_bad=True" in message
    for name in [*BAD_FILES, "dot.png"]:
        assert name in message
    assert {fn.name for fn, _ in info.value.bad} == {*BAD_FILES, "dot.png"}


def test_skip_bad_leaves_them_out_with_one_warning(folder):
    add_bad_files(folder)
    with pytest.warns(UserWarning, match="Leaving out 4 unreadable training") as record:
        data = ImageDataBunch.from_folder(folder, skip_bad=True, **FAST)
    assert len(record) == 1 and "cut.jpg" in str(record[0].message)
    assert len(data.train_ds) == 12 and data.classes == sorted(COLORS)
    assert len(list(data.train_dl)) == 1


def test_without_the_check_a_bad_file_fails_when_read_naming_it(folder):
    add_bad_files(folder, ["cut.jpg"])
    data = ImageDataBunch.from_folder(folder, check_images=False, bs=13, **FAST)
    with pytest.raises(DataError, match=r"cut\.jpg.*check_images=True"):
        list(data.fix_dl)


def test_empty_class_folder_is_named(folder):
    (folder / "train" / "purple").mkdir()
    (folder / "train" / "purple" / "readme.txt").write_text("todo")
    with pytest.raises(DataError, match="purple.*hold no images"):
        ImageDataBunch.from_folder(folder, **FAST)
    assert "purple" not in ImageDataBunch.from_folder(folder, skip_bad=True, **FAST).classes


def test_missing_folders_are_named_with_what_is_there(folder):
    with pytest.raises(DataError, match=r"No validation folder .*val.*holds: train, valid.*valid_pct"):
        ImageDataBunch.from_folder(folder, valid="val", **FAST)
    with pytest.raises(DataError, match="No training folder"):
        ImageDataBunch.from_folder(folder, train="training", **FAST)


def test_images_outside_class_folders_are_named(folder):
    save_image(folder / "train" / "loose.png")
    with pytest.raises(LabelError, match="loose.png.*outside any class folder"):
        ImageDataBunch.from_folder(folder, **FAST)


def test_validation_classes_the_training_set_lacks(folder):
    save_image(folder / "valid" / "purple" / "p0.png", (12, 12))
    with pytest.raises(LabelError, match=r"class\(es\) purple that the training set lacks.*p0\.png"):
        ImageDataBunch.from_folder(folder, **FAST)
    data = ImageDataBunch.from_folder(folder, classes=[*sorted(COLORS), "purple"], **FAST)
    assert data.c == 4


def test_a_pattern_that_matches_no_file(folder):
    fnames = get_image_files(folder / "train")
    with pytest.raises(LabelError, match="matches no file name"):
        ImageDataBunch.from_name_re(folder, fnames, r"/(\d+)\.jpg$", **FAST)


def test_a_pattern_that_matches_only_some_files_names_the_others(folder):
    fnames = get_image_files(folder / "train")
    with pytest.raises(LabelError, match=r"only some file names: 8 of 12 do not match, like .*blue_0\.png.*and 3 more"):
        ImageDataBunch.from_name_re(folder, fnames, r"/(red)_\d\.png$", **FAST)
    with pytest.raises(LabelError, match="no group"):
        ImageDataBunch.from_name_re(folder, fnames, r"\.png$", **FAST)


def test_label_func_errors_name_the_file(folder):
    fnames = get_image_files(folder / "train")
    with pytest.raises(LabelError, match=r"KeyError.*blue_0\.png"):
        ImageDataBunch.from_name_func(folder, fnames, lambda fn: {}[fn.name], **FAST)
    with pytest.raises(LabelError, match="12 file names but 2 labels"):
        ImageDataBunch.from_lists(folder, fnames, ["a", "b"], **FAST)


def test_csv_naming_missing_files(folder):
    rows = [f"train/{c}/{c}_{i}.png,{c}" for c in COLORS for i in range(4)] + ["train/red/gone.png,red",
                                                                                "train/red/lost.png,red"]
    (folder / "labels.csv").write_text("name,label\n" + "\n".join(rows) + "\n")
    with pytest.raises(LabelError, match=r"2 of the 14 files named in .*labels\.csv do not exist.*gone\.png"):
        ImageDataBunch.from_csv(folder, **FAST)
    with pytest.warns(UserWarning) as caught:  # one warning per split that lost a file
        data = ImageDataBunch.from_csv(folder, skip_bad=True, valid_pct=0.25, **FAST)
    said = "\n".join(str(w.message) for w in caught)
    assert "gone.png" in said and "lost.png" in said
    assert len(data.train_ds) + len(data.valid_ds) == 12


def test_csv_with_too_few_columns_or_unknown_column(folder):
    (folder / "labels.csv").write_text("name;label\ntrain/red/red_0.png;red\n")
    with pytest.raises(LabelError, match="fewer than 2 columns.*delimiter"):
        ImageDataBunch.from_csv(folder, **FAST)
    with pytest.raises(DataError, match="No column 'file'"):
        ImageDataBunch.from_csv(folder, fn_col="file", **FAST)


def test_empty_training_set_fails_at_creation(folder):
    (folder / "labels.csv").write_text("name,label\n")
    with pytest.raises(EmptyDatasetError, match="training set is empty"):
        ImageDataBunch.from_csv(folder, **FAST)
    with pytest.raises(EmptyDatasetError):
        ImageDataBunch.from_lists(folder, [], [], **FAST)


def test_predicting_on_a_bad_file_says_so(folder, tmp_path):
    data = ImageDataBunch.from_folder(folder, **FAST)
    (tmp_path / "bad.jpg").write_bytes(b"")
    with pytest.raises(DataError, match="bad.jpg: it is empty"):
        data.one_item(tmp_path / "bad.jpg")
    with pytest.raises(DataError, match="Cannot open"):
        open_image(tmp_path / "bad.jpg")


def test_validation_transforms_must_be_deterministic(folder):
    from fastbase.vision.transforms import Flip
    with pytest.raises(DataError, match="deterministic"):
        ImageDataBunch.from_folder(folder, ds_tfms=([], [Flip()]), **FAST)
    with pytest.raises(DataError, match="get_transforms"):
        ImageDataBunch.from_folder(folder, ds_tfms=[Flip()], **FAST)
