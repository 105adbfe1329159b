"""Layer 0: telling a damaged or foreign file apart from a good one before anything in it is used.

fastbase's weight files (`Learner.save`, `Learner.export`) are `torch.save` zip archives holding a
plain dict. `with_digest` adds to that dict the SHA-256 of everything else in it (tensors by their
bytes, plain values by their repr), and `check_digest` recomputes it after loading: a flipped byte
anywhere in what is loaded is caught before a weight is used, while the file stays an ordinary
`torch.load(weights_only=True)` file (and can be memory-mapped). `FILE_FORMAT` is the version of
that layout; a file with a higher one was written by a newer fastbase.

`read_problem` says what is wrong with a file that did not load (empty, cut short, not a zip
archive, text), so that every reader names the file, its size and the damage the same way.
"""
from __future__ import annotations

import hashlib
import json
import pathlib
import zipfile

import torch

from .helpers import FastbaseError

__all__ = ["DIGEST_KEY", "FILE_FORMAT", "FORMAT_KEY", "DamagedFileError", "check_digest", "check_format",
           "file_size", "json_with_digest", "read_json_state", "read_problem", "state_digest", "with_digest"]

FILE_FORMAT = 1  # the layout of save/export files; raise it when a reader of the old one cannot read the new
FORMAT_KEY = "file_format"
DIGEST_KEY = "sha256"


class DamagedFileError(FastbaseError):
    """A file fastbase reads is empty, cut short, damaged, foreign or from a newer fastbase; the
    message names it, its size and what is wrong."""


def file_size(file) -> str:
    """'N bytes' for `file` (or 'unreadable size' when it cannot be stat'ed), for error messages."""
    try:
        return f"{pathlib.Path(file).stat().st_size:,} bytes"
    except OSError:
        return "unreadable size"


def _update(hasher, obj) -> None:
    """Feed `obj` (tensors, plain data, nested dicts/lists/tuples) into `hasher`, type-tagged, so that
    two different states never feed the same bytes."""
    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu().contiguous()
        hasher.update(f"T{t.dtype}{tuple(t.shape)}".encode())
        if t.numel():
            hasher.update(t.reshape(-1).view(torch.uint8).numpy())
    elif isinstance(obj, dict):
        hasher.update(f"D{len(obj)}".encode())
        for key, value in obj.items():
            _update(hasher, key)
            _update(hasher, value)
    elif isinstance(obj, (list, tuple)):
        hasher.update(f"{'L' if isinstance(obj, list) else 'U'}{len(obj)}".encode())
        for value in obj:
            _update(hasher, value)
    else:
        text = repr(obj).encode("utf-8", "surrogatepass")
        hasher.update(f"P{type(obj).__name__}{len(text)}:".encode())
        hasher.update(text)


def state_digest(state: dict) -> str:
    """Hex SHA-256 of `state` without its own digest entry: tensors by dtype, shape and bytes, the
    rest by type and repr, in the dict's order (which `torch.save`/`torch.load` keep)."""
    hasher = hashlib.sha256()
    _update(hasher, {k: v for k, v in state.items() if k != DIGEST_KEY})
    return hasher.hexdigest()


def with_digest(state: dict) -> dict:
    """`state` with the layout version (`FILE_FORMAT`) and its digest added, ready for `torch.save`."""
    state = {**state, FORMAT_KEY: FILE_FORMAT}
    state.pop(DIGEST_KEY, None)
    return {**state, DIGEST_KEY: state_digest(state)}


def check_format(state, file) -> None:
    """Refuse a state written in a newer layout than this fastbase reads."""
    found = state.get(FORMAT_KEY, 0) if isinstance(state, dict) else 0
    if not isinstance(found, int) or found > FILE_FORMAT:
        raise DamagedFileError(f"{file} ({file_size(file)}) was written by a newer fastbase "
                               f"({state.get('fastbase_version', 'unknown version')}, file format {found!r}; this "
                               f"one reads format {FILE_FORMAT} and older): upgrade fastbase to load it.")


def check_digest(state, file) -> None:
    """Refuse a loaded state whose content does not match the digest written with it. States without
    a digest (files of older fastbase versions, or plain state dicts from elsewhere) pass."""
    if not isinstance(state, dict) or DIGEST_KEY not in state:
        return
    check_format(state, file)
    if state[DIGEST_KEY] != state_digest(state):
        raise DamagedFileError(f"{file} ({file_size(file)}) is damaged: its content does not match the SHA-256 "
                               "written with it (a flipped bit on disk or in a copy). No weight from it was used; "
                               "copy or export it again.")


def read_problem(file, error: BaseException | None = None) -> str:
    """What is wrong with `file`, a weight file that failed to load (or that is about to be loaded):
    '' when nothing is visibly wrong."""
    file = pathlib.Path(file)
    try:
        size = file.stat().st_size
        with open(file, "rb") as f:
            head = f.read(64)
    except OSError as e:
        return f"it cannot be read ({e.strerror or e})"
    if size == 0:
        return "it is empty (0 bytes): a write that never finished, or a copy that failed"
    if head.startswith(b"FASTBASE-CHECKPOINT"):
        return "it is a training checkpoint, not a model file: resume it with fit(..., resume=file)"
    if head.startswith(b"PK\x03\x04"):
        if not zipfile.is_zipfile(file):
            return f"it is cut short ({size:,} bytes; the end of the archive is missing): a copy or download " \
                   "that did not finish, or a disk that filled up"
        return "" if error is None else f"its archive is damaged ({str(error).splitlines()[0][:160]})"
    if head[:1] == b"\x80":  # a pickle: torch's legacy (non-zip) format
        return "" if error is None else f"it is damaged or cut short ({str(error).splitlines()[0][:160]})"
    kind = "a text file" if all(32 <= b < 127 or b in b"\t\r\n" for b in head) else "not a PyTorch file"
    return f"it is not a fastbase file ({kind}, starting {head[:16]!r})"


def json_with_digest(state: dict) -> str:
    """`state` (plain data) as JSON text with its layout version and digest, computed on what JSON
    gives back (tuples become lists), so that `read_json_state` sees the same values."""
    return json.dumps(with_digest(json.loads(json.dumps(state))))


def read_json_state(file, required=(), what: str = "fastbase data file") -> dict:
    """The dict a fastbase JSON file (`json_with_digest`) holds, checked: an empty, cut short, binary,
    foreign (not a dict with the `required` keys), newer or damaged file raises `DamagedFileError`."""
    file = pathlib.Path(file)
    where = f"{file} ({file_size(file)})"
    try:
        raw = file.read_bytes()
    except OSError as e:
        raise DamagedFileError(f"Cannot read {file}: {e.strerror or e}.") from e
    if not raw.strip():
        raise DamagedFileError(f"{where} is empty: a write that never finished, or a copy that failed.")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DamagedFileError(f"{where} is not a {what}: byte {e.start} is not UTF-8 text (it starts "
                               f"{raw[:16]!r}).") from e
    try:
        state = json.loads(text)
    except json.JSONDecodeError as e:
        body = text.strip()
        if e.pos >= len(body) or (body[:1] == "{" and body[-1:] != "}"):  # the object never closes
            raise DamagedFileError(f"{where} is cut short: the JSON ends at byte {len(raw)} before it is "
                                   "complete (a copy or a write that did not finish).") from e
        raise DamagedFileError(f"{where} is not a {what} (not valid JSON: {e.msg} at line {e.lineno}, column "
                               f"{e.colno}).") from e
    missing = [k for k in required if k not in state] if isinstance(state, dict) else list(required)
    if missing:
        raise DamagedFileError(f"{where} is not a {what}: it has no {missing[0]!r} entry.")
    check_format(state, file)
    check_digest(state, file)
    return state
