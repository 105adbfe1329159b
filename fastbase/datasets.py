"""Layer 1: the dataset catalogue, downloads and the local cache.

Reads the catalogue shipped with the package (`datasets/catalogue.json` in the source tree) so
that every dataset fastbase knows is described in one place, not duplicated in code.
"""
from __future__ import annotations

import json
from importlib import resources

from .core import FastbaseError, Path

__all__ = ["CatalogueError", "load_catalogue", "packaged_file"]


class CatalogueError(FastbaseError, KeyError):
    """A dataset name that the catalogue does not hold, or a catalogue that is malformed."""

    def __str__(self):
        return self.args[0] if self.args else ""


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
    return entries
