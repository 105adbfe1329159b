"""Layer 0: writing files so that a crash never leaves a half-written one under its final name,
and clearing the temporary files and folders that a killed process left behind.

Every writer in fastbase (model saves, exports, checkpoints, extracted archives) names its
temporaries `.NAME.PID.SUFFIX` beside the final path: `remove_stale_temps` knows them by that name
and deletes those whose process has died.
"""
from __future__ import annotations

import errno
import hashlib
import os
import pathlib
import shutil

from .helpers import FastbaseError

__all__ = ["WriteFailedError", "atomic_write", "file_sha256", "fsync_dir", "pid_alive", "remove_stale_temps",
           "temp_path"]


class WriteFailedError(FastbaseError, OSError):
    """A file could not be written (disk full, I/O error...); the previous file under its name is kept.
    `errno` is the operating system's error number. An OSError too, as the failure it reports."""

    def __init__(self, message: str, errno_: int | None = None):
        super().__init__(message)
        self.errno = errno_


def temp_path(path, suffix: str = ".tmp") -> pathlib.Path:
    """`.NAME.PID.SUFFIX` beside `path`: this process's temporary for it."""
    path = pathlib.Path(path)
    return path.with_name(f".{path.name}.{os.getpid()}{suffix}")


def fsync_dir(folder) -> None:
    """Make a rename in `folder` durable too (not possible on every platform, e.g. Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass


def atomic_write(path, write, before_replace=None, size: int | None = None) -> pathlib.Path:
    """Call `write(tmp_path)`, fsync the file, then rename it onto `path` (and fsync the folder), so a
    crash leaves either the old file or the complete new one. `before_replace()` runs just before
    the rename (e.g. to rotate older copies). Temporaries of dead processes beside `path` are
    removed first. A write that fails (disk full, I/O error, Ctrl-C) removes its temporary and leaves
    the previous `path` as it was; an OSError becomes `WriteFailedError` naming `path`, the bytes
    needed (`size` when the caller knows it, else at least what was written) and the space free.
    Returns `path`."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path)
    tmp = temp_path(path)
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        if before_replace is not None:
            before_replace()
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except OSError as e:
        raise _write_failed(path, tmp, e, size) from e
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def _write_failed(path: pathlib.Path, tmp: pathlib.Path, error: OSError, size: int | None) -> WriteFailedError:
    """The error for a failed write of `path`: what failed, how much room it needed, what is free."""
    try:
        written = tmp.stat().st_size
    except OSError:
        written = 0
    needed = f"about {size:,} bytes" if size else f"at least {written:,} bytes (written before it failed)"
    try:
        free = f"{shutil.disk_usage(path.parent).free:,} bytes are free there"
    except OSError:
        free = "the free space there is unknown"
    code = error.errno
    what = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is used up",
            errno.EIO: "an input/output error on the disk"}.get(code, error.strerror or str(error))
    kept = f"the previous {path.name} is unchanged" if path.exists() else f"no {path.name} was written"
    advice = "free some space (or choose another folder)" if code in (errno.ENOSPC, errno.EDQUOT) else "check the disk"
    return WriteFailedError(f"Could not write {path}: {what}. It needs {needed}; {free}. Nothing was lost: {kept}; "
                            f"{advice} and save again.", code)


def remove_stale_temps(path, suffixes=(".tmp",)) -> list[pathlib.Path]:
    """Delete the temporaries (`.NAME.PID...` ending in one of `suffixes`) that processes now dead
    left beside `path`; returns what was deleted. A live process's temporaries are left alone."""
    path = pathlib.Path(path)
    prefix, removed = f".{path.name}.", []
    if not path.parent.is_dir():
        return removed
    for entry in path.parent.iterdir():
        if not (entry.name.startswith(prefix) and entry.name.endswith(tuple(suffixes))):
            continue
        pid = entry.name[len(prefix):].split(".", 1)[0]
        if pid.isdigit() and not pid_alive(int(pid)):
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
            removed.append(entry)
    return removed


def pid_alive(pid: int) -> bool:
    """True unless process `pid` is known to be gone (on Windows, always True: `os.kill(pid, 0)` would
    end the process there)."""
    if pid == os.getpid() or os.name == "nt":
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


_HASH_CHUNK = 2**20


def file_sha256(path, hasher=None) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks (or fed into `hasher`, returned updated): the one
    hash of fastbase, for downloads (`fastbase.download`) and served models (`fastbase.serve`)."""
    hasher = hasher or hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_HASH_CHUNK):
            hasher.update(chunk)
    return hasher.hexdigest()
