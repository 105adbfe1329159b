"""A tiny head-pose set laid out as BIWI's (the course's lesson3-head-pose data): one folder per
person, `frame_NNNNN_rgb.jpg` with `frame_NNNNN_pose.txt` (a rotation, then the head centre in
millimetres from the camera) and the camera's `rgb.cal` (intrinsics, then the rest BIWI writes).
Each image is dark with a bright disc at its head centre, so a model can learn where it is."""
import numpy as np
import PIL.Image

HW = (24, 32)  # BIWI's 480x640, scaled down 20 times
FOCAL, CENTRE = 517.679 / 20, (320 / 20, 240.5 / 20)  # rgb.cal's intrinsics at this scale
DEPTH = 1000.0


def _cal_text() -> str:
    fx, (cx, cy) = FOCAL, CENTRE
    return (f"{fx} 0 {cx} \n0 {fx} {cy} \n0 0 1 \n\n0 0 0 0 \n\n1 0 0 \n0 1 0 \n0 0 1 \n\n0 0 0 \n\n"
            f"{HW[1]} {HW[0]}\n")


def biwi_folder(root, people=("01", "09", "13"), frames=(667, 668, 669, 670, 671, 672), seed: int = 0):
    """Write the tiny BIWI-layout set under `root`; returns `root`."""
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[:HW[0], :HW[1]] + 0.5
    for person in people:
        folder = root / person
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "rgb.cal").write_text(_cal_text())
        for frame in frames:
            row, col = rng.uniform(6, HW[0] - 6), rng.uniform(8, HW[1] - 8)  # the head centre, (y, x) pixels
            x_mm, y_mm = (col - CENTRE[0]) * DEPTH / FOCAL, (row - CENTRE[1]) * DEPTH / FOCAL
            rotation = "1 0 0 \n0 1 0 \n0 0 1 \n"
            (folder / f"frame_{frame:05d}_pose.txt").write_text(f"{rotation}\n{x_mm} {y_mm} {DEPTH} \n")
            disc = np.exp(-((ys - row) ** 2 + (xs - col) ** 2) / 8.0)
            pixels = (40 + 200 * disc)[..., None] * np.array([1.0, 0.8, 0.6])
            PIL.Image.fromarray(pixels.round().astype(np.uint8)).save(folder / f"frame_{frame:05d}_rgb.jpg", quality=95)
    return root
