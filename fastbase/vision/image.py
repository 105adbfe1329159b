"""Layer 6, first stop for images: find image files, check them, decode them fast, resize them.

Decoding is the cost of an image pipeline, so it is done once per item, as small as the target size
allows: JPEGs decode at 1/2, 1/4 or 1/8 scale when that still covers the target (libjpeg's DCT
scaling through `PIL.Image.draft`), and otherwise through torchvision's libjpeg-turbo decoder, which
is faster than PIL's. Every image becomes RGB uint8 `3 x H x W` (grayscale, palette, RGBA, CMYK and
16-bit alike, so pretrained bodies take the gray digits) with its EXIF orientation applied, or with
`convert_mode='L'` gray uint8 `1 x H x W` (fastai v1's `ImageList(convert_mode='L')`, as for MNIST).
"""
from __future__ import annotations

import io

import numpy as np
import PIL.Image
import PIL.ImageOps
import torch
import torch.nn.functional as F

from ..core import Path, defaults, listify
from ..data import DataError, get_files
from .sizing import PADDING_MODES, ResizeMethod, canvas_size, cover_geometry, fit_size, size_hw
from .transforms import BatchAugment

try:  # libjpeg-turbo through torchvision decodes faster than PIL (bench/data_loader.py); deprecated in torchvision 0.29
    from torchvision.io import ImageReadMode, decode_jpeg
except ImportError:  # a torchvision without image decoding: PIL decodes everything
    decode_jpeg = None

__all__ = ["CONVERT_MODES", "PADDING_MODES", "Image", "ResizeMethod", "augment_one", "check_image", "cover_image",
           "get_image_files", "image_extensions", "image_hw", "item_hw", "load_image", "open_image", "resize_image",
           "resize_to", "verify_images"]

CONVERT_MODES = {"RGB": 3, "L": 1}  # the PIL modes images load in, and their number of channels

_EXIF_ORIENTATION = 0x0112
MIN_SIDE = 2  # a 1-pixel side is a placeholder or a tracking pixel, not a picture to learn from


def image_extensions() -> set[str]:
    """File suffixes (lower case, with the dot) that PIL can open."""
    PIL.Image.init()
    return {ext for ext, fmt in PIL.Image.registered_extensions().items() if fmt in PIL.Image.OPEN}


def get_image_files(path, recurse: bool = True, folders=None) -> list[Path]:
    """Image files (`image_extensions()`) under `path` (only inside its subfolders `folders` when
    given), sorted: `fastbase.data.get_files`, which leaves out hidden files and folders."""
    return get_files(path, extensions=image_extensions(), recurse=recurse, include=listify(folders))


# --- checking --------------------------------------------------------------------------------
def check_image(fn) -> str | None:
    """Why `fn` (a path, or the bytes of an image file) cannot be used as an image, or None when it
    can. Cheap for JPEG and PNG: reads the header and verifies the stream (PNG checksums; a JPEG
    without its end marker is fully decoded to be sure); other formats (BMP, GIF, TIFF, WebP...),
    whose verification reads only the header, are decoded, so a file cut short is caught here."""
    if isinstance(fn, (bytes, bytearray)):
        data = bytes(fn)
        source, size, tail = (lambda: io.BytesIO(data)), len(data), data[-1024:]
    else:
        fn = Path(fn)
        if not fn.is_file():
            return "does not exist"
        source, size, tail = (lambda: fn), fn.stat().st_size, None
    if size == 0:
        return "is empty (0 bytes)"
    try:
        with PIL.Image.open(source()) as img:
            w, h = img.size
            fmt = img.format
            img.verify()
        if min(w, h) < MIN_SIDE:
            return f"is only {w}x{h} pixels"
        # a JPEG without its end marker, or a format whose verify() reads only the header: decode it
        jpeg_cut = fmt == "JPEG" and b"\xff\xd9" not in (_jpeg_tail(fn) if tail is None else tail)
        if jpeg_cut or fmt not in _VERIFIED:
            with PIL.Image.open(source()) as img:
                img.load()
    except PIL.UnidentifiedImageError:
        return "is not an image PIL can read"
    except Exception as e:  # noqa: BLE001 -- PIL raises OSError, SyntaxError, ValueError, struct.error...
        return f"is corrupt or truncated ({type(e).__name__}: {e})"
    return None


# formats whose verify() checks the data too (PNG: every chunk's CRC), or that are checked above (JPEG)
_VERIFIED = ("JPEG", "PNG")


def _jpeg_tail(fn: Path) -> bytes:
    """The last 1024 bytes of `fn`, where a complete JPEG has its end marker."""
    with open(fn, "rb") as f:
        f.seek(max(0, fn.stat().st_size - 1024))
        return f.read()


def verify_images(fns) -> list[tuple[Path, str]]:
    """`(file, reason)` for each file of `fns` that `check_image` rejects, in order."""
    bad = []
    for fn in fns:
        reason = check_image(fn)
        if reason is not None:
            bad.append((Path(fn), reason))
    return bad


# --- decoding --------------------------------------------------------------------------------
def channels_of(convert_mode: str) -> int:
    """The number of channels images of `convert_mode` ('RGB' or 'L') load with; a clear error otherwise."""
    if convert_mode not in CONVERT_MODES:
        raise DataError(f"convert_mode must be one of {sorted(CONVERT_MODES)}, got {convert_mode!r}.")
    return CONVERT_MODES[convert_mode]


def load_image(fn, target_hw=None, method: ResizeMethod = ResizeMethod.SQUISH, convert_mode: str = "RGB"
               ) -> tuple[torch.Tensor, tuple[int, int]]:
    """Decode `fn` (a path, bytes, or a PIL image) to RGB uint8 `3 x h x w` (`convert_mode='L'`: gray
    `1 x h x w`), EXIF orientation applied.

    With `target_hw`, a JPEG may decode smaller than its full size, but never below what resizing to
    `target_hw` with `method` needs. Returns the tensor and the full `(H, W)` of the oriented image,
    which the batch augmentation needs to place its crop window."""
    if isinstance(fn, PIL.Image.Image):
        img = PIL.ImageOps.exif_transpose(fn)
        return _to_tensor(img, convert_mode), (img.height, img.width)
    data = fn if isinstance(fn, bytes) else Path(fn).read_bytes()
    img = PIL.Image.open(io.BytesIO(data))
    turned = _quarter_turned(img)
    full_hw = (img.width, img.height) if turned else (img.height, img.width)
    if img.format == "JPEG":
        need = _needed_hw(full_hw, target_hw, method)
        need = need[::-1] if turned else need  # in the file's own (unrotated) orientation
        if target_hw is not None and min(img.height // need[0], img.width // need[1]) >= 2:
            img.draft(convert_mode, (need[1], need[0]))  # DCT scaling: decodes at 1/2, 1/4 or 1/8 size
        elif img.mode in ("RGB", "L") and decode_jpeg is not None:
            try:
                read = ImageReadMode.GRAY if convert_mode == "L" else ImageReadMode.RGB
                x = decode_jpeg(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=read,
                                apply_exif_orientation=True)
                return x, full_hw
            except RuntimeError:
                img = PIL.Image.open(io.BytesIO(data))  # let PIL decode it, or say what is wrong
    img = PIL.ImageOps.exif_transpose(img)
    return _to_tensor(img, convert_mode), full_hw


def _needed_hw(full_hw, target_hw, method):
    """The smallest (h, w) an image of `full_hw` can be decoded at before resizing to `target_hw`."""
    if target_hw is None:
        return full_hw
    (h, w), (th, tw) = full_hw, target_hw
    if method == ResizeMethod.SQUISH:
        return min(h, th), min(w, tw)
    ratio = (max if method == ResizeMethod.CROP else min)(th / h, tw / w)
    return min(h, int(np.ceil(h * ratio))), min(w, int(np.ceil(w * ratio)))


def _to_tensor(img: PIL.Image.Image, convert_mode: str = "RGB") -> torch.Tensor:
    """PIL image of any mode -> RGB uint8 `3 x H x W` (`convert_mode='L'`: gray `1 x H x W`)."""
    n = channels_of(convert_mode)
    if img.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        a = np.asarray(img, dtype=np.float32)
        top = 1.0 if img.mode == "F" and a.max(initial=0) <= 1 else (255.0 if a.max(initial=0) <= 255 else 65535.0)
        a = np.clip(a * (255.0 / top), 0, 255).round().astype(np.uint8)
        return torch.from_numpy(np.ascontiguousarray(a)).expand(n, *a.shape).contiguous()
    if n == 1:
        return torch.from_numpy(np.array(img if img.mode == "L" else img.convert("L")))[None]
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode != "RGB":
        img = img.convert("RGB")
    return torch.from_numpy(np.array(img)).permute(2, 0, 1)


# --- resizing --------------------------------------------------------------------------------
def resize_image(x: torch.Tensor, target_hw, method: ResizeMethod = ResizeMethod.CROP,
                 padding_mode: str = "reflection", mode: str = "bilinear") -> torch.Tensor:
    """uint8 `C x h x w` -> uint8 `C x th x tw`: centre crop, pad or squish (antialiased bilinear;
    `mode='nearest'` for masks, whose values are classes that must not blend)."""
    th, tw = target_hw
    h, w = x.shape[-2:]
    if (h, w) == (th, tw):
        return x
    method = ResizeMethod(method)
    if method == ResizeMethod.SQUISH:
        return _resize(x, (th, tw), mode)
    if method == ResizeMethod.CROP:  # the centre window that fills the target: a canvas of the target's size
        return cover_image(x, target_hw, target_hw, mode=mode)[0]
    fitted = _resize(x, fit_size((h, w), (th, tw)), mode)
    return pad_image(fitted, target_hw, padding_mode)


def cover_image(x: torch.Tensor, target_hw, canvas_hw, padding_mode: str = "reflection", mode: str = "bilinear"
                ) -> tuple[torch.Tensor, tuple[int, int]]:
    """uint8 `3 x h x w` -> `(canvas, (rh, rw))`: the image resized as CROP resizes it (the same
    antialiased filter and scale, so it just covers `target_hw`), its overflow cut to at most
    `canvas_hw` about the centre, then padded evenly to `canvas_hw` with `padding_mode`. `(rh, rw)` is
    the size of the picture inside the canvas: a training crop window can go anywhere in it and be
    sampled at one output pixel per canvas pixel, as sharp as the validation images."""
    # the part of the image that becomes the kept (<= canvas) region: cut in source pixels, resized once
    top, left, sh, sw, kh, kw = cover_geometry(tuple(x.shape[-2:]), target_hw, canvas_hw)
    region = _resize(x[:, top:top + sh, left:left + sw], (kh, kw), mode)
    return pad_image(region, canvas_hw, padding_mode), (kh, kw)


def _resize(x: torch.Tensor, hw, mode: str = "bilinear") -> torch.Tensor:
    if tuple(x.shape[-2:]) == tuple(hw):
        return x
    if mode == "nearest":  # pixel centres to pixel centres, no blending of values
        return F.interpolate(x.unsqueeze(0), size=tuple(hw), mode="nearest-exact")[0]
    # channels-last uint8 is the layout torch's fast antialiased path expects
    x = x.unsqueeze(0).contiguous(memory_format=torch.channels_last)
    return F.interpolate(x, size=tuple(hw), mode="bilinear", antialias=True, align_corners=False)[0].contiguous()


def pad_image(x: torch.Tensor, target_hw, padding_mode: str = "reflection") -> torch.Tensor:
    """Pad `x` (`C x h x w`) evenly to `target_hw`, filling as `grid_sample` would: 'zeros', 'border'
    (repeat the edge) or 'reflection' (mirror about the edge), whatever the pad's width."""
    if padding_mode not in PADDING_MODES:
        raise DataError(f"padding_mode must be one of {PADDING_MODES}, got {padding_mode!r}.")
    (h, w), (th, tw) = x.shape[-2:], target_hw
    if padding_mode == "zeros":
        top, left = (th - h) // 2, (tw - w) // 2
        return F.pad(x, (left, tw - w - left, top, th - h - top))
    rows, cols = _pad_index(h, th, padding_mode), _pad_index(w, tw, padding_mode)
    return x.index_select(-2, rows).index_select(-1, cols)


def _pad_index(n: int, target: int, mode: str) -> torch.Tensor:
    before = (target - n) // 2
    idx = torch.arange(target) - before
    if mode == "border":
        return idx.clamp(0, n - 1)
    period = 2 * n  # mirror about the edges: 0 1 .. n-1 n-1 .. 1 0 0 1 ..
    idx = idx % period
    return torch.where(idx < n, idx, period - 1 - idx)


# --- the user-facing image -------------------------------------------------------------------
class Image:
    """An image for notebooks: `data` is float `3 x H x W` in [0, 1] (`1 x H x W` for gray images
    loaded with `convert_mode='L'`). Not a tensor subclass: the training loop never sees it. `show()`
    draws it; `Learner.predict` and `one_item` accept it; `apply_tfms` augments it."""

    def __init__(self, data: torch.Tensor):
        self.data = data

    @property
    def shape(self):
        return tuple(self.data.shape)

    @property
    def size(self) -> tuple[int, int]:
        """(height, width) in pixels, as fastai v1's `Image.size`."""
        return tuple(self.data.shape[-2:])

    @property
    def dtype(self) -> torch.dtype:
        return self.data.dtype

    def resize(self, size, method: ResizeMethod = ResizeMethod.SQUISH) -> Image:
        """A new Image of `size` (an int, (h, w) or fastai's (c, h, w)), squished (or cropped/padded
        to fit, with `method`) as the loaders resize."""
        hw = (size, size) if isinstance(size, int) else tuple(size)[-2:]
        x = (self.data.clamp(0, 1) * 255).round().to(torch.uint8)
        return Image(resize_image(x, hw, method).float().div_(255))

    def show(self, ax=None, figsize=(3, 3), title: str | None = None, y=None, hide_axis: bool = True,
             cmap=None, **kwargs):
        """Draw on `ax` (a new figure when None) with matplotlib, titled with `title` or with the label
        item `y` (a Category, MultiCategory or FloatItem); returns the axes."""
        if ax is None:
            import matplotlib.pyplot as plt
            _, ax = plt.subplots(figsize=figsize)
        pixels = self.data.permute(1, 2, 0).clamp(0, 1).numpy()
        if self.data.shape[0] == 1:
            cmap = cmap or defaults.cmap or "gray"
        if cmap is not None and self.data.shape[0] in (1, 3):
            pixels = pixels[..., 0]  # one channel, drawn with the colour map (gray digits are R = G = B)
        ax.imshow(pixels, cmap=cmap)
        if hide_axis:
            ax.axis("off")
        if y is not None:
            y.show(ax, **kwargs)
        elif title is not None:
            ax.set_title(title, **kwargs)
        return ax

    def apply_tfms(self, tfms, size=None, resize_method: ResizeMethod | None = None,
                   padding_mode: str = "reflection", **kwargs) -> Image:
        """A new Image through `tfms` (e.g. `get_transforms()[0]`) at `size` (default: its own), as the
        training loader augments a batch: one resample for the window and every geometric transform,
        then lighting. `resize_method` defaults to CROP. Random draws use torch's global generator."""
        x, _ = augment_one(_as_uint8(self.data), tfms, size, resize_method, padding_mode)
        return Image(x)

    def save(self, fn) -> None:
        """Write the image to the file `fn` (format from its suffix, as PIL), values clamped to [0, 1]."""
        pixels = _as_uint8(self.data).permute(1, 2, 0).numpy()
        PIL.Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels).save(fn)

    def __repr__(self):
        return f"{type(self).__name__}({' x '.join(str(s) for s in self.shape)})"


def _as_uint8(x: torch.Tensor) -> torch.Tensor:
    return x if x.dtype == torch.uint8 else (x.float().clamp(0, 1) * 255).round().to(torch.uint8)


def augment_one(x: torch.Tensor, tfms, size=None, resize_method: ResizeMethod | None = None,
                padding_mode: str = "reflection", mask: torch.Tensor | None = None, generator=None):
    """`(x float C x h x w in [0, 1], mask int64 1 x h x w or None)`: uint8 `x` (and its `mask`, moved the
    same way, nearest-neighbour) placed on a training canvas as the loader places items, then through
    `BatchAugment` as a batch of one: the path `Image.apply_tfms` and `train_ds[i]` share."""
    method = ResizeMethod(resize_method if resize_method is not None else ResizeMethod.CROP)
    hw = size_hw(size) or tuple(x.shape[-2:])
    canvas_hw = canvas_size(hw, method)
    if method == ResizeMethod.CROP:
        canvas, src_hw = cover_image(x, hw, canvas_hw, padding_mode)
        mask = None if mask is None else cover_image(mask, hw, canvas_hw, padding_mode, "nearest")[0]
    else:
        canvas, src_hw = resize_image(x, canvas_hw, ResizeMethod.SQUISH), tuple(x.shape[-2:])
        mask = None if mask is None else resize_image(mask, canvas_hw, ResizeMethod.SQUISH, mode="nearest")
    y = torch.zeros(1, dtype=torch.long) if mask is None else mask[None]
    augment = BatchAugment(listify(tfms), hw, method, padding_mode, generator, tfm_y=mask is not None)
    out, y = augment((canvas[None], y, torch.tensor([src_hw])))
    return out[0], (None if mask is None else y[0])


def resize_to(img, targ_sz: int, use_min: bool = False) -> tuple[int, int]:
    """`(width, height)` scaling `img` (a PIL image or an `Image`) so that its longer side (`use_min`:
    its shorter side) is `targ_sz` pixels, keeping the aspect ratio; as fastai v1, for
    `pil_img.resize(resize_to(pil_img, 96, use_min=True))`."""
    w, h = (img.size[1], img.size[0]) if isinstance(img, Image) else img.size
    ratio = targ_sz / (min if use_min else max)(w, h)
    return int(w * ratio), int(h * ratio)


def open_image(fn, div: bool = True, convert_mode: str = "RGB") -> Image:
    """Open `fn` as an `Image` (RGB, or gray with `convert_mode='L'`; EXIF orientation applied); a
    clear error when it is not one. `div=False` keeps the values in 0..255 (as floats)."""
    reason = check_image(fn)
    if reason is not None:
        raise DataError(f"Cannot open {fn}: it {reason}.")
    x, _ = load_image(fn, convert_mode=convert_mode)
    return Image(x.float().div_(255) if div else x.float())


def image_hw(fn) -> tuple[int, int]:
    """(h, w) of the image file `fn` (a path or bytes) from its header, EXIF orientation applied."""
    with PIL.Image.open(io.BytesIO(fn) if isinstance(fn, (bytes, bytearray)) else fn) as img:
        return (img.width, img.height) if _quarter_turned(img) else (img.height, img.width)


def _quarter_turned(img: PIL.Image.Image) -> bool:
    """Whether the EXIF orientation of the opened `img` turns it a quarter (its height is its width)."""
    return img.getexif().get(_EXIF_ORIENTATION, 1) in (5, 6, 7, 8)


def item_hw(item) -> tuple[int, int]:
    """(h, w) of a raw item as `one_item` takes it: an Image, a tensor, a PIL image, a file or its bytes."""
    if isinstance(item, Image):
        return tuple(item.size)
    if isinstance(item, torch.Tensor):
        return tuple(item.shape[-2:])
    if isinstance(item, PIL.Image.Image):
        return item.height, item.width
    return image_hw(bytes(item) if isinstance(item, bytearray) else item)
