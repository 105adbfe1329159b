"""A write that fails (disk full, I/O error, Ctrl-C) keeps the previous file under its name, leaves no
temporary behind, and says which path failed and how much room it needed. Writes are made to fail
by patching (`os.fsync`, where a full disk or a bad sector shows up on Linux, or the writer itself),
not by filling a disk."""
import errno
import os

import pytest
import torch
from image_fixtures import make_color_folder
from tiny_models import make_data, make_learner

from fastbase.callbacks.checkpoint import load_checkpoint, save_checkpoint
from fastbase.files import WriteFailedError, atomic_write
from fastbase.learner import load_learner
from fastbase.vision import ImageList
from fastbase.vision.feature_store import CacheTooBig, feature_storage
from fastbase.widgets.cleaning import CleanedTable, CleaningSet

SPEC = {"factory": "tiny_models:tiny_mlp", "kwargs": {"n_in": 8, "n_out": 2, "hidden": 16}}
FAILURES = {"ENOSPC": OSError(errno.ENOSPC, "No space left on device"),
            "EIO": OSError(errno.EIO, "Input/output error"),
            "Ctrl-C": KeyboardInterrupt()}


def writers(tmp_path):
    """kind -> (file, write): each writer fastbase has; every call writes different content."""
    learn = make_learner(make_data(n_train=32, n_valid=8), path=tmp_path, model_spec=SPEC)
    images = make_color_folder(tmp_path / "img", per_class=(2, 1), hw=(8, 8))
    lls = ImageList.from_folder(images).split_by_folder().label_from_folder()
    lls.path = tmp_path
    table = CleanedTable(CleaningSet(["a.png", "b.png"], ["cat", "dog"], ["cat", "dog"]), tmp_path,
                         tmp_path / "cleaned.csv")
    calls = iter(range(1000))

    def changed(write):
        def again():
            n = next(calls)
            with torch.no_grad():
                learn.model[3].bias += 1
            lls.train.y.classes = [f"class{n}", "other"]
            table.set_label("a.png", f"label{n}")
            return write(n)
        return again

    return {
        "export": (tmp_path / "export.pkl", changed(lambda n: learn.export())),
        "save": (tmp_path / "models" / "stage.pth", changed(lambda n: learn.save("stage"))),
        "checkpoint": (tmp_path / "ck.pth", changed(lambda n: save_checkpoint({"n": n}, tmp_path / "ck.pth"))),
        "data.save": (tmp_path / "data.json", changed(lambda n: lls.save("data.json"))),
        "cleaned csv": (tmp_path / "cleaned.csv", changed(lambda n: table.save())),
    }


def failing_fsync(error):
    def fsync(fd):
        raise error
    return fsync


@pytest.mark.parametrize("failure", list(FAILURES))
@pytest.mark.parametrize("kind", ["export", "save", "checkpoint", "data.save", "cleaned csv"])
def test_a_failed_write_keeps_the_previous_file(tmp_path, monkeypatch, kind, failure):
    file, write_again = writers(tmp_path)[kind]
    write_again()
    before = file.read_bytes()
    monkeypatch.setattr(os, "fsync", failing_fsync(FAILURES[failure]))
    expected = KeyboardInterrupt if failure == "Ctrl-C" else WriteFailedError
    with pytest.raises(expected) as caught:
        write_again()
    monkeypatch.undo()
    assert file.read_bytes() == before
    assert sorted(p.name for p in file.parent.iterdir() if p.name.startswith(f".{file.name}.")) == []
    if expected is WriteFailedError:
        message = str(caught.value)
        assert str(file) in message and "It needs" in message and "bytes are free" in message
        assert f"the previous {file.name} is unchanged" in message
        assert caught.value.errno == FAILURES[failure].errno
    assert write_again() == file and file.read_bytes() != before  # the same write works once the disk does


def test_a_disk_full_midway_through_an_export_names_the_bytes_needed(tmp_path, monkeypatch):
    learn = make_learner(make_data(n_train=32, n_valid=8), path=tmp_path, model_spec=SPEC)
    learn.export()
    weights = sum(v.numel() * v.element_size() for v in learn.model.state_dict().values())

    def half_then_full(obj, f, *args, **kwargs):
        with open(f, "wb") as out:
            out.write(b"PK\x03\x04" + bytes(100))
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", half_then_full)
    with pytest.raises(WriteFailedError, match=rf"export\.pkl: the disk is full\. It needs about {weights:,} bytes"):
        learn.export()
    monkeypatch.undo()
    assert load_learner(tmp_path).model is not None


def test_a_write_with_nothing_before_it_says_nothing_was_written(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "fsync", failing_fsync(OSError(errno.ENOSPC, "No space left on device")))
    with pytest.raises(WriteFailedError, match=r"at least 5 bytes .*no new\.txt was written"):
        atomic_write(tmp_path / "new.txt", lambda tmp: tmp.write_text("hello"))
    assert list(tmp_path.iterdir()) == []


def test_a_failed_checkpoint_write_leaves_the_previous_one_to_resume_from(tmp_path, monkeypatch):
    path = save_checkpoint({"w": torch.zeros(10)}, tmp_path / "ck.pth", keep=2)
    monkeypatch.setattr(os, "fsync", failing_fsync(OSError(errno.ENOSPC, "No space left on device")))
    with pytest.raises(WriteFailedError):
        save_checkpoint({"w": torch.ones(10)}, path, keep=2)
    monkeypatch.undo()
    state, used = load_checkpoint(path)
    assert used == path and torch.equal(state["w"], torch.zeros(10))


def test_a_memory_mapped_feature_cache_finds_a_full_disk_before_writing(tmp_path, monkeypatch):
    def full(fd, offset, length):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "posix_fallocate", full, raising=False)
    monkeypatch.setattr("sys.platform", "linux")
    file = tmp_path / "cache" / "train.bin"
    with pytest.raises(CacheTooBig, match=r"needs \d+ MB in .*train\.bin and the disk refused them"):
        feature_storage((1000, 512), torch.zeros(1), 1000 * 512 * 4, file=file)
    assert not file.exists()
