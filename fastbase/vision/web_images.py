"""Layer 6: the image-gathering helpers of fastai v1's lesson 2: `download_images` (a file of URLs
into a folder, through fastbase's resumable, retrying downloader) and `verify_images` on a folder
(list the unreadable files, delete them when asked, shrink large images when asked)."""
from __future__ import annotations

import os
import re
import warnings
from concurrent.futures import ThreadPoolExecutor

import PIL.Image

from ..core import Path
from ..data import DataError
from ..download import download_url
from .image import get_image_files
from .image import verify_images as verify_files

__all__ = ["download_images", "verify_images"]


def download_images(urls, dest, max_pics: int = 1000, max_workers: int = 8, timeout: float = 4.0,
                    retries: int = 2) -> list[tuple[str, str]]:
    """Download the image URLs listed in the text file `urls` (one a line; or a list of URLs) into
    the folder `dest` as `00000000.jpg`, `00000001.png`... (the URL's suffix, else .jpg), at most
    `max_pics`, `max_workers` at a time. A URL that fails does not stop the others: returns the
    `(url, reason)` of each failure, named in one warning."""
    if isinstance(urls, (str, os.PathLike)):
        file = Path(urls)
        if not file.is_file():
            raise DataError(f"No file of URLs {file}: save the URLs (one a line) there, or pass a list of them.")
        urls = file.read_text().split()
    urls = [u.strip() for u in urls if u.strip()][:max_pics]
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)

    def fetch(job):
        i, url = job
        try:
            download_url(url, dest / f"{i:08d}{_suffix(url)}", retries=retries, timeout=timeout, backoff=0.1,
                         progress=False)
            return None
        except Exception as e:  # noqa: BLE001 -- a bad URL of any kind is reported, the rest go on
            return url, f"{type(e).__name__}: {e}"
    with ThreadPoolExecutor(max(1, max_workers)) as pool:
        failed = [r for r in pool.map(fetch, enumerate(urls)) if r is not None]
    if failed:
        listing = "\n".join(f"  {u}: {why}" for u, why in failed[:10])
        warnings.warn(f"{len(failed)} of {len(urls)} images could not be downloaded to {dest}:\n{listing}",
                      stacklevel=2)
    return failed


def _suffix(url: str) -> str:
    found = re.findall(r"\.(jpe?g|png|gif|bmp|webp|tiff?)(?=(?:\?|#|$))", url.lower())
    return f".{found[-1]}" if found else ".jpg"


def verify_images(path, delete: bool = False, max_size: int | None = None, dest=".", recurse: bool = False
                  ) -> list[tuple[Path, str]]:
    """Check the image files of the folder `path` (or a list of files): returns `(file, reason)` for
    each one that cannot be used. `delete=True` deletes those; `max_size` shrinks the others whose
    longer side is larger (aspect kept) and saves them, under the same name, in `dest` (relative to
    the folder; '.' replaces them)."""
    if isinstance(path, (str, os.PathLike)) and Path(path).is_dir():
        folder = Path(path)
        files = get_image_files(folder, recurse=recurse)
    else:
        files, folder = [Path(f) for f in path], None
    bad = verify_files(files)
    if delete:
        for fn, _ in bad:
            fn.unlink(missing_ok=True)
    if max_size is not None:
        broken = {fn for fn, _ in bad}
        for fn in files:
            if fn not in broken:
                _shrink(fn, max_size, (folder or fn.parent) / dest)
    return bad


def _shrink(fn: Path, max_size: int, dest: Path) -> None:
    with PIL.Image.open(fn) as img:
        if max(img.size) <= max_size:
            if dest.resolve() != fn.parent.resolve():
                dest.mkdir(parents=True, exist_ok=True)
                img.save(dest / fn.name)
            return
        scale = max_size / max(img.size)
        small = img.convert("RGB" if img.mode not in ("RGB", "L") else img.mode).resize(
            (max(1, round(img.width * scale)), max(1, round(img.height * scale))), PIL.Image.BILINEAR)
    dest.mkdir(parents=True, exist_ok=True)
    small.save(dest / fn.name)
