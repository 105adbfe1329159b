"""The rest of fastai v1's notebook vocabulary: the `fastbase.basics` namespace, `lr_find(learn)`,
`learn.destroy()`, callback names under fastai's spelling, `Config.data_path()`, `plot_losses` with
skips, `verify_images` on a folder, `download_images`, `load_learner(..., test=)`."""
import os
import subprocess
import sys
from functools import partial

import matplotlib
import numpy as np
import PIL.Image
import pytest
import torch
from http_server import FileServer
from image_fixtures import save_image
from tiny_models import make_learner
from tiny_vision import noise_folder, tiny_learner

from fastbase import basics, vision
from fastbase.callbacks import EarlyStopping, EarlyStoppingCallback, SaveModelCallback
from fastbase.core import Config, noop
from fastbase.data import DatasetType
from fastbase.learner import load_learner
from fastbase.train import lr_find
from fastbase.vision.data import ImageList
from fastbase.vision.show import plot_multi, show_image
from fastbase.vision.web_images import download_images, verify_images

matplotlib.use("Agg")
COURSE = ["gc", "tensor", "optim", "array", "PIL", "gzip", "pickle", "TensorDataset", "itemgetter", "noop", "Config",
          "show_image", "plot_multi", "lr_find", "load_learner", "verify_images", "download_images", "ImageList",
          "ItemList", "CategoryList", "MultiCategoryList", "FloatList", "load_data", "EarlyStoppingCallback",
          "SaveModelCallback", "ReduceLROnPlateauCallback", "MixUpCallback", "CSVLogger"]


def test_the_vision_namespace_gives_the_course_vocabulary():
    namespace = {}
    exec("from fastbase.vision import *", namespace)  # noqa: S102 -- the statement under test
    assert not [n for n in COURSE if n not in namespace]
    assert namespace["tensor"] is torch.tensor and namespace["load_learner"] is load_learner


_BASICS = """
import sys
import fastbase.basics
assert "matplotlib.pyplot" not in sys.modules
from fastbase.basics import *
x_train = tensor(np.zeros((4, 3), dtype=np.float32))
ds = TensorDataset(x_train, tensor([0, 1, 0, 1]))
data = DataBunch.create(ds, ds, bs=2, num_workers=0, device="cpu")
assert Config().data_path() == Config.data_path() and callable(lr_find) and gzip and pickle and plt.plot
print("ok")
"""


def test_basics_namespace_runs_lesson_5_style_code():
    result = subprocess.run([sys.executable, "-c", _BASICS], capture_output=True, text=True, check=False,
                            env={**os.environ, "MPLBACKEND": "Agg"})
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-2000:]
    assert "Learner" in basics.__all__ and "ImageList" not in basics.__all__


def test_config_paths_are_callable_on_the_class_and_on_an_instance(fastbase_home):
    assert Config.data_path() == fastbase_home / "data" == Config().data_path() == Config().data_path
    assert (Config().model_path / "x").name == "x" and noop(3) == 3 and noop() is None


def test_callbacks_under_fastai_names_work_as_callback_fns(tmp_path):
    assert EarlyStoppingCallback is EarlyStopping
    learn = make_learner(path=tmp_path, callback_fns=[partial(SaveModelCallback, every="epoch", name="m"),
                                                      partial(EarlyStoppingCallback, patience=5)])
    learn.fit(2, 1e-2)
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == ["m_1.pth", "m_2.pth"]


def test_lr_find_as_a_function_and_plot_losses_with_skips():
    learn = make_learner()
    before = [p.detach().clone() for p in learn.model.parameters()]
    lr_find(learn, num_it=12, stop_div=False)
    assert all(torch.equal(a, b) for a, b in zip(before, learn.model.parameters()))
    learn.fit(2, 1e-2)
    n = len(learn.recorder.losses)
    fig = learn.recorder.plot_losses(skip_start=2, skip_end=1, return_fig=True)
    line = fig.axes[0].lines[0]
    assert list(line.get_xdata()) == list(range(2, n - 1))
    matplotlib.pyplot.close("all")


def test_destroy_frees_the_model_and_data():
    learn = make_learner()
    learn.destroy()
    assert learn.model is None and learn.data is None and learn.opt is None


def test_verify_images_on_a_folder_deletes_and_shrinks_when_asked(tmp_path):
    folder = tmp_path / "bears"
    save_image(folder / "big.png", (60, 90))
    save_image(folder / "small.png", (10, 12))
    (folder / "broken.jpg").write_bytes(b"\xff\xd8 not really")
    bad = verify_images(folder)
    assert [fn.name for fn, _ in bad] == ["broken.jpg"] and (folder / "broken.jpg").exists()
    verify_images(folder, max_size=30, dest="resized")
    with PIL.Image.open(folder / "resized" / "big.png") as img:
        assert max(img.size) == 30 and img.size == (30, 20)
    assert (folder / "resized" / "small.png").is_file()
    verify_images(folder, delete=True, max_size=30)
    assert not (folder / "broken.jpg").exists()
    with PIL.Image.open(folder / "big.png") as img:
        assert img.size == (30, 20)


def test_download_images_reports_failures_and_keeps_going(tmp_path):
    server = FileServer()
    try:
        png = (tmp_path / "p.png")
        save_image(png, (8, 8))
        urls = [server.add(f"/img{i}.png", png.read_bytes()) for i in range(3)]
        missing = server.url + "/gone.jpg?size=large"
        (tmp_path / "urls.txt").write_text("\n".join([urls[0], missing, *urls[1:]]) + "\n")
        with pytest.warns(UserWarning, match="1 of 4 images"):
            failed = download_images(tmp_path / "urls.txt", tmp_path / "dest", max_pics=10, max_workers=2)
        assert [u for u, _ in failed] == [missing]
        assert sorted(p.name for p in (tmp_path / "dest").iterdir()) == ["00000000.png", "00000002.png",
                                                                         "00000003.png"]
        assert not verify_images(tmp_path / "dest")
        assert len(download_images([urls[0]], tmp_path / "one", max_workers=0)) == 0
    finally:
        server.stop()


def test_load_learner_with_a_test_set_predicts_on_it(tmp_path):
    root = noise_folder(tmp_path / "images")
    learn = tiny_learner(root)
    file = learn.export()
    test = ImageList.from_folder(root / "valid")
    loaded = load_learner(file.parent, test=test)
    preds, _ = loaded.get_preds(ds_type=DatasetType.Test)
    expected, _ = learn.get_preds(ds_type=DatasetType.Valid)
    assert preds.shape == (len(test), 2) and torch.allclose(preds, expected, atol=1e-5)
    assert loaded.data.test_ds.items == test.items


def test_show_image_and_plot_multi_draw():
    show_image(torch.rand(3, 5, 5))
    ax = show_image(torch.randn(1, 5, 5), cmap="gray")  # a feature map: one channel, any range
    assert ax.images[0].get_array().shape == (5, 5)
    cells = []
    fig = plot_multi(lambda i, j, ax: cells.append((i, j)), 2, 3)
    assert cells == [(i, j) for i in range(2) for j in range(3)] and len(fig.axes) == 6
    matplotlib.pyplot.close("all")
    assert np is vision.np


def test_rand_pad_shifts_by_whole_pixels(tmp_path):
    from fastbase.vision.data import ImageDataBunch
    from fastbase.vision.image import ResizeMethod
    from fastbase.vision.rand_pad import rand_pad

    files = []
    for i in range(8):
        pixels = np.zeros((16, 16, 3), dtype=np.uint8)
        pixels[8, 8] = 255
        files.append(save_image(tmp_path / "dots" / f"{i}.png", array=pixels))
    data = ImageDataBunch.from_lists(tmp_path, files, ["a", "b"] * 4, valid_pct=0.25, seed=0, size=16,
                                     ds_tfms=([*rand_pad(3, 16, mode="zeros")], []), padding_mode="zeros",
                                     resize_method=ResizeMethod.SQUISH, bs=6, num_workers=0, device="cpu")
    x, _ = data.one_batch()
    shifts = set()
    for img in x[:, 0]:
        assert torch.isclose(img.max(), torch.tensor(1.0), atol=1e-3) and int((img > 0.01).sum()) == 1
        row, col = divmod(int(img.argmax()), 16)
        assert abs(row - 8) <= 3 and abs(col - 8) <= 3
        shifts.add((row, col))
    assert len(shifts) > 1
