"""Every file fastbase reads back (exports, model saves, checkpoints, data.save files, label CSVs)
refuses damage with an error that names the file, its size and what is wrong, before any of it is
used: empty, cut short, foreign, one byte flipped, written by a newer fastbase."""
import pytest
import torch
from image_fixtures import make_color_folder
from tiny_models import make_data, make_learner

from fastbase.callbacks.checkpoint import Checkpoint, CheckpointError
from fastbase.cli import main
from fastbase.data import DataError
from fastbase.data.label_lists import load_data
from fastbase.export import UnsafeFileError
from fastbase.file_checks import FILE_FORMAT, DamagedFileError, state_digest
from fastbase.learner import load_learner
from fastbase.vision import ImageList
from fastbase.vision.label_table import read_csv_table

SPEC = {"factory": "tiny_models:tiny_mlp", "kwargs": {"n_in": 8, "n_out": 2, "hidden": 16}}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A trained tiny Learner's export and model save, as bytes, and the last layer's weights."""
    folder = tmp_path_factory.mktemp("files")
    data = make_data()
    data.normalize()
    learn = make_learner(data, path=folder, model_spec=SPEC)
    learn.fit(1, lr=1e-2)
    weight = learn.model[3].weight.detach().clone()
    return {"export": learn.export().read_bytes(), "save": learn.save("stage").read_bytes(), "weight": weight}


def readers(tmp_path):
    """kind -> (file name, function that reads it the way a user would)."""
    learn = make_learner(path=tmp_path, model_spec=SPEC)
    return {"export": ("export.pkl", lambda f: load_learner(f)),
            "save": ("models/stage.pth", lambda f: learn.load("stage"))}


def flip_in_weights(raw: bytes, weight: torch.Tensor, tmp=None) -> bytes:
    """`raw` with one bit flipped inside the stored bytes of `weight`: the model would silently change."""
    stored = weight.numpy().tobytes()
    at = raw.find(stored)
    assert at > 0, "the weights are stored as they are in memory"
    damaged = bytearray(raw)
    damaged[at + len(stored) // 2] ^= 0x04
    return bytes(damaged)


def newer(raw: bytes, tmp_path) -> bytes:
    """The same file as a later fastbase, with a higher file format, would write it."""
    scratch = tmp_path / "scratch.pkl"
    scratch.write_bytes(raw)
    state = torch.load(scratch, weights_only=True)
    state["file_format"] = FILE_FORMAT + 1
    state["sha256"] = state_digest(state)
    torch.save(state, scratch)
    return scratch.read_bytes()


DAMAGE = {
    "empty": (lambda raw, weight, tmp: b"", r"\(0 bytes\): it is empty"),
    "cut short": (lambda raw, weight, tmp: raw[: len(raw) // 2], r"bytes\): it is cut short"),
    "text": (lambda raw, weight, tmp: b"hello, world\n", r"\(13 bytes\): it is not a fastbase file \(a text file"),
    "seven bytes": (lambda raw, weight, tmp: b"1234567", r"\(7 bytes\): it is not a fastbase file"),
    "foreign binary": (lambda raw, weight, tmp: bytes(range(256)), r"\(256 bytes\): it is not a fastbase file"),
    "flipped byte": (flip_in_weights, r"bytes\) is damaged: its content does not match the SHA-256"),
    "newer": (lambda raw, weight, tmp: newer(raw, tmp), r"written by a newer fastbase"),
}


@pytest.mark.parametrize("kind", ["export", "save"])
@pytest.mark.parametrize("damage", list(DAMAGE))
def test_a_damaged_weight_file_is_named_with_its_size_and_what_is_wrong(files, tmp_path, kind, damage):
    name, read = readers(tmp_path)[kind]
    spoil, message = DAMAGE[damage]
    file = tmp_path / name
    file.parent.mkdir(parents=True, exist_ok=True)
    file.write_bytes(spoil(files[kind], files["weight"], tmp_path))
    with pytest.raises(DamagedFileError, match=message) as caught:
        read(file)
    assert str(file) in str(caught.value)


def test_an_intact_file_still_loads_and_plain_torch_load_still_reads_it(files, tmp_path):
    (tmp_path / "export.pkl").write_bytes(files["export"])
    assert torch.equal(load_learner(tmp_path).model[3].weight, files["weight"])
    state = torch.load(tmp_path / "export.pkl", weights_only=True, mmap=True)
    assert state["file_format"] == FILE_FORMAT and len(state["sha256"]) == 64


def test_a_file_without_a_digest_from_an_older_fastbase_loads(files, tmp_path):
    file = tmp_path / "export.pkl"
    file.write_bytes(files["export"])
    state = torch.load(file, weights_only=True)
    del state["sha256"], state["file_format"]
    torch.save(state, file)
    assert torch.equal(load_learner(file).model[3].weight, files["weight"])


def test_a_file_that_names_code_is_still_refused_as_unsafe(tmp_path):
    torch.save({"model_spec": Checkpoint(), "state_dict": {}, "data": {}}, tmp_path / "export.pkl")
    with pytest.raises(UnsafeFileError, match=r"names Python code \(fastbase.callbacks.checkpoint.Checkpoint\)"):
        load_learner(tmp_path)


@pytest.mark.parametrize("damage", ["empty", "text", "flipped byte"])
def test_fastbase_predict_exits_2_on_a_damaged_export(files, tmp_path, capsys, damage):
    file = tmp_path / "export.pkl"
    file.write_bytes(DAMAGE[damage][0](files["export"], files["weight"], tmp_path))
    assert main(["predict", str(file), str(tmp_path)]) == 2
    assert str(file) in capsys.readouterr().err


# --- checkpoints: resume falls back to the previous good one --------------------------------------
@pytest.mark.parametrize("damage", ["empty", "cut short", "flipped byte"])
def test_resume_true_falls_back_to_the_previous_checkpoint_and_says_why(tmp_path, damage):
    learn = make_learner(make_data(n_train=64, n_valid=16), path=tmp_path)
    learn.fit(2, lr=1e-2, callbacks=[Checkpoint(keep=2)])
    newest = tmp_path / "models" / "checkpoint.pth"
    raw = newest.read_bytes()
    newest.write_bytes({"empty": b"", "cut short": raw[:-100],
                        "flipped byte": raw[:-50] + bytes([raw[-50] ^ 1]) + raw[-49:]}[damage])
    with pytest.warns(UserWarning, match=r"Resuming from the older checkpoint .*checkpoint\.1\.pth.*checkpoint\.pth "
                                         r"\([\d,]+ bytes\)"):
        learn.fit(2, lr=1e-2, resume=True)  # epoch 2 of 2 again, from the end of epoch 1
    assert learn.epoch == 1


def test_no_good_checkpoint_left_is_an_error_naming_each_file(tmp_path):
    learn = make_learner(make_data(n_train=64, n_valid=16), path=tmp_path)
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "checkpoint.pth").write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"checkpoint\.pth \(0 bytes\) is not a fastbase checkpoint \(it is "
                                              "empty\\)"):
        learn.fit(1, resume=True)


# --- data.save files and label CSVs ----------------------------------------------------------------
@pytest.fixture
def saved_data(tmp_path):
    folder = make_color_folder(tmp_path / "img", per_class=(2, 1), hw=(8, 8))
    lls = ImageList.from_folder(folder).split_by_folder().label_from_folder()
    lls.path = folder
    return lls.save("data.json")


@pytest.mark.parametrize("content, message", [
    (b"", r"\(0 bytes\) is empty"),
    (None, r"bytes\) is cut short"),
    (b"\xff\xfe\x00binary", r"is not a fastbase data file: byte 0 is not UTF-8"),
    (b"[1, 2, 3]", r"is not a fastbase data file: it has no 'x_cls' entry"),
    (b"name,label\na.png,cat\n", r"is not a fastbase data file \(not valid JSON"),
])
def test_a_damaged_data_save_file_is_named(saved_data, content, message):
    raw = saved_data.read_bytes()
    saved_data.write_bytes(raw[: len(raw) // 2] if content is None else content)
    with pytest.raises(DamagedFileError, match=message):
        load_data(saved_data.parent, saved_data.name, num_workers=0, device="cpu")


def test_a_data_save_file_with_a_changed_value_is_refused(saved_data):
    saved_data.write_text(saved_data.read_text().replace("red", "rad", 1))
    with pytest.raises(DamagedFileError, match="does not match the SHA-256"):
        load_data(saved_data.parent, saved_data.name, num_workers=0, device="cpu")


@pytest.mark.parametrize("content, message", [
    (b"", r"\(0 bytes\) is empty"),
    (b"name,label\n\xff\xd8\xff\xe0 a jpeg?", r"is not a UTF-8 text CSV: byte 11"),
])
def test_a_damaged_label_csv_is_named(tmp_path, content, message):
    file = tmp_path / "cleaned.csv"
    file.write_bytes(content)
    with pytest.raises(DataError, match=message):
        read_csv_table(file)


def test_a_label_csv_saved_by_excel_with_a_bom_reads_its_header(tmp_path):
    file = tmp_path / "labels.csv"
    file.write_bytes("\ufeffname,label\na.png,chat\n".encode())
    assert read_csv_table(file, "name", "label") == [("a.png", "chat")]


@pytest.mark.parametrize("content, message", [
    (b"", "is empty"), (b'["xxunk", "xxpad", "the"', "is cut short"), (b"\xff\xfe\x00", "byte 0 is not UTF-8"),
    (b'{"itos": ["a"]}', "is not a vocabulary"), (b"[1, 2, 3]", "is not a vocabulary")])
def test_a_damaged_vocabulary_is_named(tmp_path, content, message):
    from fastbase.text import Vocab

    file = tmp_path / "itos.json"
    Vocab(["xxunk", "xxpad", "the", "a"]).save(file)
    assert Vocab.load(file).itos == ["xxunk", "xxpad", "the", "a"]
    file.write_bytes(content)
    with pytest.raises(DamagedFileError, match=message) as info:
        Vocab.load(file)
    assert str(file) in str(info.value) and "bytes" in str(info.value)
