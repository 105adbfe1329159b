"""Tiny image folders built in the test's tmp_path, and the embedded digits archive extracted once.

Import the fixtures into a test module (`from image_fixtures import digits_fixture, color_folder_fixture`)
and ask for them as `digits` and `color_folder`; the helpers (`save_image`, `COLORS`) are plain functions.
"""
import tarfile

import numpy as np
import PIL.Image
import pytest

from fastbase.datasets import packaged_file

# class name -> RGB: each class's images are filled with its colour, so any batch shows its labels
COLORS = {"blue": (0, 0, 255), "green": (0, 255, 0), "red": (255, 0, 0)}


def save_image(path, hw=(16, 16), color=(128, 128, 128), fmt=None, mode="RGB", array=None):
    """Write an image of `hw` filled with `color` (or `array`, HxWx3 uint8) to `path`; returns path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if array is None:
        array = np.empty((*hw, 3), dtype=np.uint8)
        array[:] = color
    img = PIL.Image.fromarray(array)
    if mode != "RGB":
        img = img.convert(mode)
    img.save(path, format=fmt)
    return path


def make_color_folder(root, per_class=(6, 3), hw=(20, 28), classes=COLORS, fmt="png"):
    """`root/train/<class>/` and `root/valid/<class>/` with `per_class` solid-colour images each."""
    for split, n in zip(("train", "valid"), per_class):
        for name in classes:
            for i in range(n):
                save_image(root / split / name / f"{name}_{i}.{fmt}", hw, COLORS[name])
    return root


@pytest.fixture(name="color_folder")
def color_folder_fixture(tmp_path):
    """A folder of solid red, green and blue images: 6 train and 3 valid per class, 20x28 PNG."""
    return make_color_folder(tmp_path / "colors")


@pytest.fixture(name="digits", scope="session")
def digits_fixture(tmp_path_factory):
    """The embedded digits archive (1,797 8x8 gray PNGs), extracted once per session; its folder."""
    dest = tmp_path_factory.mktemp("digits_data")
    with tarfile.open(packaged_file("digits.tgz")) as tar:
        tar.extractall(dest, filter="data")
    return dest / "digits"


def digits_labels(root):
    """(name, label) rows of the digits' labels.csv, in file order."""
    lines = (root / "labels.csv").read_text().splitlines()[1:]
    return [tuple(line.split(",")) for line in lines]
