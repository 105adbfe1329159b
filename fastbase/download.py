"""Layer 1: one HTTP(S) download that survives slow, broken and hostile networks.

`download_url` streams to `<dest>.part`, hashing (sha256) as the bytes arrive, and renames the file
onto `dest` only once its size and hash are right. A dropped connection, a timeout or a 5xx answer
is retried with exponential backoff, resuming with an HTTP `Range` request where the server honours
it (206) and starting afresh where it does not (200). A 4xx answer fails at once with the URL in
the message. A `.part` left by an earlier, interrupted run is resumed too (its bytes are hashed
once on start, so the whole file is still read only once).
"""
from __future__ import annotations

import hashlib
import os
import re
import shutil
import time

import requests

from .core import FastbaseError, Path
from .files import file_sha256
from .progress import progress_bar, progress_disabled

__all__ = ["ChecksumError", "DownloadError", "check_file", "download_url", "file_sha256", "show_progress"]

_CHUNK = 2**18  # a dropped connection loses the chunk being read: not too big, not too many
_MB = 2**20
_MAX_ATTEMPTS = 100  # an absolute bound, even for a server that drops the line after every few bytes
_MAX_SLEEP = 60.0
_BAR_EVERY = 0.2  # seconds between progress-bar redraws: drawing is slow next to writing a chunk


class DownloadError(FastbaseError):
    """The file could not be fetched: an HTTP error, too many failed retries, or no disk space."""


class ChecksumError(FastbaseError):
    """A file whose size or sha256 differs from what was expected; the bad file has been deleted."""


class _Transient(Exception):
    """A failure worth retrying: connection dropped, timeout, 5xx."""


def show_progress() -> bool:
    """Whether downloads draw a progress bar: the rule of every bar (`fastbase.progress.progress_disabled`:
    not when `defaults.silent` or `$FASTBASE_NO_BAR` is set, nor outside rank 0)."""
    return not progress_disabled()


def check_file(path, size: int | None = None, sha256: str | None = None, source: str = "",
               digest: str | None = None, delete: bool = True) -> None:
    """Raise `ChecksumError` (after deleting `path`, with `delete`) when its size or sha256 is not the
    expected one. `digest` is the sha256 already computed while the file was written (saves a read).
    """
    path = Path(path)
    actual = path.stat().st_size
    problem = None
    if size is not None and actual != size:
        problem = f"it has {actual:,} bytes where {size:,} were expected"
    elif sha256:
        digest = digest or file_sha256(path)
        if digest.lower() != sha256.lower():
            problem = f"its sha256 is {digest} where {sha256.lower()} was expected"
    if not problem:
        return
    origin = f" (from {source})" if source else ""
    if delete:
        path.unlink(missing_ok=True)
        raise ChecksumError(
            f"{path}{origin} is not the expected file: {problem}. It has been deleted. Call again to download "
            "it afresh; if that fails the same way, the source (or its mirror) serves a different file: check "
            "the mirror, or pass expected_sha256= for a file you trust.")
    raise ChecksumError(f"{path}{origin} is not the expected file: {problem}. Replace it with the right file, or "
                        "pass expected_sha256= for a file you trust.")


def download_url(url: str, dest, *, size: int | None = None, sha256: str | None = None, retries: int = 5,
                 backoff: float = 1.0, timeout: float = 30.0, progress: bool | None = None,
                 session: requests.Session | None = None) -> Path:
    """Download `url` to `dest` (resuming `dest`.part), check `size` and `sha256` when given; returns `dest`.

    `retries` failed attempts in a row are tolerated (an attempt that moved the download forward
    resets the count), waiting `backoff * 2**k` seconds (at most 60) between them. `timeout` bounds
    the connection and each wait for data. `progress` None follows `show_progress()`.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    job = _Download(url, dest.with_name(dest.name + ".part"), size, timeout, session)
    failures = 0
    try:
        job.start(show_progress() if progress is None else progress)
        for attempt in range(1, _MAX_ATTEMPTS + 1):
            before = job.offset
            try:
                if job.attempt():
                    break
            except _Transient as e:
                failures = 0 if job.offset > before else failures + 1
                if failures > retries or attempt == _MAX_ATTEMPTS:
                    kept = f"The {job.offset:,} bytes received are kept in {job.part}; call again to resume. " \
                        if job.offset else ""
                    raise DownloadError(
                        f"Gave up downloading {url} after {attempt} attempts ({e}). {kept}Or fetch the file "
                        f"another way and put it at {dest}, or use a closer copy (FASTBASE_MIRROR).") from None
                time.sleep(min(backoff * 2 ** max(failures - 1, 0), _MAX_SLEEP))
    finally:
        job.close()
    check_file(job.part, size, sha256, url, job.hasher.hexdigest())
    os.replace(job.part, dest)
    return dest


class _Download:
    """The state one download carries across attempts: the `.part` file, its hash and its length."""

    def __init__(self, url, part: Path, size, timeout, session):
        self.url = url
        self.part = part
        self.size = size
        self.timeout = timeout
        self.session = session or requests.Session()
        self.own_session = session is None
        self.hasher = hashlib.sha256()
        self.offset = 0
        self.total = size
        self.validator = None  # ETag or Last-Modified of the first answer, sent back as If-Range
        self.bar = None

    def start(self, show: bool) -> None:
        self.show = show
        if self.part.exists():
            if self.size is not None and self.part.stat().st_size > self.size:
                self.part.unlink()
            else:
                file_sha256(self.part, self.hasher)
                self.offset = self.part.stat().st_size

    def restart(self) -> None:
        self.part.unlink(missing_ok=True)
        self.hasher, self.offset = hashlib.sha256(), 0

    def close(self) -> None:
        if self.bar is not None and self.bar.last_v is not None:  # not finished: end the line it drew
            self.bar.on_interrupt()
        if self.own_session:
            self.session.close()

    def attempt(self) -> bool:
        """One request; True once the whole file is in `.part`. Raises `_Transient` for retryable failures."""
        headers = {"Accept-Encoding": "identity"}
        if self.offset:
            headers["Range"] = f"bytes={self.offset}-"
            if self.validator:
                headers["If-Range"] = self.validator
        try:
            with self.session.get(self.url, headers=headers, stream=True, timeout=self.timeout) as r:
                verdict = self._accept(r)
                return verdict == "done" or (verdict == "go" and self._receive(r))
        except requests.exceptions.SSLError as e:  # a certificate problem does not go away by retrying
            raise DownloadError(f"Downloading {self.url} failed the TLS check ({e}). Behind a proxy that "
                                "re-signs traffic, point REQUESTS_CA_BUNDLE at its certificate.") from e
        except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError) as e:
            raise _Transient(f"{type(e).__name__}: {e}") from None
        except requests.RequestException as e:  # a malformed URL and the like
            raise DownloadError(f"Cannot download {self.url}: {e}") from e

    def _accept(self, r: requests.Response) -> str:
        """Check the status and headers: 'go' (read the body), 'again' (ask anew) or 'done' (nothing to read)."""
        code = r.status_code
        if code >= 500 or code in (408, 429):
            raise _Transient(f"HTTP {code} {r.reason}")
        if code == 416 and self.offset:  # asked for bytes past the end: the .part is complete or wrong
            total = _content_range(r.headers.get("Content-Range", ""))[1]
            if self.offset == (self.size or total):
                return "done"
            self.restart()
            return "again"
        if code >= 400:
            raise DownloadError(f"Downloading {self.url} failed: HTTP {code} {r.reason}. Check the URL (or the "
                                "mirror in FASTBASE_MIRROR / config.ini); retrying will not help.")
        if code == 206:
            start, total = _content_range(r.headers.get("Content-Range", ""))
            if start != self.offset:
                self.restart()
                return "again"
        elif code == 200:
            if self.offset:  # the server ignored Range (or the file changed): start again from byte 0
                self.restart()
            length = r.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
        else:
            raise DownloadError(f"Downloading {self.url} got an unexpected HTTP {code} {r.reason}.")
        if self.size is not None and total is not None and total != self.size:
            self.restart()
            raise ChecksumError(f"{self.url} serves a file of {total:,} bytes where {self.size:,} were expected; "
                                "nothing was kept. Check the mirror, or pass expected_sha256= for a file you trust.")
        etag = r.headers.get("ETag", "")
        self.validator = self.validator or (etag if etag and not etag.startswith("W/") else None) \
            or r.headers.get("Last-Modified")
        self.total = self.size or total
        self._check_space()
        return "go"

    def _check_space(self) -> None:
        if self.total is None:
            return
        free = shutil.disk_usage(self.part.parent).free
        if self.total - self.offset > free:
            raise DownloadError(f"{self.url} needs {(self.total - self.offset) / 1e9:.2f} GB but {self.part.parent} "
                                f"has {free / 1e9:.2f} GB free. Free some space, or point [paths] archive in the "
                                "fastbase config.ini at a bigger disk.")

    def _receive(self, r: requests.Response) -> bool:
        """Append the body to `.part`, hashing as it goes; True when the file is complete."""
        self._open_bar()
        start_offset = self.offset
        started = time.monotonic()
        last_draw = 0.0
        too_long = False
        with open(self.part, "ab" if self.offset else "wb") as f:
            for chunk in r.iter_content(_CHUNK):
                if self.total is not None and self.offset + len(chunk) > self.total:
                    too_long = True
                    break
                f.write(chunk)
                self.hasher.update(chunk)
                self.offset += len(chunk)
                now = time.monotonic()
                if self.bar is not None and now - last_draw > _BAR_EVERY and self.bar.last_v is not None:
                    last_draw = now
                    self._draw(start_offset, now - started)
        if too_long:
            self.restart()
            raise ChecksumError(f"{self.url} sent more than the expected {self.total:,} bytes; nothing was kept. "
                                "Check the URL or the mirror.")
        if self.bar is not None and self.bar.last_v is not None:
            self._draw(start_offset, time.monotonic() - started)
        if self.total is not None and self.offset < self.total:
            raise _Transient(f"the connection closed after {self.offset:,} of {self.total:,} bytes")
        return True

    def _open_bar(self) -> None:
        if self.show and self.bar is None and self.total:
            self.bar = progress_bar(range(max(1, -(-(self.total - self.offset) // _MB))), leave=False)
            self.bar.update(0)
            self.bar_base = self.offset

    def _draw(self, start_offset: int, elapsed: float) -> None:
        speed = (self.offset - start_offset) / max(elapsed, 1e-6) / 1e6
        self.bar.comment = f"{self.offset / 1e6:,.1f}/{self.total / 1e6:,.1f} MB, {speed:.1f} MB/s"
        steps = max(self.offset - self.bar_base, 0) // _MB  # the bar counts MiB: cheap to draw, easy to read
        self.bar.update(self.bar.total if self.offset >= self.total else min(steps, self.bar.total - 1))


def _content_range(value: str) -> tuple[int | None, int | None]:
    """(first byte, total) from 'bytes 100-199/1000' or 'bytes */1000'; None where absent."""
    m = re.match(r"bytes\s+(?:(\d+)-\d+|\*)/(\d+|\*)", value.strip())
    if not m:
        return None, None
    start, total = m.groups()
    return (int(start) if start else None), (int(total) if total and total != "*" else None)
