"""Layer 1: safe extraction of dataset archives (.tgz/.tar.gz/.tar.bz2/.tar.xz/.tar, .zip, plain .gz).

An archive downloaded from the internet is untrusted input. Every member is checked before it is
written: it must land inside the destination (no absolute paths, no `..`, no symbolic or hard link
pointing out), it must be a plain file, folder or link (no device files or fifos), and the total
uncompressed size must stay under a cap and, past a floor, under a ratio of the archive's size (tar
and zip bombs). Tar archives are also extracted with the standard library's `filter='data'`, a
second line of defence that checks the real paths on disk. A refusal raises `UnsafeArchiveError`
naming the member.

Extraction is atomic: it happens in a hidden temporary folder beside the destination that is
renamed into place only when complete, so an interrupted run never leaves a folder that looks done.
"""
from __future__ import annotations

import gzip
import lzma
import os
import posixpath
import re
import shutil
import stat
import tarfile
import tempfile
import zipfile
import zlib

from .core import FastbaseError, Path
from .files import remove_stale_temps

__all__ = [
    "ARCHIVE_EXTENSIONS",
    "MAX_EXTRACTED_SIZE",
    "MAX_RATIO",
    "ArchiveError",
    "UnsafeArchiveError",
    "extract_archive",
    "strip_archive_extension",
]

ARCHIVE_EXTENSIONS = (".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz", ".tar", ".zip", ".gz")
MAX_EXTRACTED_SIZE = 100 * 2**30  # bytes; the largest fast.ai archive (Food-101) holds under 6 GB
MAX_RATIO = 100  # uncompressed/compressed; images and CSVs stay far below, zip bombs reach 1000+
_RATIO_FLOOR = 16 * 2**20  # small archives may compress as well as they like: they cannot hurt
_CHUNK = 2**20
_TEMP_SUFFIX = ".extracting"


class ArchiveError(FastbaseError):
    """An archive that is not in a format fastbase can extract, or that is truncated or corrupt."""


class UnsafeArchiveError(ArchiveError):
    """An archive member that would escape the destination, is a device file, or is absurdly large."""


def strip_archive_extension(name: str) -> str:
    """`name` without its archive extension: 'pets.tar.gz' -> 'pets', 'data.zip' -> 'data'."""
    lower = name.lower()
    for ext in ARCHIVE_EXTENSIONS:
        if lower.endswith(ext) and len(name) > len(ext):
            return name[: -len(ext)]
    return name


def extract_archive(archive, dest, *, replace: bool = False, max_size: int = MAX_EXTRACTED_SIZE,
                    max_ratio: float = MAX_RATIO) -> Path:
    """Extract `archive` so that its content ends up in the folder `dest`; returns `dest`.

    An archive holding one top-level folder (the usual `pets/...` layout) has that folder's content
    become `dest`, whatever the folder is called; otherwise `dest` holds the top-level entries.
    `dest` must not exist unless `replace`, which swaps the new folder in only once it is complete.
    `max_size` caps the total uncompressed bytes; `max_ratio` caps uncompressed/compressed size
    (checked once the total passes 16 MiB).
    """
    archive, dest = Path(archive), Path(dest)
    if not archive.is_file():
        raise ArchiveError(f"Archive {archive} does not exist or is not a file.")
    if dest.exists() and not replace:
        raise ArchiveError(f"{dest} already exists; delete it or pass replace=True to extract {archive} again.")
    dest.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(dest, (_TEMP_SUFFIX, ".content", ".old"))
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.{os.getpid()}.", suffix=_TEMP_SUFFIX, dir=dest.parent))
    try:
        budget = _Budget(archive, max_size, max_ratio)
        kind = archive_kind(archive)
        try:
            {"tar": _extract_tar, "zip": _extract_zip, "gz": _extract_gz}[kind](archive, tmp, budget)
        except UnsafeArchiveError:
            raise
        except (tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error, lzma.LZMAError, OSError) as e:
            if isinstance(e, OSError) and e.errno is not None:
                raise  # a real I/O problem (disk full, permissions): its message already names the file
            raise ArchiveError(f"{archive} is truncated or corrupt ({type(e).__name__}: {e}). Delete it and "
                               "download it again (untar_data(..., force_download=True)).") from e
        _move_into_place(tmp, dest, replace)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def archive_kind(path) -> str:
    """'tar' (any compression tarfile reads), 'zip' or 'gz', from the name and then the content."""
    path = Path(path)
    name = path.name.lower()
    if name.endswith(".zip") and zipfile.is_zipfile(path):
        return "zip"
    if tarfile.is_tarfile(path):
        return "tar"
    if zipfile.is_zipfile(path):
        return "zip"
    with open(path, "rb") as f:
        if f.read(2) == b"\x1f\x8b":
            return "gz"
    raise ArchiveError(f"{path} is not a tar, zip or gzip archive (or it is corrupt). fastbase extracts "
                       f"{', '.join(ARCHIVE_EXTENSIONS)}; delete the file and download it again.")


class _Budget:
    """Counts uncompressed bytes against the size and ratio caps (tar and zip bombs)."""

    def __init__(self, archive: Path, max_size: int, max_ratio: float):
        self.archive = archive
        self.max_size = max_size
        self.max_ratio = max_ratio
        self.compressed = max(archive.stat().st_size, 1)
        self.total = 0

    def add(self, nbytes: int, member: str) -> None:
        self.total += nbytes
        if self.total > self.max_size:
            raise UnsafeArchiveError(
                f"{self.archive}: member {member!r} takes the uncompressed size past {self.max_size:,} bytes "
                "(a possible archive bomb). Pass a larger max_size if the archive is trusted.")
        if self.total > _RATIO_FLOOR and self.total / self.compressed > self.max_ratio:
            raise UnsafeArchiveError(
                f"{self.archive}: member {member!r} takes the uncompressed size to {self.total:,} bytes, over "
                f"{self.max_ratio:g} times the archive's {self.compressed:,} bytes (a possible archive bomb). "
                "Pass a larger max_ratio if the archive is trusted.")


def _safe_name(archive: Path, name: str) -> str:
    """The member's path, normalised and relative; refuses absolute paths and paths that climb out."""
    unified = name.replace("\\", "/")  # a backslash is a separator on Windows: treat it as one everywhere
    if unified.startswith("/") or re.match(r"^[A-Za-z]:", unified):
        raise UnsafeArchiveError(f"{archive}: member {name!r} has an absolute path; refusing to extract it.")
    norm = posixpath.normpath(unified)
    if norm == ".." or norm.startswith("../"):
        raise UnsafeArchiveError(f"{archive}: member {name!r} would land outside the destination (it climbs "
                                 "out with '..'); refusing to extract it.")
    return norm


def _inside(root: str, path: str) -> bool:
    real = os.path.realpath(path)
    return real == root or real.startswith(root + os.sep)


def _check_tar_member(archive: Path, member: tarfile.TarInfo, root: str, budget: _Budget, links_on_disk: bool) -> None:
    """Refuse a member that escapes `root` (also through symbolic links already extracted, which are
    only looked for on disk once there are some), a device file or fifo, or one that breaks the budget."""
    name = _safe_name(archive, member.name)
    if member.ischr() or member.isblk() or member.isfifo():
        raise UnsafeArchiveError(f"{archive}: member {member.name!r} is a device file or fifo; refusing to extract it.")
    if not (member.isreg() or member.isdir() or member.issym() or member.islnk()):
        raise UnsafeArchiveError(f"{archive}: member {member.name!r} has an unsupported type {member.type!r}.")
    if member.issym() or member.islnk():
        target = member.linkname.replace("\\", "/")
        where = posixpath.join(posixpath.dirname(name), target) if member.issym() else target
        norm = posixpath.normpath(where)
        escapes = target.startswith("/") or norm == ".." or norm.startswith("../")
        if escapes or not _inside(root, os.path.join(root, norm)):
            kind = "symbolic" if member.issym() else "hard"
            raise UnsafeArchiveError(f"{archive}: member {member.name!r} is a {kind} link to {member.linkname!r}, "
                                     "outside the destination; refusing to extract it.")
    if links_on_disk and not _inside(root, os.path.join(root, name)):
        raise UnsafeArchiveError(f"{archive}: member {member.name!r} would land outside the destination through a "
                                 "link extracted before it; refusing to extract it.")
    if member.isreg():
        budget.add(member.size, member.name)


def _extract_tar(archive: Path, tmp: Path, budget: _Budget) -> None:
    root = os.path.realpath(tmp)
    with tarfile.open(archive, "r:*") as tar:
        def checked():
            links_on_disk = False
            for member in tar:  # lazily: each member is checked against what is already on disk
                _check_tar_member(archive, member, root, budget, links_on_disk)
                links_on_disk = links_on_disk or member.issym()
                yield member
        extra = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
        try:
            tar.extractall(tmp, members=checked(), **extra)
        except getattr(tarfile, "FilterError", ()) as e:
            raise UnsafeArchiveError(f"{archive}: member {e.tarinfo.name!r} refused by the standard library's "
                                     f"safety filter: {e}") from e


def _extract_zip(archive: Path, tmp: Path, budget: _Budget) -> None:
    with zipfile.ZipFile(archive) as zf:
        infos = zf.infolist()
        for info in infos:  # check everything first: the central directory declares every size up front
            _safe_name(archive, info.filename)
            mode = info.external_attr >> 16
            if stat.S_ISLNK(mode) or stat.S_ISCHR(mode) or stat.S_ISBLK(mode) or stat.S_ISFIFO(mode):
                raise UnsafeArchiveError(f"{archive}: member {info.filename!r} is a link or device file, which "
                                         "fastbase does not extract from zip archives.")
            budget.add(info.file_size, info.filename)
        for info in infos:
            target = tmp / _safe_name(archive, info.filename)
            if info.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            # zipfile stops at the declared size and checks the CRC, so a lying header cannot overflow
            with zf.open(info) as src, open(target, "wb") as out:
                shutil.copyfileobj(src, out, _CHUNK)


def _extract_gz(archive: Path, tmp: Path, budget: _Budget) -> None:
    """A plain gzip-compressed file becomes one file named like the archive without `.gz`."""
    name = archive.name[:-3] if archive.name.lower().endswith(".gz") else archive.name + ".out"
    with gzip.open(archive, "rb") as src, open(tmp / name, "wb") as out:
        while chunk := src.read(_CHUNK):
            budget.add(len(chunk), name)
            out.write(chunk)


def _move_into_place(tmp: Path, dest: Path, replace: bool) -> None:
    """Rename the finished extraction onto `dest` (its single top-level folder, if that is all it holds)."""
    entries = list(tmp.iterdir())
    src = entries[0] if len(entries) == 1 and entries[0].is_dir() and not entries[0].is_symlink() else tmp
    if src is tmp:  # keep `tmp` as the thing to clean up: move its content into a sibling first
        src = tmp.with_name(tmp.name + ".content")
        os.replace(tmp, src)
        tmp.mkdir()
    old = None
    if dest.exists() or dest.is_symlink():
        if not replace:
            raise ArchiveError(f"{dest} appeared while extracting; delete it and call again.")
        old = dest.with_name(f".{dest.name}.{os.getpid()}.{os.urandom(4).hex()}.old")
        os.replace(dest, old)
    os.replace(src, dest)
    if old is not None and old.is_dir() and not old.is_symlink():
        shutil.rmtree(old, ignore_errors=True)
    elif old is not None:
        old.unlink()
