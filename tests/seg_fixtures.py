"""Segmentation data from the embedded digits, written as files the way CamVid lays them out:
`images/<name>.png`, `labels/<name>_P.png` (0 background, 1 the digit's ink), `codes.txt` and a
`valid.txt` of validation image names. Real scans, so a real two-class segmentation."""
import numpy as np
import PIL.Image

from fastbase.datasets import URLs, untar_data

CODES = ["background", "digit"]


def digit_masks(dest, n: int = 48, size: int = 24, n_valid: int = 12):
    """Write `n` digit scans scaled to `size` px and their ink masks under `dest`; returns `dest`."""
    files = sorted((untar_data(URLs.DIGITS) / "train").glob("*/*.png"))[::7][:n]
    (dest / "images").mkdir(parents=True, exist_ok=True)
    (dest / "labels").mkdir(exist_ok=True)
    names = []
    for f in files:
        img = PIL.Image.open(f).convert("L").resize((size, size), PIL.Image.BILINEAR)
        name = f"{f.parent.name}_{f.stem}"
        img.save(dest / "images" / f"{name}.png")
        PIL.Image.fromarray((np.array(img) > 127).astype(np.uint8)).save(dest / "labels" / f"{name}_P.png")
        names.append(name)
    (dest / "codes.txt").write_text("\n".join(CODES) + "\n")
    (dest / "valid.txt").write_text("\n".join(f"{n}.png" for n in names[-n_valid:]) + "\n")
    return dest


def get_y_fn(dest):
    """The course's `get_y_fn`: the mask file of an image file."""
    return lambda x: dest / "labels" / f"{x.stem}_P{x.suffix}"
