"""The embedded digits archive: checksum and size as catalogued, class counts, every image opens,
labels.csv agrees with the folders."""
import csv
import hashlib
import io
import tarfile
from collections import Counter

import pytest
from PIL import Image

from fastbase.datasets import load_catalogue, packaged_file


@pytest.fixture(scope="module")
def members():
    with tarfile.open(packaged_file("digits.tgz")) as tar:
        return {m.name: (tar.extractfile(m).read() if m.isfile() else None) for m in tar.getmembers()}


def test_archive_matches_catalogue_checksum_and_size():
    entry = load_catalogue()["DIGITS"]
    data = packaged_file("digits.tgz").read_bytes()
    assert len(data) == entry["size"]
    assert hashlib.sha256(data).hexdigest() == entry["sha256"]
    assert entry["folder"] == "digits"


def test_archive_is_safe_and_under_one_folder(members):
    for name in members:
        assert name == "digits" or name.startswith("digits/"), name
        assert ".." not in name.split("/") and not name.startswith("/")


def test_class_counts(members):
    pngs = [n for n in members if n.endswith(".png")]
    assert len(pngs) == 1797
    per_split = Counter(n.split("/")[1] for n in pngs)
    assert per_split == {"train": 1438, "valid": 359}
    per_class = Counter(n.split("/")[2] for n in pngs)
    assert sorted(per_class) == [str(i) for i in range(10)]
    assert all(170 <= c <= 185 for c in per_class.values()), per_class


def test_every_image_opens_as_8x8_grayscale(members):
    for name, data in members.items():
        if name.endswith(".png"):
            img = Image.open(io.BytesIO(data))
            img.load()
            assert img.size == (8, 8) and img.mode == "L", name


def test_labels_csv_agrees_with_folders(members):
    rows = list(csv.DictReader(io.StringIO(members["digits/labels.csv"].decode())))
    assert len(rows) == 1797
    pngs = {n.removeprefix("digits/") for n in members if n.endswith(".png")}
    assert {r["name"] for r in rows} == pngs
    for r in rows:
        assert r["name"].split("/")[1] == r["label"]
