"""Build `digits.tgz`, fastbase's embedded sample dataset, from scikit-learn's bundled digits.

The 1,797 real 8x8 handwritten digits (UCI, 0..16 ink counts) become 8-bit grayscale PNGs in
fastai's MNIST_SAMPLE layout::

    digits/train/<class>/<index>.png   80% of each class, chosen with a fixed seed
    digits/valid/<class>/<index>.png   the other 20%
    digits/labels.csv                  name,label (e.g. train/3/0003.png,3) for every image

The archive is byte-for-byte reproducible (sorted members, fixed times and owners, gzip mtime 0),
and its size and sha256 are written into `catalogue.json`. Run: `python datasets/build_digits.py`
(needs scikit-learn, which is not a fastbase dependency).
"""
from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent
SEED, VALID_PCT = 42, 0.2


def digit_files() -> dict[str, bytes]:
    """{relative path: file bytes} for every image and labels.csv."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    rng = np.random.default_rng(SEED)
    files, rows = {}, []
    for label in range(10):
        idxs = np.flatnonzero(digits.target == label)
        rng.shuffle(idxs)
        n_valid = round(len(idxs) * VALID_PCT)
        for k, idx in enumerate(sorted(idxs[:n_valid].tolist()) + sorted(idxs[n_valid:].tolist())):
            split = "valid" if k < n_valid else "train"
            pixels = np.round(digits.images[idx] * 255 / 16).astype(np.uint8)
            buf = io.BytesIO()
            Image.fromarray(pixels, mode="L").save(buf, format="PNG", optimize=False)
            name = f"{split}/{label}/{idx:04d}.png"
            files[name] = buf.getvalue()
            rows.append((name, label))
    rows.sort()
    files["labels.csv"] = ("name,label\n" + "".join(f"{n},{lbl}\n" for n, lbl in rows)).encode()
    return files


def pack(files: dict[str, bytes], top: str = "digits") -> bytes:
    """A reproducible .tgz of `files` under the folder `top`."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        dirs = sorted({str(Path(top, n).parent) for n in files} | {top})
        for d in sorted({p for d in dirs for p in [str(q) for q in [Path(d), *Path(d).parents] if str(q) != "."]}):
            info = tarfile.TarInfo(d)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, 0
            tar.addfile(info)
        for name in sorted(files):
            info = tarfile.TarInfo(f"{top}/{name}")
            info.size, info.mode, info.mtime = len(files[name]), 0o644, 0
            tar.addfile(info, io.BytesIO(files[name]))
    out = io.BytesIO()
    with gzip.GzipFile(fileobj=out, mode="wb", mtime=0, compresslevel=9) as gz:
        gz.write(raw.getvalue())
    return out.getvalue()


def main() -> None:
    archive = pack(digit_files())
    (HERE / "digits.tgz").write_bytes(archive)
    catalogue_path = HERE / "catalogue.json"
    catalogue = json.loads(catalogue_path.read_text())
    entry = catalogue["datasets"]["DIGITS"]
    entry["size"], entry["sha256"] = len(archive), hashlib.sha256(archive).hexdigest()
    catalogue_path.write_text(json.dumps(catalogue, indent=2) + "\n")
    print(f"digits.tgz: {len(archive)} bytes, sha256 {entry['sha256']}")


if __name__ == "__main__":
    main()
