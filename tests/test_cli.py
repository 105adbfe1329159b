"""The `fastbase` command line end to end on the embedded digits: train (report folder, JSON on stdout,
progress on stderr), lr-find, interpret, predict, demo; layout detection; exit codes; report.html
self-contained and its images loading in headless Chromium."""
import base64
import io
import json
import re
import shutil
import subprocess
import sys
import warnings
from contextlib import redirect_stderr, redirect_stdout

import pytest
from image_fixtures import digits_fixture, save_image  # noqa: F401 -- `digits` is a fixture

from fastbase import cli, cli_commands
from fastbase.cli import main
from fastbase.learner import load_learner
from fastbase.loop import TrainingInterrupted
from fastbase.workflow import detect_layout, find_data, load_data

# Tiny settings: squeezenet1_1 (1.2M parameters) at 24 px from random weights, 48 training images.
QUICK = ["--arch", "squeezenet1_1", "--size", "24", "--bs", "16", "--workers", "0", "--no-pretrained", "--seed", "0",
         "--lr-find-iters", "8", "--limit", "48"]
FIGURES = {"lr_find.png", "losses.png", "lr.png", "metrics.png", "top_losses.png", "confusion_matrix.png"}
CHROMIUM = shutil.which("chromium")


def run_cli(argv):
    """(exit code, stdout, stderr) of `fastbase argv`."""
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def small_digits(digits, tmp_path_factory):
    """The digits' layout with the first 6 training and 5 validation images of each class (60 + 50)."""
    root = tmp_path_factory.mktemp("small") / "digits"
    for split, n in (("train", 6), ("valid", 5)):
        for folder in sorted((digits / split).iterdir()):
            (root / split / folder.name).mkdir(parents=True)
            for image in sorted(folder.iterdir())[:n]:
                shutil.copy(image, root / split / folder.name / image.name)
    return root


@pytest.fixture(scope="module")
def trained(small_digits, tmp_path_factory):
    """`fastbase train` run once for this module, with progress output on (one line per epoch)."""
    out = tmp_path_factory.mktemp("train") / "run"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FASTBASE_HOME", str(tmp_path_factory.mktemp("home")))
        mp.setenv("FASTBASE_NO_BAR", "0")
        code, stdout, stderr = run_cli(["train", str(small_digits), *QUICK, "--no-flip", "--epochs", "1",
                                        "--unfreeze-epochs", "1", "--out", str(out), "--json"])
    return {"code": code, "stdout": stdout, "stderr": stderr, "out": out, "data": small_digits}


def summary_of(trained):
    return json.loads(trained["stdout"])


# --- train and its report ------------------------------------------------------------------------------------
def test_train_prints_only_json_on_stdout_and_progress_on_stderr(trained):
    assert trained["code"] == 0, trained["stderr"][-3000:]
    summary = json.loads(trained["stdout"])  # the whole of stdout is one JSON document
    assert summary["command"] == "train" and summary["out"] == str(trained["out"])
    assert re.search(r"epoch 1/1\s+train_loss [\d.]+\s+valid_loss", trained["stderr"])


def test_train_writes_export_figures_and_report(trained):
    summary = summary_of(trained)
    assert {"export.pkl", "report.html", *FIGURES} <= set(summary["files"])
    assert {p.name for p in trained["out"].iterdir()} >= set(summary["files"])
    learn = load_learner(trained["out"] / "export.pkl")
    assert learn.data.classes == [str(i) for i in range(10)]
    assert summary["data"]["layout"] == "train_valid" and summary["data"]["train_images"] == 48  # --limit
    assert summary["data"]["valid_images"] == 50


def test_train_summary_has_a_row_per_epoch_for_each_stage(trained):
    summary = summary_of(trained)
    assert [s["name"] for s in summary["stages"]] == ["stage 1: all layers", "stage 2: unfrozen, slice(lr/100, lr/10)"]
    for stage in summary["stages"]:
        (row,) = stage["epochs"]
        assert set(row) == {"epoch", "train_loss", "valid_loss", "accuracy", "error_rate", "seconds"}
        assert row["train_loss"] > 0 and 0 <= row["accuracy"] <= 1
    assert summary["stages"][1]["epochs"][0]["accuracy"] == pytest.approx(summary["accuracy"])
    assert set(summary["lr_find"]) == {"valley", "steep", "minimum"}
    assert 1e-3 <= summary["lr"] <= 1e-2  # lr_find's valley, kept in the stable range
    for actual, predicted, count in summary["most_confused"]:
        assert actual != predicted and count >= 1


def test_report_is_one_self_contained_page(trained):
    page = (trained["out"] / "report.html").read_text()
    assert not re.search(r"https?://|<script|<link|@import|url\(", page)
    sources = re.findall(r'<img [^>]*src="([^"]+)"', page)
    assert len(sources) == len(FIGURES)
    for src in sources:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1]).startswith(b"\x89PNG\r\n\x1a\n")
    for section in ("results", "settings", "training", "lr-find", "curves", "top-losses", "confusion-matrix",
                    "most-confused"):
        assert f'<section id="{section}">' in page
    summary = summary_of(trained)
    assert f"{summary['stages'][0]['epochs'][0]['train_loss']:.4f}" in page  # the per-epoch table
    actual, predicted, count = summary["most_confused"][0]
    assert f"<td class=\"text\">{actual}</td><td class=\"text\">{predicted}</td><td>{count}</td>" in page


_CHECK_IMAGES = """<script>
window.addEventListener("load", () => {
  const imgs = [...document.images];
  const ok = imgs.filter(img => img.complete && img.naturalWidth > 0).length;
  const out = document.createElement("div");
  out.id = "img-check";
  out.textContent = `loaded ${ok} of ${imgs.length}`;
  document.body.appendChild(out);
});
</script>"""


@pytest.mark.skipif(CHROMIUM is None, reason="needs headless Chromium (/usr/bin/chromium, Debian package chromium)")
def test_report_images_load_in_headless_chromium(trained, tmp_path):
    page = (trained["out"] / "report.html").read_text().replace("</body>", _CHECK_IMAGES + "</body>")
    checked = tmp_path / "report_checked.html"
    checked.write_text(page)
    result = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000", "--dump-dom", checked.as_uri()],
        capture_output=True, text=True, timeout=120, check=False)
    found = re.search(r'<div id="img-check">loaded (\d+) of (\d+)</div>', result.stdout)
    assert found, f"chromium exited {result.returncode}: {result.stderr[-2000:]}"
    assert found.group(1) == found.group(2) == str(len(FIGURES))


def test_predict_into_a_closed_pipe_stops_quietly(trained, images_with_a_corrupt_one):
    """`fastbase predict DIR --json | head -c0`: the reader is gone before the result is written; the
    command exits as a SIGPIPE'd one would (141), without a traceback."""
    export = trained["out"] / "export.pkl"
    script = "import sys; from fastbase.cli import main; sys.exit(main(sys.argv[1:]))"
    proc = subprocess.Popen([sys.executable, "-c", script, "predict", str(export), str(images_with_a_corrupt_one),
                             "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # nothing will read the result
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141, err
    assert "Traceback" not in err and "BrokenPipeError" not in err


# --- the other commands ----------------------------------------------------------------------------------------
def test_lr_find_command_writes_plot_and_prints_suggestions(trained, tmp_path, capsys):
    code = main(["lr-find", str(trained["data"]), *QUICK, "--out", str(tmp_path / "lr"), "--json"])
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    assert set(result) == {"valley", "steep", "minimum", "plot"}
    assert all(0 < result[k] < 10 for k in ("valley", "steep", "minimum"))
    assert (tmp_path / "lr" / "lr_find.png").read_bytes().startswith(b"\x89PNG")


def test_interpret_command_rebuilds_the_validation_set_and_agrees_with_training(trained, tmp_path, capsys):
    out = tmp_path / "interp"
    code = main(["interpret", str(trained["out"] / "export.pkl"), str(trained["data"]), "--workers", "0",
                 "--out", str(out), "--json"])
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    assert {"top_losses.png", "confusion_matrix.png", "report.html"} <= set(result["files"])
    summary = summary_of(trained)  # same model, same 50 validation images (at the trained size, 24 px)
    assert result["accuracy"] == pytest.approx(summary["accuracy"], abs=1e-6)
    assert result["most_confused"] == summary["most_confused"]
    assert "most-confused" in (out / "report.html").read_text()


@pytest.fixture
def images_with_a_corrupt_one(trained, tmp_path):
    folder = tmp_path / "to_predict"
    folder.mkdir()
    for digit in ("3", "7"):
        src = min((trained["data"] / "valid" / digit).iterdir())
        shutil.copy(src, folder / f"{digit}_{src.name}")
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nthis is not an image")
    return folder


def test_predict_on_a_folder_reports_the_corrupt_image_and_keeps_the_others(trained, images_with_a_corrupt_one,
                                                                             capsys):
    export = trained["out"] / "export.pkl"
    code = main(["predict", str(export), str(images_with_a_corrupt_one), "--bs", "1", "--json"])
    captured = capsys.readouterr()
    assert code == 2
    result = json.loads(captured.out)
    by_name = {p["file"].rsplit("/", 1)[-1]: p for p in result["predictions"]}
    assert len(by_name) == 3 and result["errors"] == 1
    assert "broken.png" in by_name["broken.png"]["error"]
    assert re.search(r"fastbase predict: error: .*broken\.png", captured.err)
    learn = load_learner(export)
    for name, p in by_name.items():
        if name != "broken.png":  # batched prediction agrees with Learner.predict on one image
            label, _, probs = learn.predict(images_with_a_corrupt_one / name)
            assert p["class"] == label and p["probability"] == pytest.approx(float(probs.max()), abs=1e-5)


def test_predict_prints_a_line_per_image(trained, images_with_a_corrupt_one, capsys):
    files = sorted(str(p) for p in images_with_a_corrupt_one.glob("[37]_*"))
    assert main(["predict", str(trained["out"]), *files]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split("\t")[0] for line in lines] == files
    for line in lines:
        _, label, prob = line.split("\t")
        assert label in [str(i) for i in range(10)] and 0 < float(prob) <= 1


def test_demo_writes_the_report_folder_too(small_digits, tmp_path, monkeypatch, capsys):
    import fastbase.datasets

    monkeypatch.setattr(fastbase.datasets, "untar_data", lambda url: small_digits)  # fewer digits, same layout
    code = main(["demo", "--out", str(tmp_path / "demo"), "--size", "16", "--bs", "16", "--epochs", "1",
                 "--unfreeze-epochs", "0", "--lr-find-iters", "6", "--limit", "32", "--workers", "0", "--json"])
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    assert {"report.html", "export.pkl", *FIGURES} <= set(summary["files"])
    assert len(summary["stages"]) == 1  # --unfreeze-epochs 0 skips the second stage


def test_demo_seed_reaches_the_run(small_digits, tmp_path, monkeypatch, capsys):
    """`fastbase demo --seed S` (bench/demo_seeds.py runs it over seeds) sets the split, augmentation and
    weights: the seed is recorded, and another seed gives another run."""
    import fastbase.datasets

    monkeypatch.setattr(fastbase.datasets, "untar_data", lambda url: small_digits)
    runs = []
    for seed in (3, 4):
        code = main(["demo", "--out", str(tmp_path / str(seed)), "--size", "16", "--bs", "16", "--epochs", "1",
                     "--unfreeze-epochs", "0", "--lr-find-iters", "6", "--limit", "32", "--workers", "0",
                     "--seed", str(seed), "--json"])
        assert code == 0
        runs.append(json.loads(capsys.readouterr().out))
    assert [r["settings"]["seed"] for r in runs] == [3, 4]
    assert runs[0]["valid_loss"] != runs[1]["valid_loss"]


# --- finding and labelling the data ------------------------------------------------------------------------------
def test_catalogue_name_is_extracted_with_untar_data():
    path = find_data("digits")
    assert (path / "train").is_dir() and detect_layout(path)[0] == "train_valid"


def make_images(root, names):
    for name in names:
        save_image(root / name)
    return root


def test_layouts_are_detected(tmp_path):
    classes_only = make_images(tmp_path / "a", [f"{c}/{i}.png" for c in ("cat", "dog") for i in range(5)])
    assert detect_layout(classes_only) == ("class_folders", {"train": "."})
    train_only = make_images(tmp_path / "b", [f"train/{c}/{i}.png" for c in ("cat", "dog") for i in range(5)])
    assert detect_layout(train_only) == ("train_split", {"train": "train"})
    with_val = make_images(tmp_path / "c", [f"{s}/{c}/0.png" for s in ("train", "val") for c in ("cat", "dog")])
    assert detect_layout(with_val) == ("train_valid", {"train": "train", "valid": "val"})


def test_class_folders_are_split_at_random(tmp_path):
    root = make_images(tmp_path / "pets", [f"{c}/{i}.png" for c in ("cat", "dog") for i in range(5)])
    data, layout = load_data(root, size=16, bs=4, valid_pct=0.2, workers=0)
    assert layout == "class_folders" and data.classes == ["cat", "dog"]
    assert len(data.train_ds) == 8 and len(data.valid_ds) == 2


def test_label_regex_and_csv_label_flat_folders(tmp_path):
    root = make_images(tmp_path / "flat", [f"{c}_{i}.png" for c in ("cat", "dog") for i in range(5)])
    data, layout = load_data(root, size=16, bs=4, workers=0, label_re=r"([a-z]+)_\d+\.png$")
    assert layout == "name_re" and data.classes == ["cat", "dog"]
    (root / "labels.csv").write_text("name,label\n" + "".join(f"{c}_{i}.png,{c.upper()}\n" for c in ("cat", "dog")
                                                               for i in range(5)))
    data, layout = load_data(root, size=16, bs=4, workers=0, csv="labels.csv")
    assert layout == "csv" and data.classes == ["CAT", "DOG"]


# --- errors and exit codes ---------------------------------------------------------------------------------------
def test_missing_folder_exits_2_with_a_json_error(tmp_path, capsys):
    missing = tmp_path / "nowhere"
    assert main(["train", str(missing), "--json"]) == 2
    captured = capsys.readouterr()
    assert json.loads(captured.out) == {"error": json.loads(captured.out)["error"], "exit_code": 2}
    assert str(missing) in captured.err


def test_unknown_dataset_name_exits_2(capsys):
    assert main(["lr-find", "no_such_dataset_anywhere"]) == 2
    assert "catalogue" in capsys.readouterr().err


def test_undetectable_layout_exits_2_naming_folder_and_flags(tmp_path, capsys):
    root = make_images(tmp_path / "loose", ["a.png", "b.png", "c.png"])
    assert main(["train", str(root), "--epochs", "1"]) == 2
    err = capsys.readouterr().err
    assert str(root) in err and "--label-re" in err and "--csv" in err


@pytest.fixture
def folder_with_a_corrupt_image(tmp_path):
    root = make_images(tmp_path / "pets", [f"{s}/{c}/{i}.png" for s in ("train", "valid") for c in ("cat", "dog")
                                           for i in range(4)])
    (root / "train" / "cat" / "broken.png").write_bytes(b"not a png")
    return root


def test_bad_files_error_names_the_flag_on_the_command_line(folder_with_a_corrupt_image):
    code, out, err = run_cli(["train", str(folder_with_a_corrupt_image), *QUICK, "--json"])
    assert code == 2 and "broken.png" in err
    assert "pass --skip-bad to leave them out" in err and "skip_bad=True" not in err
    assert "--skip-bad" in json.loads(out)["error"]


def test_bad_files_error_names_the_argument_in_python(folder_with_a_corrupt_image):
    from fastbase.data import BadFilesError

    with pytest.raises(BadFilesError) as err:
        load_data(folder_with_a_corrupt_image, size=16, workers=0)
    assert "pass skip_bad=True to leave them out" in str(err.value) and "--skip-bad" not in str(err.value)


def test_train_skip_bad_leaves_the_file_out_and_trains(folder_with_a_corrupt_image, tmp_path):
    out = tmp_path / "run"
    with pytest.warns(UserWarning, match="broken.png"):
        code, stdout, err = run_cli(["train", str(folder_with_a_corrupt_image), *QUICK, "--skip-bad", "--epochs", "1",
                                     "--unfreeze-epochs", "0", "--out", str(out), "--json"])
    assert code == 0, err
    summary = json.loads(stdout)
    assert summary["data"]["train_images"] == 8 and summary["settings"]["skip_bad"] is True
    assert (out / "export.pkl").is_file()


def test_missing_csv_files_and_empty_class_folders_name_the_flag_too(tmp_path):
    root = make_images(tmp_path / "flat", [f"{c}_{i}.png" for c in ("cat", "dog") for i in range(4)])
    (root / "labels.csv").write_text("name,label\ncat_0.png,cat\nghost.png,dog\n")
    code, _, err = run_cli(["lr-find", str(root), "--csv", "labels.csv"])
    assert code == 2 and "ghost.png" in err and "--skip-bad" in err and "skip_bad" not in err
    classes = make_images(tmp_path / "classes", [f"{c}/{i}.png" for c in ("cat", "dog") for i in range(4)])
    (classes / "empty").mkdir()
    code, _, err = run_cli(["train", str(classes), "--epochs", "1"])
    assert code == 2 and "empty" in err and "(--skip-bad leaves them out)" in err


def test_a_setting_without_a_flag_keeps_its_python_spelling():
    from fastbase.data import DataError

    error = DataError("use check_images=True and skip_bad=True", options={"check_images": True, "skip_bad": True})
    train = cli.build_parser().parse_args(["train", "digits"]).command_parser
    assert cli._message(error, train) == "use check_images=True and --skip-bad"


def test_missing_model_exits_2(tmp_path, capsys):
    assert main(["predict", str(tmp_path / "export.pkl"), str(tmp_path)]) == 2
    assert "No model file" in capsys.readouterr().err


def test_bad_flag_value_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["train", "digits", "--epochs", "0"])
    assert stop.value.code == 2
    assert "at least 1" in capsys.readouterr().err


def test_ctrl_c_exits_130(monkeypatch, capsys):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli_commands, "find_data", interrupted)
    assert main(["train", "digits"]) == 130
    assert "interrupted" in capsys.readouterr().err


def test_ctrl_c_during_fit_stops_the_whole_command(monkeypatch, capsys):
    """The Learner turns Ctrl-C into a clean stop and a warning; the command stops there with 130."""
    def fit_interrupted(*args, **kwargs):
        warnings.warn("Training interrupted (Ctrl-C)", TrainingInterrupted, stacklevel=1)
        raise AssertionError("the command went on after the interrupted fit")

    monkeypatch.setattr(cli_commands, "find_data", lambda source: source)
    monkeypatch.setattr(cli_commands, "load_data", lambda *args, **kwargs: (None, "train_valid"))
    monkeypatch.setattr(cli_commands, "describe_data", lambda *args: {})
    monkeypatch.setattr(cli_commands, "run_train", fit_interrupted)
    assert main(["train", "digits"]) == 130


def test_failure_while_running_exits_1(monkeypatch, capsys):
    def broken(*args, **kwargs):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(cli_commands, "find_data", broken)
    assert main(["train", "digits", "--json"]) == 1
    captured = capsys.readouterr()
    assert json.loads(captured.out)["exit_code"] == 1 and "out of memory" in captured.err


@pytest.mark.parametrize("command", ["demo", "train", "lr-find", "interpret", "predict"])
def test_every_command_has_help_with_examples(command, capsys):
    with pytest.raises(SystemExit) as stop:
        main([command, "--help"])
    assert stop.value.code == 0
    text = capsys.readouterr().out
    assert "examples:" in text and f"fastbase {command}" in text.split("examples:")[1]
