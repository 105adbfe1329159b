"""Image-to-image data for the lesson-7 tests: the embedded digits as high-resolution images and
their crappified copies (smaller, blurred, a JPEG of low quality) in `hr/` and `lr/` folders, as the
course's super-resolution notebooks lay them out."""
import PIL.Image

from fastbase.datasets import URLs, untar_data


def digit_pairs(dest, n: int = 24, size: int = 32, small: int = 16):
    """`dest/hr/<name>.png` digits at `size` px (RGB) and `dest/lr/<name>.png` the same at `small` px,
    saved through a JPEG of quality 30; returns (path_hr, path_lr)."""
    path_hr, path_lr = dest / "hr", dest / "lr"
    path_hr.mkdir(parents=True, exist_ok=True)
    path_lr.mkdir(exist_ok=True)
    files = sorted((untar_data(URLs.DIGITS) / "train").glob("*/*.png"))[::5][:n]
    for f in files:
        name = f"{f.parent.name}_{f.stem}.png"
        img = PIL.Image.open(f).convert("RGB").resize((size, size), PIL.Image.BILINEAR)
        img.save(path_hr / name)
        img.resize((small, small), PIL.Image.BILINEAR).save(dest / "tmp.jpg", quality=30)
        PIL.Image.open(dest / "tmp.jpg").save(path_lr / name)
    (dest / "tmp.jpg").unlink()
    return path_hr, path_lr


def strided_arch(pretrained=False):
    """A four-stage classifier (each stage halves the size), cut at its pooling layer by create_body:
    enough skips for a U-Net with self-attention in its third block from the end."""
    from torch import nn

    from fastbase.layers import conv_layer

    return nn.Sequential(conv_layer(3, 8, stride=2), conv_layer(8, 16, stride=2), conv_layer(16, 16, stride=2),
                         conv_layer(16, 32, stride=2), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10))
