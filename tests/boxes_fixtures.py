"""A tiny COCO-format detection set: `train/` images (32x32, dark) with bright rectangles, and
`train.json` naming each rectangle's box and class, as fastai's COCO_TINY lays it out. One image has
no boxes (a valid, empty target)."""
import json

import numpy as np
import PIL.Image

CATEGORIES = [{"id": 7, "name": "square"}, {"id": 9, "name": "bar"}]
HW = (32, 32)


def coco_folder(root, n: int = 12, seed: int = 0):
    """Write `n` images and `train.json` under `root`; returns `root`. Boxes are COCO `[x, y, w, h]`."""
    rng = np.random.default_rng(seed)
    (root / "train").mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for i in range(n):
        pixels = np.full((*HW, 3), 30, dtype=np.uint8)
        name = f"{100 + i:012d}.jpg"
        images.append({"id": 100 + i, "file_name": name})
        for _ in range(0 if i == 0 else 1 + i % 2):
            cat = CATEGORIES[int(rng.integers(0, 2))]
            w, h = (8, 8) if cat["name"] == "square" else (14, 5)
            x, y = int(rng.integers(2, HW[1] - w - 2)), int(rng.integers(2, HW[0] - h - 2))
            pixels[y:y + h, x:x + w] = (230, 200, 60) if cat["name"] == "square" else (60, 200, 230)
            annotations.append({"image_id": 100 + i, "bbox": [x, y, w, h], "category_id": cat["id"]})
        PIL.Image.fromarray(pixels).save(root / "train" / name, quality=95)
    (root / "train.json").write_text(json.dumps({"categories": CATEGORIES, "images": images,
                                                 "annotations": annotations}))
    return root
