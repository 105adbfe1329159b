"""Cleaning a data set as in lesson 2: DatasetFormatter picks the images (top losses, similar pairs
through forward hooks), ImageCleaner shows them; the widget is driven headless through its dropdowns,
toggles and buttons, and cleaned.csv is read back and trained on with ImageDataBunch.from_csv."""
import csv
import importlib.util
import io
import shutil
import subprocess
import sys

import numpy as np
import PIL.Image
import pytest
import torch
from tiny_vision import noise_folder, noise_image, tiny_arch, tiny_learner

from fastbase.core import FastbaseError
from fastbase.data import DatasetType, imagenet_stats
from fastbase.interpret import ClassificationInterpretation
from fastbase.vision.data import ImageDataBunch
from fastbase.vision.learner import cnn_learner
from fastbase.widgets import (
    CleanedTable,
    CleaningError,
    CleaningSet,
    DatasetFormatter,
    ImageCleaner,
)
from fastbase.widgets.formatter import most_similar_pairs
from fastbase.widgets.image_cleaner import thumbnail

needs_ipywidgets = pytest.mark.skipif(importlib.util.find_spec("ipywidgets") is None,
                                      reason="ImageCleaner needs ipywidgets (pip install -e '.[widgets]')")

LAST_BODY_LAYER = [0, 5]  # tiny_arch's body: conv, bn, relu, conv, bn, relu


@pytest.fixture
def folder(tmp_path):
    """Noise images, 12 + 5 per class, and one validation bee that is a copy of a training ant."""
    root = noise_folder(tmp_path / "noise")
    shutil.copy(root / "train" / "ants" / "ants_0.png", root / "valid" / "bees" / "copy.png")
    return root


@pytest.fixture
def learn(folder):
    return tiny_learner(folder)


def read_rows(path):
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["name", "label"]
    return dict(rows[1:])


def names(files, root):
    return {fn.relative_to(root).as_posix() for fn in files}


# --- DatasetFormatter ------------------------------------------------------------------------------------
def test_from_toplosses_orders_the_validation_images_by_loss_highest_first(learn):
    ds, idxs = DatasetFormatter().from_toplosses(learn)
    losses = ClassificationInterpretation.from_learner(learn).losses
    assert ds.items == list(learn.data.valid_ds.items) and sorted(idxs) == list(range(len(ds)))
    assert losses[idxs].tolist() == sorted(losses.tolist(), reverse=True)
    assert [fn for fn, _ in ds.rest] == list(learn.data.train_ds.items)  # kept in cleaned.csv as they are
    assert ds.labels[0] == learn.data.classes[int(learn.data.valid_ds.targets[0])]


def test_from_toplosses_takes_n_imgs_and_the_training_set(learn):
    ds, idxs = DatasetFormatter().from_toplosses(learn, n_imgs=3, ds_type=DatasetType.Train)
    assert len(idxs) == 3 and ds.items == list(learn.data.train_ds.items)
    assert [fn for fn, _ in ds.rest] == list(learn.data.valid_ds.items)


def test_from_similars_puts_a_copy_across_the_split_first(learn, folder):
    ds, idxs = DatasetFormatter().from_similars(learn, LAST_BODY_LAYER, n_pairs=4)
    assert len(idxs) == 8 and not ds.rest  # training and validation images together
    assert names([ds.items[idxs[0]], ds.items[idxs[1]]], folder) == {"train/ants/ants_0.png", "valid/bees/copy.png"}


def test_from_similars_on_one_set_with_raw_activations(learn):
    ds, idxs = DatasetFormatter().from_similars(learn, LAST_BODY_LAYER, ds_type="valid", pool=None)
    assert ds.items == list(learn.data.valid_ds.items) and len(idxs) == 2 * len(ds)
    assert all(a < b for a, b in zip(idxs[::2], idxs[1::2]))


def test_from_similars_names_a_layer_path_the_model_does_not_have(learn):
    with pytest.raises(CleaningError) as err:
        DatasetFormatter().from_similars(learn, layer_ls=[0, 7, 2])
    message = str(err.value)
    assert "layer_ls=[0, 7, 2]" in message and "model[0] (SequentialEncoder) has no child 7" in message
    assert "5: ReLU" in message


def test_most_similar_pairs_agrees_with_the_full_matrix_across_chunks():
    features = torch.randn(23, 6, generator=torch.Generator().manual_seed(0))
    unit = torch.nn.functional.normalize(features, dim=1)
    sims = unit @ unit.T
    expected = sorted(((float(sims[i, j]), i, j) for j in range(23) for i in range(j)), reverse=True)[:10]
    pairs = most_similar_pairs(features, n_pairs=10, chunk=4)
    assert pairs == [(i, j) for _, i, j in expected]
    assert len(most_similar_pairs(features[:3])) == 3 and most_similar_pairs(features[:1]) == []


# --- ImageCleaner, driven from code ---------------------------------------------------------------------
@needs_ipywidgets
def test_cleaner_shows_a_page_with_labels_and_writes_every_image_to_the_csv(learn, folder):
    ds, idxs = DatasetFormatter().from_toplosses(learn)
    cleaner = ImageCleaner(ds, idxs, folder, batch_size=4)
    assert [c.file for c in cleaner.cards] == [ds.items[i] for i in idxs[:4]]
    assert [c.dropdown.value for c in cleaner.cards] == [ds.labels[i] for i in idxs[:4]]
    assert list(cleaner.cards[0].dropdown.options) == ["ants", "bees"]
    assert cleaner.cards[0].image.value[:2] == b"\xff\xd8"  # a JPEG thumbnail
    rows = read_rows(folder / "cleaned.csv")  # written at once, with the images not shown too
    assert len(rows) == len(learn.data.train_ds) + len(learn.data.valid_ds)
    assert rows["train/ants/ants_3.png"] == "ants"


@needs_ipywidgets
def test_delete_and_relabel_through_the_widgets_then_train_on_cleaned_csv(learn, folder):
    files_before = sorted(folder.rglob("*.png"))
    ds, idxs = DatasetFormatter().from_toplosses(learn)
    cleaner = ImageCleaner(ds, idxs, folder, batch_size=4)
    gone, moved = cleaner.cards[0].file, cleaner.cards[1].file
    new_label = "ants" if cleaner.cards[1].dropdown.value == "bees" else "bees"
    cleaner.cards[0].delete.value = True
    cleaner.cards[1].dropdown.value = new_label
    rows = read_rows(folder / "cleaned.csv")  # saved on each change, before any button
    assert gone.relative_to(folder).as_posix() not in rows and rows[moved.relative_to(folder).as_posix()] == new_label
    assert cleaner.deleted == [gone] and cleaner.relabelled == {moved: new_label}
    assert cleaner.cards[0].delete.button_style == "danger" and "1 deleted, 1 relabelled" in cleaner.status.value

    cleaner.next_button.click()
    assert [c.file for c in cleaner.cards] == [ds.items[i] for i in idxs[4:8]] and cleaner.page == 1
    assert sorted(folder.rglob("*.png")) == files_before  # no image file touched

    data = ImageDataBunch.from_csv(folder, csv_labels="cleaned.csv", size=16, bs=8, num_workers=0, seed=0)
    items = list(data.train_ds.items) + list(data.valid_ds.items)
    assert gone not in items and len(items) == len(files_before) - 1
    labels = dict(zip(items, [data.classes[int(t)] for t in [*data.train_ds.targets, *data.valid_ds.targets]]))
    assert labels[moved] == new_label
    retrained = cnn_learner(data.normalize(imagenet_stats), tiny_arch, pretrained=False, silent=True)
    retrained.fit(1)
    assert len(retrained.recorder.losses) == len(retrained.data.train_dl)


@needs_ipywidgets
def test_undoing_a_delete_puts_the_row_back(learn, folder):
    ds, idxs = DatasetFormatter().from_toplosses(learn)
    cleaner = ImageCleaner(ds, idxs, folder)
    name = cleaner.cards[2].file.relative_to(folder).as_posix()
    cleaner.cards[2].delete.value = True
    assert name not in read_rows(folder / "cleaned.csv")
    cleaner.cards[2].delete.value = False
    assert name in read_rows(folder / "cleaned.csv") and cleaner.deleted == []


@needs_ipywidgets
def test_pages_go_back_and_end_with_a_summary(learn, folder):
    ds, idxs = DatasetFormatter().from_toplosses(learn, n_imgs=7)
    cleaner = ImageCleaner(ds, idxs, folder, batch_size=5)
    assert cleaner.prev_button.disabled and len(cleaner.cards) == 5
    cleaner.next_button.click()
    assert len(cleaner.cards) == 2 and not cleaner.prev_button.disabled
    cleaner.next_button.click()
    assert cleaner.cards == [] and cleaner.next_button.disabled and "No more images" in cleaner.status.value
    cleaner.prev_button.click()
    cleaner.prev_button.click()
    assert [c.file for c in cleaner.cards] == [ds.items[i] for i in idxs[:5]]


@needs_ipywidgets
def test_duplicates_shows_pairs_and_skips_pairs_whose_image_was_deleted(folder, learn):
    ds = CleaningSet([folder / "train/ants/ants_0.png", folder / "valid/bees/copy.png", folder / "train/ants/ants_1.png"],
                     ["ants", "bees", "ants"], ["ants", "bees"])
    cleaner = ImageCleaner(ds, [0, 1, 2, 0, 2, 1], folder, duplicates=True, batch_size=1)
    assert [c.file.name for c in cleaner.cards] == ["ants_0.png", "copy.png"]
    assert len(cleaner.grid.children) == 1 and len(cleaner.grid.children[0].children) == 2  # one pair, side by side
    cleaner.cards[1].delete.value = True
    cleaner.next_button.click()
    assert [c.file.name for c in cleaner.cards] == ["ants_1.png", "ants_0.png"]
    cleaner.next_button.click()
    assert cleaner.cards == [] and cleaner.skipped == 1 and "1 pairs skipped" in cleaner.status.value
    assert "valid/bees/copy.png" not in read_rows(folder / "cleaned.csv")


@needs_ipywidgets
def test_a_second_session_carries_the_decisions_of_the_first(learn, folder):
    ds, idxs = DatasetFormatter().from_toplosses(learn)
    first = ImageCleaner(ds, idxs, folder)
    gone = first.cards[0].file
    first.cards[0].delete.value = True
    first.cards[1].dropdown.value = "ants" if first.cards[1].dropdown.value == "bees" else "bees"
    second = ImageCleaner(*DatasetFormatter().from_similars(learn, LAST_BODY_LAYER), folder, duplicates=True)
    assert second.deleted == [gone] and second.relabelled == first.relabelled
    assert "2 decisions carried" in second.status.value
    assert read_rows(folder / "cleaned.csv") == read_rows(first.csv_path)


@needs_ipywidgets
def test_a_csv_from_other_data_is_refused_not_overwritten(learn, folder):
    (folder / "cleaned.csv").write_text("name,label\nelsewhere/cat.png,cat\n")
    ds, idxs = DatasetFormatter().from_toplosses(learn)
    with pytest.raises(CleaningError, match="names none of these images"):
        ImageCleaner(ds, idxs, folder)
    assert (folder / "cleaned.csv").read_text() == "name,label\nelsewhere/cat.png,cat\n"
    assert ImageCleaner(ds, idxs, folder, csv_name="cleaned2.csv").csv_path == folder / "cleaned2.csv"


@needs_ipywidgets
def test_an_unreadable_image_gets_a_note_and_can_be_deleted(folder, tmp_path):
    broken = folder / "train" / "ants" / "broken.png"
    broken.write_bytes(b"not an image")
    ds = CleaningSet([broken, folder / "train/ants/ants_1.png"], ["ants", "ants"], ["ants", "bees"])
    cleaner = ImageCleaner(ds, [0, 1], folder)
    assert "cannot read this file" in cleaner.cards[0].image.value
    cleaner.cards[0].delete.value = True
    assert read_rows(folder / "cleaned.csv") == {"train/ants/ants_1.png": "ants"}


@needs_ipywidgets
def test_a_plain_data_set_is_cleaned_alone(learn, folder):
    cleaner = ImageCleaner(learn.data.valid_ds, [0, 1], folder)
    assert len(read_rows(cleaner.csv_path)) == len(learn.data.valid_ds)


@needs_ipywidgets
def test_bad_indexes_are_named(learn, folder):
    ds, _ = DatasetFormatter().from_toplosses(learn)
    with pytest.raises(CleaningError, match=r"positions \[99\] outside the data set, which has 11 images"):
        ImageCleaner(ds, [0, 99], folder)
    with pytest.raises(CleaningError, match="even length; got 3"):
        ImageCleaner(ds, [0, 1, 2], folder, duplicates=True)
    with pytest.raises(CleaningError, match="ImageCleaner relabels single-label data only|no labelled image files"):
        ImageCleaner(list(range(3)), [0], folder)


def test_a_failed_write_leaves_the_previous_csv(folder, monkeypatch):
    ds = CleaningSet([noise_image(folder / "train/ants/a.png", 1)], ["ants"], ["ants", "bees"])
    table = CleanedTable(ds, folder, folder / "cleaned.csv")
    table.save()
    before = (folder / "cleaned.csv").read_text()
    table.set_label(ds.items[0], "bees")
    monkeypatch.setattr(CleanedTable, "rows", lambda self: [("a.png", "bees"), 1 / 0])
    with pytest.raises(ZeroDivisionError):
        table.save()
    assert (folder / "cleaned.csv").read_text() == before
    assert [p.name for p in folder.iterdir() if p.name.startswith(".cleaned")] == []


def test_without_ipywidgets_the_cleaner_says_what_to_install(learn, folder, monkeypatch):
    monkeypatch.setitem(sys.modules, "ipywidgets", None)
    ds, idxs = DatasetFormatter().from_toplosses(learn)
    with pytest.raises(FastbaseError, match=r"pip install 'fastbase\[widgets\]'"):
        ImageCleaner(ds, idxs, folder)


def test_star_import_gives_the_lesson_2_names_without_loading_ipywidgets():
    code = ("import sys\nfrom fastbase.widgets import *\n"
            "assert DatasetFormatter and ImageCleaner and 'ipywidgets' not in sys.modules\nprint('ok')")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert result.stdout.strip() == "ok", result.stderr[-2000:]


def test_thumbnails_keep_the_aspect_and_enlarge_tiny_images(tmp_path):
    PIL.Image.fromarray(np.zeros((600, 800, 3), np.uint8)).save(tmp_path / "photo.jpg")
    PIL.Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "digit.png")
    assert PIL.Image.open(io.BytesIO(thumbnail(tmp_path / "photo.jpg"))).size == (150, 112)
    assert PIL.Image.open(io.BytesIO(thumbnail(tmp_path / "digit.png", size=96))).size == (96, 96)


def test_lesson_2_without_a_validation_set_ranks_the_training_set_unaugmented(folder):
    # the course's cleaning step: db = ImageList.from_folder(path).split_none()...; learn_cln = cnn_learner(db, ...)
    from fastbase.vision import ImageList, get_transforms
    db = (ImageList.from_folder(folder).split_none().label_from_folder().transform(get_transforms(), size=16)
          .databunch(bs=8, num_workers=0)).normalize(imagenet_stats)
    learn_cln = cnn_learner(db, tiny_arch, pretrained=False, silent=True)
    ds, idxs = DatasetFormatter().from_toplosses(learn_cln)
    assert ds.items == list(db.fix_dl.dataset.items) and sorted(idxs) == list(range(len(db.train_ds)))
    _, _, losses = learn_cln.get_preds(DatasetType.Fix, with_loss=True)  # in order, not augmented
    assert torch.equal(losses[idxs], losses.sort(descending=True, stable=True).values)
    assert DatasetFormatter().from_toplosses(learn_cln)[1] == idxs  # the same ranking again: no random crop
    ds, idxs = DatasetFormatter().from_similars(learn_cln, LAST_BODY_LAYER, n_pairs=3)
    assert len(ds) == len(db.train_ds) and len(idxs) == 6 and max(idxs) < len(ds)
