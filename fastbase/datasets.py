"""Layer 1: the dataset catalogue, `URLs`, and `untar_data`/`download_data` with a local cache.

Every dataset fastbase knows is described once, in the catalogue shipped with the package
(`datasets/catalogue.json` in the source tree): its URL, the folder it extracts to, and the size and
sha256 of its archive where known. `untar_data(URLs.PETS)` resolves the name, applies the mirror,
downloads the archive into the archive folder (`fastbase.download`: resume, retries, sha256) unless
it is there, extracts it safely into the data folder (`fastbase.archives`) unless that is done, and
returns the folder. A dataset already extracted is returned without touching the network.

Mirror rule: with `FASTBASE_MIRROR` (or `mirror` in config.ini) set, a catalogue URL keeps its path
and swaps its scheme and host for the mirror: `https://s3.amazonaws.com/fast-ai-imageclas/pets.tgz`
becomes `<mirror>/fast-ai-imageclas/pets.tgz`. A `file://` mirror is a local folder with that layout.
"""
from __future__ import annotations

import contextlib
import difflib
import json
import os
import shutil
import warnings
from dataclasses import dataclass
from importlib import resources
from urllib.parse import unquote, urlsplit

from .archives import (
    MAX_EXTRACTED_SIZE,
    MAX_RATIO,
    ArchiveError,
    UnsafeArchiveError,
    extract_archive,
    strip_archive_extension,
)
from .core import ConfigError, FastbaseError, Path, get_config
from .download import ChecksumError, DownloadError, check_file, download_url

__all__ = [
    "ArchiveError",
    "CatalogueError",
    "ChecksumError",
    "DownloadError",
    "OfflineError",
    "URLs",
    "UnsafeArchiveError",
    "download_data",
    "load_catalogue",
    "packaged_file",
    "untar_data",
]

try:  # serialises concurrent downloads/extractions of one dataset (e.g. every rank of a DDP job)
    import fcntl
except ImportError:  # Windows: no lock, the atomic renames still keep the cache consistent
    fcntl = None


class CatalogueError(FastbaseError, KeyError):
    """A dataset name that the catalogue does not hold, or a catalogue that is malformed."""

    def __str__(self):
        return self.args[0] if self.args else ""


class OfflineError(DownloadError):
    """fastbase is in offline mode and the archive it needs is not on disk."""


def packaged_file(name: str) -> Path:
    """Path of a file shipped in `fastbase._datasets` (the source tree's `datasets/` folder)."""
    ref = resources.files("fastbase._datasets") / name
    path = Path(str(ref))
    if not path.is_file():
        raise CatalogueError(f"{name} is missing from the installed package ({path}); "
                             "reinstall fastbase (`pip install -e .` in a source checkout).")
    return path


_REQUIRED = ("url", "folder")


def load_catalogue() -> dict[str, dict]:
    """The catalogue: {NAME: {url, folder, size, sha256, description, ...}}; names are upper case."""
    path = packaged_file("catalogue.json")
    try:
        raw = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise CatalogueError(f"The dataset catalogue {path} is not valid JSON: {e}") from e
    entries = raw.get("datasets", {})
    for name, entry in entries.items():
        missing = [k for k in _REQUIRED if k not in entry]
        if missing:
            raise CatalogueError(f"Catalogue entry {name} in {path} lacks {missing}.")
        sha = entry.get("sha256")
        if sha is not None and (len(sha) != 64 or any(c not in "0123456789abcdefABCDEF" for c in sha)):
            raise CatalogueError(f"Catalogue entry {name} in {path} has sha256 {sha!r}, not 64 hex digits.")
    return entries


class _URLs:
    """fastai v1's `URLs`: one attribute per catalogue dataset (`URLs.PETS`, `URLs.MNIST_SAMPLE`, ...).

    A dataset's value is its catalogue URL without the archive extension, as in fastai v1
    (`URLs.DIGITS` is 'packaged:digits', the archive shipped in the package); `untar_data` accepts it
    with or without the extension. The folders come from the config, read afresh on each access.
    """

    S3 = "https://s3.amazonaws.com/fast-ai-"
    S3_IMAGE = f"{S3}imageclas/"
    S3_IMAGELOC = f"{S3}imagelocal/"
    S3_NLP = f"{S3}nlp/"
    S3_COCO = f"{S3}coco/"
    S3_MODEL = f"{S3}modelzoo/"
    S3_SAMPLE = f"{S3}sample/"

    def __init__(self, catalogue: dict[str, dict]):
        self._names = sorted(catalogue)
        for name, entry in catalogue.items():
            setattr(self, name, strip_archive_extension(entry["url"]))

    @property
    def LOCAL_PATH(self) -> Path:
        """The current folder, as in fastai v1."""
        return Path.cwd()

    @property
    def DATA_PATH(self) -> Path:
        """Where datasets are extracted (`[paths] data` in config.ini)."""
        return get_config().data_path

    @property
    def ARCHIVE_PATH(self) -> Path:
        """Where downloaded archives are kept (`[paths] archive`)."""
        return get_config().archive_path

    @property
    def MODEL_PATH(self) -> Path:
        """Where model files are kept (`[paths] models`)."""
        return get_config().model_path

    def names(self) -> list[str]:
        """The catalogue's dataset names."""
        return list(self._names)

    def __getattr__(self, name):
        close = difflib.get_close_matches(name.upper(), self.__dict__.get("_names", []), n=3)
        hint = f" Did you mean {', '.join('URLs.' + c for c in close)}?" if close else ""
        raise AttributeError(f"URLs has no dataset {name!r}.{hint} URLs.names() lists them all.")

    def __repr__(self):
        return f"URLs({', '.join(self._names)})"


URLs = _URLs(load_catalogue())


@dataclass(frozen=True)
class _Source:
    """Where one archive comes from (a URL to fetch, or a file on disk) and where it goes."""
    label: str  # what the user asked for, for messages
    url: str | None  # http(s) URL to fetch; None when the archive is `local`
    local: Path | None
    archive_name: str  # file name in the archive folder
    folder: str  # folder name in the data folder
    size: int | None = None
    sha256: str | None = None
    upstream: str | None = None  # the catalogue URL before the mirror, for messages


def _resolve(url) -> _Source:
    """A catalogue name ('PETS', 'pets'), a catalogue URL with or without extension, an http(s) or
    file:// URL, or a local archive path -> `_Source`."""
    catalogue = load_catalogue()
    text = os.fspath(url)
    if not isinstance(url, os.PathLike):
        key = strip_archive_extension(text.split("?")[0]).rstrip("/").lower()
        for name, entry in catalogue.items():
            if key in (strip_archive_extension(entry["url"]).lower(), name.lower(), entry["folder"].lower()) \
                    or key.replace("-", "_") == name.lower():
                return _catalogue_source(name, entry)
    if text.startswith(("http://", "https://")):
        name = unquote(urlsplit(text).path.rstrip("/").rsplit("/", 1)[-1])
        if not name:
            raise CatalogueError(f"Cannot tell the archive's file name from {text!r}; pass fname=.")
        if "." not in name:  # fastai v1: a URL without extension means its .tgz
            parts = urlsplit(text)
            text, name = parts._replace(path=parts.path.rstrip("/") + ".tgz").geturl(), name + ".tgz"
        return _Source(text, text, None, name, strip_archive_extension(name))
    if text.startswith("packaged:"):
        raise CatalogueError(f"{text!r} is not in the catalogue; URLs.names() lists the known datasets.")
    path = Path(unquote(urlsplit(text).path) if text.startswith("file://") else text).expanduser()
    if path.is_file() or text.startswith("file://") or os.sep in text or "/" in text:
        return _Source(text, None, path, path.name, strip_archive_extension(path.name))
    close = difflib.get_close_matches(text.upper(), list(catalogue), n=3)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    raise CatalogueError(f"{text!r} is not a dataset in the catalogue, a URL or an existing file.{hint} "
                         "URLs.names() lists the known datasets.")


def _catalogue_source(name: str, entry: dict) -> _Source:
    url = entry["url"]
    size = entry.get("size")
    sha = entry.get("sha256")
    if url.startswith("packaged:"):
        path = packaged_file(url[len("packaged:"):])
        return _Source(name, None, path, path.name, entry["folder"], size, sha, url)
    archive_name = url.rstrip("/").rsplit("/", 1)[-1]
    mirror = get_config().mirror
    fetch = _mirror_url(url, mirror) if mirror else url
    if fetch.startswith("file://"):
        return _Source(name, None, Path(unquote(urlsplit(fetch).path)), archive_name, entry["folder"], size, sha, url)
    return _Source(name, fetch, None, archive_name, entry["folder"], size, sha, url)


def _mirror_url(url: str, mirror: str) -> str:
    """`url` with its scheme and host replaced by `mirror` (which may carry a path of its own)."""
    if not mirror.startswith(("http://", "https://", "file://")):
        raise ConfigError(f"The mirror {mirror!r} (FASTBASE_MIRROR or mirror in config.ini) must start with "
                          "http://, https:// or file://.")
    return mirror.rstrip("/") + "/" + urlsplit(url).path.lstrip("/")


@contextlib.contextmanager
def _locked(name: str):
    """Hold an exclusive lock on `<archive folder>/.locks/<name>.lock` (a no-op where unsupported)."""
    if fcntl is None:
        yield
        return
    locks = get_config().archive_path / ".locks"
    locks.mkdir(parents=True, exist_ok=True)
    with open(locks / f"{name}.lock", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def download_data(url, fname=None, force: bool = False, expected_sha256: str | None = None, *,
                  retries: int = 5, backoff: float = 1.0, timeout: float = 30.0) -> Path:
    """Make sure the archive for `url` is on disk and intact; returns its path.

    `url` is anything `untar_data` accepts. The archive goes to `fname`, by default
    `<archive folder>/<file name of the URL>`; an archive already on disk (a local path, a file://
    URL, the packaged DIGITS) is used where it is unless `fname` is given. The catalogue's size and
    sha256 are checked (size alone where the catalogue has no sha256); `expected_sha256` replaces
    both for files the catalogue does not know, or a newer version of one it does. `force` fetches
    again even if the archive is present. In offline mode a missing archive raises `OfflineError`
    naming where to put it. `retries`, `backoff` and `timeout` are passed to `download_url`.
    """
    src = _resolve(url)
    size, sha = (None, expected_sha256) if expected_sha256 else (src.size, src.sha256)
    if src.local is not None and fname is None:
        if not src.local.is_file():
            raise DownloadError(f"The archive {src.local} (for {src.label}) does not exist.")
        check_file(src.local, size, sha, src.label, delete=False)
        return Path(src.local)
    dest = Path(fname).expanduser() if fname is not None else get_config().archive_path / src.archive_name
    with _locked(f"{dest.name}.download"):
        if force:
            dest.unlink(missing_ok=True)
            dest.with_name(dest.name + ".part").unlink(missing_ok=True)
        if dest.is_file():
            try:
                check_file(dest, size, sha, src.label)
                return Path(dest)
            except ChecksumError:
                if _offline():
                    raise
                warnings.warn(f"{dest} failed its size/sha256 check and was deleted; downloading it again.",
                              stacklevel=2)
        if src.local is not None:
            _copy_checked(src, dest, size, sha)
        elif _offline():
            raise OfflineError(_offline_message(src, dest))
        else:
            download_url(src.url, dest, size=size, sha256=sha, retries=retries, backoff=backoff, timeout=timeout)
    return Path(dest)


def _copy_checked(src: _Source, dest: Path, size, sha) -> None:
    """Copy a local archive to `dest` through a temporary name, checked before it is renamed."""
    if not src.local.is_file():
        raise DownloadError(f"The archive {src.local} (for {src.label}) does not exist.")
    part = dest.with_name(dest.name + ".part")
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src.local, part)
    check_file(part, size, sha, str(src.local))
    os.replace(part, dest)


def _offline() -> bool:
    return get_config().offline


def _offline_message(src: _Source, dest: Path) -> str:
    facts = ([f"{src.size:,} bytes"] if src.size else []) + ([f"sha256 {src.sha256}"] if src.sha256 else [])
    what = f"{src.upstream or src.url}{' (' + ', '.join(facts) + ')' if facts else ''}"
    return (f"fastbase is offline (FASTBASE_OFFLINE or offline in config.ini) and the archive for {src.label} is "
            f"not on disk. Download {what} on a machine with network, put it at {dest} and call again; or turn "
            "offline mode off.")


def untar_data(url, fname=None, dest=None, force_download: bool = False, expected_sha256: str | None = None, *,
               retries: int = 5, backoff: float = 1.0, timeout: float = 30.0,
               max_size: int = MAX_EXTRACTED_SIZE, max_ratio: float = MAX_RATIO) -> Path:
    """Download (if needed) and extract the dataset `url`; returns the folder holding its files.

    `url`: a catalogue name ('PETS' or 'pets'), `URLs.X`, a URL (http, https or file://, with or
    without `.tgz`: as in fastai v1, `.tgz` is appended to a URL whose last part has no extension at
    all), or the path of a local archive. The folder is `<data folder>/<name>`, where name is the
    catalogue's folder (`oxford-iiit-pet`) or the archive's name without extension. As in fastai v1.0.61,
    `dest` is the folder to put that folder in (`untar_data(URLs.PETS, dest='/big')` returns
    `/big/oxford-iiit-pet`), and `fname` is where to keep the archive (see `download_data`).

    A folder already there is returned at once, with no network. `force_download` downloads and
    extracts again, swapping the new folder in only when complete. Extraction refuses unsafe members
    (`UnsafeArchiveError`); `max_size` and `max_ratio` bound the uncompressed size (archive bombs).
    """
    src = _resolve(url)
    folder = (Path(dest).expanduser() if dest is not None else get_config().data_path) / src.folder
    if folder.is_dir() and not force_download:
        return folder
    with _locked(f"{folder.name}.extract"):
        if folder.is_dir() and not force_download:  # another process finished while we waited
            return folder
        archive = download_data(url, fname, force=force_download and src.local is None,
                                expected_sha256=expected_sha256, retries=retries, backoff=backoff, timeout=timeout)
        extract_archive(archive, folder, replace=force_download, max_size=max_size, max_ratio=max_ratio)
    return folder
