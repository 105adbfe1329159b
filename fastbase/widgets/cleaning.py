"""Layer 8: what a cleaning session works on and what it decides, without any widget.

`CleaningSet` is the data set that `DatasetFormatter` hands to `ImageCleaner`: image files and their
labels, plus the other labelled images of the same DataBunch (`rest`). `CleanedTable` holds the
session's decisions (a label per image, the images left out) and writes them as `cleaned.csv`
(`name,label`, names relative to the data folder), the file `ImageDataBunch.from_csv(path,
csv_labels='cleaned.csv')` reads. The CSV lists every labelled image of the DataBunch, not only the
ones shown, so training on it does not lose the half of the data that was not cleaned; the image
files themselves are never touched.
"""
from __future__ import annotations

import csv
import os

from ..core import FastbaseError, Path
from ..data import DatasetType
from ..files import atomic_write
from ..vision.label_table import read_csv_table

__all__ = ["CleanedTable", "CleaningError", "CleaningSet", "cleaning_set"]


class CleaningError(FastbaseError, ValueError):
    """Input a cleaning tool cannot use: the message names the value and what would work."""


class CleaningSet:
    """Image files with their labels (`items`, `labels`: the images `idxs` index), the DataBunch's
    `classes`, and `rest`: (file, label) of its other labelled images, which cleaned.csv keeps as they
    are. `x` and `y` are fastai's names for `items` and `labels`."""

    def __init__(self, items, labels, classes, rest=()):
        self.items, self.labels = [Path(fn) for fn in items], list(labels)
        if len(self.items) != len(self.labels):
            raise CleaningError(f"CleaningSet got {len(self.items)} files but {len(self.labels)} labels.")
        self.classes, self.rest = list(classes), [(Path(fn), label) for fn, label in rest]

    @property
    def x(self) -> list:
        return self.items

    @property
    def y(self) -> list:
        return self.labels

    def __len__(self) -> int:
        return len(self.items)

    def __repr__(self):
        return f"CleaningSet({len(self)} images, {len(self.classes)} classes, {len(self.rest)} others kept as they are)"


def _labelled(ds, what: str) -> tuple[list, list]:
    """(files, class names) of an image data set with single-label targets."""
    if getattr(ds, "multi_label", False):
        raise CleaningError(f"The {what} set is multi-label; ImageCleaner relabels single-label data only.")
    targets, classes = getattr(ds, "targets", None), getattr(ds, "classes", None)
    if targets is None or classes is None or not hasattr(ds, "items"):
        raise CleaningError(f"The {what} set ({type(ds).__name__}) has no labelled image files to clean: pass a "
                            "DataBunch's train_ds or valid_ds, or what DatasetFormatter returns.")
    return list(ds.items), [classes[int(t)] for t in targets]


def cleaning_set(data, ds_type: DatasetType | None = DatasetType.Valid) -> CleaningSet:
    """The images of `data` that `ds_type` names, in the order its loader reads them (the training set
    through the Fix loader: in order, not augmented), with the other set in `rest`; `ds_type=None`:
    training then validation images."""
    train, valid = _labelled(data.fix_dl.dataset, "training"), _labelled(data.valid_ds, "validation")
    if ds_type is None:
        return CleaningSet(train[0] + valid[0], train[1] + valid[1], data.classes)
    ds_type = DatasetType(ds_type)
    if ds_type in (DatasetType.Train, DatasetType.Fix):
        return CleaningSet(*train, data.classes, rest=zip(*valid))
    if ds_type == DatasetType.Valid:
        return CleaningSet(*valid, data.classes, rest=zip(*train))
    raise CleaningError(f"ds_type={ds_type.name}: the images to clean are the labelled training or validation "
                        "set (DatasetType.Train, DatasetType.Valid), or both (ds_type=None).")


def as_cleaning_set(ds) -> CleaningSet:
    """`ds` as a CleaningSet: as it is, or an image data set (e.g. `data.valid_ds`; then cleaned.csv
    holds only its images)."""
    if isinstance(ds, CleaningSet):
        return ds
    return CleaningSet(*_labelled(ds, "given"), ds.classes)


class CleanedTable:
    """The decisions of a cleaning session over `ds` (a CleaningSet), saved to `csv_path` as `name,label`
    rows with names relative to `path`; labels are kept as text, as the CSV holds them.

    When `csv_path` already exists and names some of these images (written by a previous cleaning
    pass over the same data, e.g. top losses before duplicates), its decisions are carried: its labels
    are kept, the images it leaves out start deleted, and its rows for other images are written back
    unchanged. `carried` says how many decisions came from it. A CSV naming none of these images
    belongs to other data and is refused rather than overwritten."""

    def __init__(self, ds: CleaningSet, path, csv_path):
        self.path, self.csv_path = Path(path), Path(csv_path)
        self.original = {_key(fn): str(label) for fn, label in [*zip(ds.items, ds.labels), *ds.rest]}
        self.labels, self.deleted, self.extra_rows, self.carried = dict(self.original), set(), [], 0
        if self.csv_path.is_file():
            self._carry(read_csv_table(self.csv_path))

    def _carry(self, rows) -> None:
        saved = {_key(self.path / name): (name, label) for name, label in rows}
        if saved and not saved.keys() & self.labels.keys():
            example = next(iter(saved.values()))[0]
            raise CleaningError(f"{self.csv_path} exists and names none of these images (e.g. {example}): it belongs "
                                "to other data. Move it away, or pass csv_name= to write another file.")
        for key in self.labels:
            if key not in saved:
                self.deleted.add(key)
            else:
                self.labels[key] = saved[key][1]
        self.extra_rows = [row for key, row in saved.items() if key not in self.labels]
        self.carried = len(self.deleted) + len(self.relabelled())

    def label(self, fn):
        return self.labels[_key(fn)]

    def set_label(self, fn, label) -> None:
        self.labels[_key(fn)] = str(label)

    def is_deleted(self, fn) -> bool:
        return _key(fn) in self.deleted

    def set_deleted(self, fn, deleted: bool) -> None:
        (self.deleted.add if deleted else self.deleted.discard)(_key(fn))

    def relabelled(self) -> dict:
        """{file: new label} for the images whose label differs from the data's."""
        return {Path(k): v for k, v in self.labels.items() if k not in self.deleted and v != self.original[k]}

    def rows(self) -> list[tuple[str, str]]:
        """(name relative to `path`, label) for every image kept, then the carried rows of other images."""
        kept = [(_relative(Path(key), self.path), label) for key, label in self.labels.items()
                if key not in self.deleted]
        return kept + self.extra_rows

    def save(self) -> Path:
        """Write the CSV atomically: a crash leaves the previous file or the complete new one."""
        def write(tmp):
            with open(tmp, "w", newline="", encoding="utf-8") as f:
                writer = csv.writer(f)
                writer.writerow(["name", "label"])
                writer.writerows(self.rows())
        return atomic_write(self.csv_path, write)


def _key(fn) -> str:
    """One spelling per file, so that a path given relative or absolute, with or without `..`, matches."""
    return os.path.normpath(os.path.abspath(fn))


def _relative(fn: Path, path: Path) -> str:
    """`fn` relative to `path` with `/` separators (as from_csv joins it back); absolute when that fails
    (another drive on Windows)."""
    try:
        return Path(os.path.relpath(fn, path)).as_posix()
    except ValueError:
        return fn.as_posix()
