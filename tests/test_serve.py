"""`fastbase serve`: the real server in a subprocess on 127.0.0.1, talked to over HTTP. Its answers
equal `load_learner(...).predict` on the same files (batched or not), every kind of bad input gets
its 4xx JSON error and the server keeps answering, a bad export is refused at start, and the page
predicts an image uploaded through its form in headless Chromium."""
import base64
import hashlib
import io
import json
import shutil
import subprocess
import threading

import numpy as np
import PIL.Image
import pytest
import torch
from image_fixtures import digits_fixture  # noqa: F401 -- `digits` is a fixture

from fastbase.cli import main
from fastbase.vision import ImageDataBunch, cnn_learner, load_learner, models

pytest.importorskip("starlette", reason="fastbase serve needs pip install 'fastbase[serve]'")
pytest.importorskip("uvicorn", reason="fastbase serve needs pip install 'fastbase[serve]'")
requests = pytest.importorskip("requests", reason="the tests talk HTTP with requests")

from serve_helpers import Chromium, ServerProcess, child_env, serve_command

CHROMIUM = shutil.which("chromium")


@pytest.fixture(scope="module")
def export(digits, tmp_path_factory):
    """squeezenet1_1 at 24 px from random weights, one short epoch on 100 digits, exported."""
    root = tmp_path_factory.mktemp("serve_data")
    for split, n in (("train", 7), ("valid", 3)):
        for folder in sorted((digits / split).iterdir()):
            (root / split / folder.name).mkdir(parents=True)
            for image in sorted(folder.iterdir())[:n]:
                shutil.copy(image, root / split / folder.name / image.name)
    torch.manual_seed(0)
    data = ImageDataBunch.from_folder(root, size=24, bs=16, num_workers=0)
    learn = cnn_learner(data, models.squeezenet1_1, pretrained=False, silent=True)
    learn.fit_one_cycle(1, 1e-2)
    return learn.export(root / "export.pkl")


@pytest.fixture(scope="module")
def server(export):
    server = ServerProcess(export, "--max-body-mb", "1", "--max-wait-ms", "50", "--threads", "1", "--json")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def images(export, tmp_path_factory):
    """Some validation digits as they are (8x8 gray PNG), and two as larger RGB JPEG and PNG files."""
    files = sorted(export.parent.glob("valid/*/*.png"))[::3]
    out = tmp_path_factory.mktemp("serve_images")
    for i, fn in enumerate(files[:2]):
        img = PIL.Image.open(fn).convert("RGB").resize((40, 30))
        img.save(out / f"big_{i}.jpg", quality=90)
        img.save(out / f"big_{i}.png")
    return files + sorted(out.iterdir())


def expected(learn, fn) -> tuple[str, list]:
    label, _, probs = learn.predict(fn)
    return str(label), probs.tolist()


def check_answer(answer, learn, fn):
    label, probs = expected(learn, fn)
    assert answer["label"] == label, fn
    assert list(answer["probabilities"]) == [str(c) for c in learn.data.classes]
    assert np.allclose(list(answer["probabilities"].values()), probs, atol=2e-5), fn
    assert answer["probability"] == pytest.approx(max(probs), abs=2e-5)


def post_file(url, fn, field="file"):
    with open(fn, "rb") as f:
        return requests.post(url + "/predict", files={field: (fn.name, f)}, timeout=60)


def test_predictions_equal_load_learner_predict(server, export, images):
    learn = load_learner(export)
    for fn in images:
        answer = post_file(server.url, fn)
        assert answer.status_code == 200, answer.text
        check_answer(answer.json(), learn, fn)
        kind = "image/jpeg" if fn.suffix == ".jpg" else "image/png"
        raw = requests.post(server.url + "/predict", data=fn.read_bytes(), headers={"Content-Type": kind}, timeout=60)
        assert raw.status_code == 200, raw.text
        check_answer(raw.json(), learn, fn)


def test_concurrent_requests_are_batched_and_answered_each_their_own(server, export, images):
    learn = load_learner(export)
    before = requests.get(server.url + "/health", timeout=10).json()
    answers = [None] * len(images) * 2
    barrier = threading.Barrier(len(answers))

    def client(i):
        barrier.wait()
        answers[i] = post_file(server.url, images[i % len(images)])

    threads = [threading.Thread(target=client, args=(i,)) for i in range(len(answers))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i, answer in enumerate(answers):
        assert answer.status_code == 200, answer.text
        check_answer(answer.json(), learn, images[i % len(images)])
    after = requests.get(server.url + "/health", timeout=10).json()
    assert after["predictions"] - before["predictions"] == len(answers)
    assert after["batches"] - before["batches"] < len(answers)  # some requests shared a forward pass


def test_info_and_health(server, export):
    info = requests.get(server.url + "/info", timeout=10).json()
    assert info["classes"] == [str(c) for c in load_learner(export).data.classes]
    assert info["input_size"] == [24, 24]
    assert info["model"]["sha256"] == hashlib.sha256(export.read_bytes()).hexdigest()
    assert "squeezenet1_1" in str(info["model"]["kwargs"]) and info["model"]["exported_by_fastbase"]
    assert info["server"]["max_batch"] == 32 and info["server"]["max_body_mb"] == 1
    assert requests.get(server.url + "/health", timeout=10).json()["status"] == "ok"
    page = requests.get(server.url + "/", timeout=10)
    assert page.headers["content-type"].startswith("text/html") and 'name="file"' in page.text


def png_bytes(img) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def bad_requests(images):
    """(what, request kwargs, status, words the error names)."""
    noise = PIL.Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8))
    jpeg = io.BytesIO()
    noise.save(jpeg, format="JPEG")
    png = png_bytes(noise)
    bomb = png_bytes(PIL.Image.new("1", (7072, 7072)))  # 50 megapixels in a few kB
    good = images[0].read_bytes()
    return [
        ("not an image", {"files": {"file": ("notes.png", b"these are words, not pixels")}}, 422, "notes.png"),
        ("truncated PNG", {"files": {"file": ("cut.png", png[: len(png) // 2])}}, 422, "truncated"),
        ("truncated JPEG", {"data": jpeg.getvalue()[:800], "headers": {"Content-Type": "image/jpeg"}}, 422,
         "truncated"),
        ("zero-byte body", {"data": b"", "headers": {"Content-Type": "image/png"}}, 422, "empty"),
        ("zero-byte upload", {"files": {"file": ("empty.jpg", b"")}}, 422, "empty"),
        ("50 megapixels", {"files": {"file": ("bomb.png", bomb)}}, 413, "megapixels"),
        ("body over the limit", {"data": good + bytes(1_200_000), "headers": {"Content-Type": "image/png"}}, 413,
         "limit"),
        ("upload over the limit", {"files": {"file": ("big.png", good + bytes(1_200_000))}}, 413, "limit"),
        ("chunked body over the limit", {"data": (bytes(100_000) for _ in range(15)),
                                         "headers": {"Content-Type": "image/png"}}, 413, "limit"),
        ("wrong content type", {"data": good, "headers": {"Content-Type": "text/plain"}}, 415, "text/plain"),
        ("no content type", {"data": good}, 415, "multipart/form-data"),
        ("missing field", {"files": {"image": ("x.png", good)}}, 422, "'image'"),
        ("a text field, not a file", {"data": {"file": "x.png"}, "files": {"other": ("x.png", good)}}, 422, "'file'"),
    ]


def test_bad_input_gets_a_4xx_json_error_and_the_server_keeps_serving(server, export, images):
    learn = load_learner(export)
    for what, kwargs, status, words in bad_requests(images):
        answer = requests.post(server.url + "/predict", timeout=60, **kwargs)
        assert answer.status_code == status, f"{what}: {answer.status_code} {answer.text}"
        error = answer.json()["error"]
        assert words in error, f"{what}: {error}"
        assert server.alive(), server.output()
        good = post_file(server.url, images[1])
        assert good.status_code == 200, f"after {what}: {good.text}"
        check_answer(good.json(), learn, images[1])


@pytest.mark.parametrize("content, words", [
    (None, "No export"),
    ({"weights": [1, 2]}, "not a fastbase export"),
    ({"state": torch.nn.Linear(1, 1)}, "Refused to load"),  # a pickled object: could run code
])
def test_a_bad_export_is_refused_at_start_with_the_reason(tmp_path, capsys, content, words):
    file = tmp_path / "export.pkl"
    if content is not None:
        torch.save(content, file)
    assert main(["serve", str(file), "--port", "1"]) != 0  # refused before it listens (port 1 would fail)
    err = capsys.readouterr().err
    assert words in err and "fastbase serve: error:" in err, err[-2000:]


def test_a_bad_export_stops_the_command_with_a_non_zero_exit(tmp_path):
    file = tmp_path / "export.pkl"
    torch.save({"weights": [1, 2]}, file)
    proc = subprocess.run(serve_command(file), env=child_env(), capture_output=True, text=True, timeout=120,
                          check=False)
    assert proc.returncode == 2 and "not a fastbase export" in proc.stderr, proc.stderr[-2000:]


@pytest.mark.skipif(CHROMIUM is None, reason="needs headless Chromium (/usr/bin/chromium, Debian package chromium)")
def test_the_page_predicts_an_uploaded_and_a_dropped_image_in_headless_chromium(server, export, images, tmp_path):
    learn = load_learner(export)
    browser = Chromium(CHROMIUM, tmp_path / "profile")
    try:
        browser.open(server.url + "/")
        browser.wait_for("document.readyState === 'complete' && !!document.getElementById('file')")
        # an upload through the form's file input, as a user picking a file
        root = browser.send("DOM.getDocument")["root"]["nodeId"]
        node = browser.send("DOM.querySelector", nodeId=root, selector="input[type=file][name=file]")["nodeId"]
        browser.send("DOM.setFileInputFiles", nodeId=node, files=[str(images[0])])
        shown = browser.wait_for("(t => /%/.test(t) && t)(document.getElementById('result').textContent)")
        assert shown.startswith(expected(learn, images[0])[0] + " ("), shown
        assert browser.evaluate("document.getElementById('probs').rows.length") == 5
        assert browser.evaluate("!document.getElementById('preview').hidden")
        # a file dropped on the drop zone
        data = base64.b64encode(images[-1].read_bytes()).decode()
        browser.evaluate(f"""(() => {{
            const bytes = Uint8Array.from(atob("{data}"), c => c.charCodeAt(0));
            const dt = new DataTransfer();
            dt.items.add(new File([bytes], "{images[-1].name}", {{type: "image/png"}}));
            document.getElementById("result").textContent = "";
            document.getElementById("drop").dispatchEvent(new DragEvent("drop", {{dataTransfer: dt, bubbles: true,
                                                                                  cancelable: true}}));
        }})()""")
        shown = browser.wait_for("(t => /%/.test(t) && t)(document.getElementById('result').textContent)")
        assert shown.startswith(expected(learn, images[-1])[0] + " ("), shown
        # a file that is not an image: the page shows the server's error
        browser.evaluate("""(() => {
            const dt = new DataTransfer();
            dt.items.add(new File(["not pixels"], "notes.png", {type: "image/png"}));
            document.getElementById("drop").dispatchEvent(new DragEvent("drop", {dataTransfer: dt, bubbles: true}));
        })()""")
        shown = browser.wait_for("(t => t.startsWith('error') && t)(document.getElementById('result').textContent)")
        assert "notes.png" in shown and "not an image" in shown
    finally:
        browser.close()


def test_workers_each_load_the_model_and_answer(export, images):
    """`--workers 2`: uvicorn's worker processes (started afresh, so slow to import) each serve."""
    learn = load_learner(export)
    server = ServerProcess(export, "--workers", "2", "--threads", "1", timeout=240)
    try:
        for fn in images[:4]:
            answer = post_file(server.url, fn)
            assert answer.status_code == 200, answer.text
            check_answer(answer.json(), learn, fn)
        assert requests.get(server.url + "/info", timeout=10).json()["server"]["workers"] == 2
    finally:
        server.stop()


def test_json_announces_the_address_and_the_model_once_accepted(server, export):
    """`--json`: one JSON line on stdout before listening, with the address and `/info`'s model facts."""
    lines = [line for line in server.output(tail=None).splitlines() if line.startswith("{")]
    assert len(lines) == 1, server.output()
    announced = json.loads(lines[0])
    info = requests.get(server.url + "/info", timeout=10).json()
    assert announced["url"] == server.url + "/" and announced["workers"] == 1
    assert announced["classes"] == info["classes"] and announced["model"]["sha256"] == info["model"]["sha256"]
    assert announced["model"]["sha256"] == hashlib.sha256(export.read_bytes()).hexdigest()


def test_a_bad_export_with_json_prints_the_error_as_json(tmp_path, capsys):
    file = tmp_path / "export.pkl"
    torch.save({"weights": [1, 2]}, file)
    assert main(["serve", str(file), "--port", "1", "--json"]) == 2
    answer = json.loads(capsys.readouterr().out)
    assert answer["exit_code"] == 2 and "not a fastbase export" in answer["error"]


def test_serve_help_has_examples_and_bad_settings_are_usage_errors(tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        main(["serve", "--help"])
    assert stop.value.code == 0
    text = capsys.readouterr().out
    assert "examples:" in text and "fastbase serve" in text.split("examples:")[1] and "--max-wait-ms" in text
    assert main(["serve", str(tmp_path / "export.pkl"), "--max-batch", "0"]) == 2
    assert "--max-batch must be at least 1, got 0" in capsys.readouterr().err


def test_answers_for_single_and_multi_label_rows():
    from fastbase.serve import answer

    row = torch.tensor([0.1, 0.7, 0.2])
    assert answer(row, ["a", "b", "c"]) == {"label": "b", "probability": pytest.approx(0.7),
                                            "probabilities": {"a": 0.1, "b": 0.7, "c": 0.2}}
    multi = answer(torch.tensor([0.9, 0.2, 0.6]), ["a", "b", "c"], multi_label=True)
    assert multi["label"] == ["a", "c"] and multi["probability"] == pytest.approx([0.9, 0.6])
    assert answer(torch.tensor([0.1, 0.2]), ["a", "b"], multi_label=True)["label"] == []


def test_a_model_that_does_not_answer_one_probability_per_class_is_refused(export, monkeypatch):
    """A per-pixel (segmentation) output, here faked, is not served."""
    from fastbase import serve
    from fastbase.data import DataError

    monkeypatch.setattr(serve, "predict_batch", lambda model, act, xs: torch.zeros(1, 10, 4, 4))
    with pytest.raises(DataError, match=r"outputs of shape \(10, 4, 4\) per image, not one probability per class"):
        serve.ServedModel(export)
    monkeypatch.undo()
    assert serve.ServedModel(export).info()["input_size"] == [24, 24]
