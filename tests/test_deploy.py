"""Export for deployment (TorchScript, ONNX) with the normalisation inside, and predictions in bulk:
the exported files and `predict_folder` reproduce the Learner's own predictions."""
import importlib.util
import json
import pathlib

import pytest
import torch
from tiny_vision import noise_folder, noise_image, tiny_learner

from fastbase.data import BadFilesError, DatasetType
from fastbase.deploy import DeployError, read_metadata
from fastbase.learner import load_learner

# PyTorch marks TorchScript deprecated; these tests load the files as a deploying program would
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny cnn_learner trained one epoch, its raw validation images (float 0..1) and its predictions."""
    root = noise_folder(tmp_path_factory.mktemp("images"))
    learn = tiny_learner(root)
    learn.fit(1, 1e-2)
    raw = torch.stack([x.data for x, _ in learn.data.valid_ds])
    return learn, raw, learn.get_preds()[0]


def test_torchscript_export_reproduces_the_learner_at_any_batch_size(trained, tmp_path):
    learn, raw, preds = trained
    file = learn.export_torchscript(tmp_path / "model.pt")
    module = torch.jit.load(str(file))
    for rows in (slice(None), slice(0, 1), slice(1, 4)):
        assert torch.allclose(module(raw[rows]), preds[rows], atol=1e-5)


def test_exports_carry_classes_stats_and_input_size(trained, tmp_path):
    learn = trained[0]
    meta = read_metadata(learn.export_torchscript(tmp_path / "model.pt"))
    assert meta["classes"] == ["ants", "bees"] and meta["input"]["shape"] == ["batch", 3, 16, 16]
    assert meta["normalization"]["mean"] == pytest.approx([0.485, 0.456, 0.406])
    assert meta["output"]["activation"] == "softmax" and meta["input"]["range"] == [0.0, 1.0]


def test_logits_on_request(trained, tmp_path):
    learn, raw, _ = trained
    module = torch.jit.load(str(learn.export_torchscript(tmp_path / "logits.pt", probs=False)))
    logits = learn.get_preds(activ=lambda x: x)[0]
    assert torch.allclose(module(raw), logits, atol=1e-5)
    assert read_metadata(tmp_path / "logits.pt")["output"]["activation"] == "none"


@pytest.mark.parametrize("dynamo", [None, False], ids=["default_exporter", "legacy_exporter"])
def test_onnx_export_reproduces_the_learner_in_onnxruntime(trained, tmp_path, dynamo):
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime is optional: pip install 'fastbase[onnx]'")
    if dynamo is None and importlib.util.find_spec("onnxscript") is None:
        pytest.skip("the torch.export-based exporter needs onnxscript: pip install 'fastbase[onnx]'")
    learn, raw, preds = trained
    file = learn.export_onnx(tmp_path / "model.onnx", opset=18, dynamo=dynamo)
    session = ort.InferenceSession(str(file), providers=["CPUExecutionProvider"])
    for rows in (slice(None), slice(0, 1), slice(1, 4)):
        out = torch.from_numpy(session.run(None, {"input": raw[rows].numpy()})[0])
        assert torch.allclose(out, preds[rows], atol=1e-5)
    props = {k: json.loads(v) for k, v in session.get_modelmeta().custom_metadata_map.items()}
    assert props["classes"] == ["ants", "bees"] and props == read_metadata(file)


def test_onnx_export_without_onnx_says_what_to_install(trained, tmp_path, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnx" else real(name, *a))
    with pytest.raises(DeployError, match=r"pip install 'fastbase\[onnx\]'"):
        trained[0].export_onnx(tmp_path / "model.onnx")
    assert not (tmp_path / "model.onnx").exists()


def test_a_loaded_learner_exports_at_its_training_size(trained, tmp_path):
    learn, raw, preds = trained
    loaded = load_learner(learn.export(tmp_path / "export.pkl"))
    module = torch.jit.load(str(loaded.export_torchscript(tmp_path / "model.pt")))
    assert torch.allclose(module(raw), preds, atol=1e-5)


def test_predict_folder_matches_predict_and_get_preds_on_a_test_set(trained):
    learn = trained[0]
    folder = learn.path / "valid"
    files, classes, probs = learn.predict_folder(folder, bs=3)
    assert [f.name for f in files] == sorted(f.name for f in files) and len(files) == 10
    learn.data.add_test(files)
    test_probs = learn.get_preds(DatasetType.Test)[0]
    assert torch.allclose(probs, test_probs, atol=1e-5)
    label, _, one = learn.predict(files[4])
    assert classes[4] == label and torch.allclose(probs[4], one, atol=1e-5)


def test_predict_folder_names_unreadable_files_and_predicts_the_others(trained, tmp_path):
    learn = trained[0]
    good = [noise_image(tmp_path / f"img_{i}.png", seed=100 + i) for i in range(3)]
    (tmp_path / "broken.png").write_bytes(good[0].read_bytes()[:60])
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("not an image, and not an image file name: left out")
    loaded = load_learner(learn.export(tmp_path / "export.pkl"))
    with pytest.warns(UserWarning, match=r"2 of 5 items could not be read") as record:
        files, classes, probs = loaded.predict_folder(tmp_path, bs=2)
    message = str(record[0].message)
    assert "broken.png" in message and "empty.jpg" in message and "notes.txt" not in message
    names = [f.name for f in files]
    assert names == ["broken.png", "empty.jpg", "img_0.png", "img_1.png", "img_2.png"]
    assert classes[:2] == [None, None] and probs[:2].isnan().all()
    expected = torch.stack([learn.predict(f)[2] for f in good])
    assert torch.allclose(probs[2:], expected, atol=1e-5) and all(c in ("ants", "bees") for c in classes[2:])


def test_predict_folder_without_a_readable_file_raises(trained, tmp_path):
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(BadFilesError, match="empty.png"):
        trained[0].predict_folder([tmp_path / "empty.png"])


def test_fastbase_predict_and_predict_folder_pick_the_same_files(trained, tmp_path, capsys):
    """One rule for what counts as an image file: the one training reads with (`get_image_files`)."""
    from fastbase.cli import main

    learn = trained[0]
    folder = tmp_path / "photos"
    for name in ("a.png", "b.PNG", "sub/c.png", ".hidden.png", ".cache/d.png"):
        noise_image(folder / name, seed=len(name))
    (folder / "notes.txt").write_text("not an image")
    (folder / "e.webp").write_bytes((folder / "a.png").read_bytes())  # an image file name, even if mislabelled
    export = learn.export(tmp_path / "export.pkl")
    files = [str(f) for f in load_learner(export).predict_folder(folder, progress=False).files]
    main(["predict", str(export), str(folder), "--json"])
    payload = json.loads(capsys.readouterr().out)
    assert [p["file"] for p in payload["predictions"]] == files
    assert sorted(pathlib.Path(f).name for f in files) == ["a.png", "b.PNG", "c.png", "e.webp"]
