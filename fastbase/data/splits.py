"""Layer 2: the ways an ItemList splits into training and validation items (`SplitMixin`, the split
methods of `ItemList`). Each returns an `ItemLists`; a random split with `seed=None` draws from
numpy's global stream, so `np.random.seed(2)` before building the data gives the same split every
run, as in fastai v1; with a `seed` it has a stream of its own and leaves the global one alone.
"""
from __future__ import annotations

import numpy as np

from ..core import Path
from .base import DataError, format_list
from .label_lists import ItemLists

__all__ = ["SplitMixin", "random_stream"]


class SplitMixin:
    """Split methods for an ItemList (which has `items`, `path`, `inner_df` and indexing)."""

    def split_by_idxs(self, train_idx, valid_idx) -> ItemLists:
        """Training and validation items at the given positions."""
        n = len(self)
        train_idx, valid_idx = [int(i) for i in train_idx], [int(i) for i in valid_idx]
        bad = [i for i in train_idx + valid_idx if not -n <= i < n]
        if bad:
            raise DataError(f"Split indices {format_list(bad)} are out of range for {n} items.")
        return ItemLists(self.path, self[train_idx], self[valid_idx], train_idx, valid_idx)

    def split_by_idx(self, valid_idx) -> ItemLists:
        """The items at `valid_idx` for validation, the others for training."""
        valid = {int(i) % max(1, len(self)) for i in valid_idx}
        return self.split_by_idxs([i for i in range(len(self)) if i not in valid], sorted(valid))

    def split_none(self) -> ItemLists:
        """Every item for training; an empty validation set."""
        return self.split_by_idxs(range(len(self)), [])

    def split_by_rand_pct(self, valid_pct: float = 0.2, seed: int | None = None) -> ItemLists:
        """`int(valid_pct * n)` random items for validation."""
        if not 0 <= valid_pct < 1:
            raise DataError(f"valid_pct must be in [0, 1), got {valid_pct}.")
        order = random_stream(seed).permutation(len(self))
        cut = int(valid_pct * len(self))
        return self.split_by_idxs(sorted(order[cut:].tolist()), sorted(order[:cut].tolist()))

    def split_subsets(self, train_size: float, valid_size: float, seed: int | None = None) -> ItemLists:
        """Random, disjoint fractions `train_size` and `valid_size` of the items (sum at most 1)."""
        if not (0 < train_size and 0 <= valid_size and train_size + valid_size <= 1):
            raise DataError(f"split_subsets needs 0 < train_size, 0 <= valid_size and a sum <= 1, got "
                            f"{train_size} and {valid_size}.")
        order = random_stream(seed).permutation(len(self))
        n_valid, n_train = int(valid_size * len(self)), int(train_size * len(self))
        return self.split_by_idxs(sorted(order[n_valid:n_valid + n_train].tolist()), sorted(order[:n_valid].tolist()))

    def split_by_valid_func(self, func) -> ItemLists:
        """Items for which `func(item)` is true for validation."""
        return self.split_by_idx([i for i, o in enumerate(self.items) if func(o)])

    def split_by_list(self, train, valid) -> ItemLists:
        """Training and validation items given as two lists (e.g. of file names)."""
        return ItemLists(self.path, self.new(list(train)), self.new(list(valid)))

    def split_by_files(self, valid_names) -> ItemLists:
        """Items whose file name is in `valid_names` for validation."""
        names = {Path(str(o)).name for o in valid_names}
        return self.split_by_valid_func(lambda o: Path(str(o)).name in names)

    def split_by_fname_file(self, fname, path=None) -> ItemLists:
        """Items named (one file name a line) in the file `path/fname` (default `self.path`) for validation."""
        file = Path(path if path is not None else self.path) / fname
        if not file.is_file():
            raise DataError(f"No file {file} listing the validation items; pass its name and `path=`.")
        return self.split_by_files([line.strip() for line in file.read_text().splitlines() if line.strip()])

    def split_by_folder(self, train: str = "train", valid: str = "valid") -> ItemLists:
        """Items under `path/train` for training and under `path/valid` for validation (others left out);
        a validation folder without items gives an empty validation set."""
        parts = [_parts(o, self.path) for o in self.items]
        train_parts, valid_parts = _parts(train), _parts(valid)
        train_idx = [i for i, p in enumerate(parts) if p[:len(train_parts)] == train_parts]
        valid_idx = [i for i, p in enumerate(parts) if p[:len(valid_parts)] == valid_parts]
        for name, idx, what in ((train, train_idx, "training"), (valid, valid_idx, "validation")):
            if not idx and (what == "training" or not (self.path / name).is_dir()):
                found = sorted({p[0] for p in parts if p})
                raise DataError(f"No items under the {what} folder {self.path / name} (the items lie in "
                                f"{format_list(found, 10) or 'no folder'} under {self.path}). Pass "
                                f"{'train' if what == 'training' else 'valid'}='<folder>'.")
        return self.split_by_idxs(train_idx, valid_idx)

    def split_from_df(self, col=2) -> ItemLists:
        """Rows whose column `col` (a name or position) is true for validation."""
        if self.inner_df is None:
            raise DataError("split_from_df needs items made by from_df or from_csv (this ItemList has no table).")
        df = self.inner_df
        name = df.columns[col] if isinstance(col, int) and col not in df.columns else col
        if name not in df.columns:
            raise DataError(f"The table has no column {name!r}; its columns: {list(df.columns)}.")
        return self.split_by_idx(np.nonzero(df[name].to_numpy().astype(bool))[0].tolist())


def _first_folder(o, path: Path) -> str:
    """The first folder of item `o` under `path` (of `o` itself when it is relative)."""
    p = Path(str(o))
    try:
        return p.relative_to(path).parts[0]
    except (ValueError, IndexError):
        return p.parts[0] if p.parts else ""


def _parts(o, path: Path | None = None) -> tuple:
    """The parts of `o`'s path (relative to `path` when under it)."""
    p = Path(str(o))
    if path is not None:
        try:
            p = p.relative_to(path)
        except ValueError:
            pass
    return tuple(x for x in p.parts if x != ".")


def random_stream(seed):
    """A random stream: its own for a `seed`; numpy's global one (as `np.random.seed` sets) for None.
    Every random split of fastbase draws from it (the data block API's, `CollabDataBunch`'s)."""
    return np.random if seed is None else np.random.default_rng(seed)
