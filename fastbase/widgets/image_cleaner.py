"""Layer 8: `ImageCleaner`, the Jupyter widget (ipywidgets) of lesson 2 that shows a page of images
with their labels, lets the user change a label or delete an image, and keeps `cleaned.csv` in the
data folder up to date after every change (written atomically; the image files are never touched).

The widget is one ipywidgets box whose children are replaced page by page, so it displays as a
cell's value and works wherever ipywidgets does (Jupyter Notebook, JupyterLab, VS Code); every
control is reachable from code (`cleaner.cards[i].dropdown`, `.delete`, `cleaner.next_button`), which
is how the tests drive it. Thumbnails are made for the page shown only, so a large set opens at once.
"""
from __future__ import annotations

import html
import io

import PIL.Image

from ..core import FastbaseError, Path
from .cleaning import CleanedTable, CleaningError, as_cleaning_set

__all__ = ["ImageCard", "ImageCleaner", "thumbnail"]


def _ipywidgets():
    try:
        import ipywidgets
    except ImportError as e:
        raise FastbaseError("ImageCleaner is a Jupyter widget and needs ipywidgets: "
                            "pip install 'fastbase[widgets]' (or pip install ipywidgets).") from e
    return ipywidgets


def thumbnail(fn, size: int = 150) -> bytes:
    """JPEG bytes of image file `fn` scaled so that its longer side is `size` pixels (tiny images are
    enlarged with square pixels, so that an 8x8 digit stays readable)."""
    with PIL.Image.open(fn) as img:
        img.draft("RGB", (size, size))  # a JPEG decodes at a fraction of its size when that is enough
        img = img.convert("RGB")
        scale = size / max(img.size)
        new_size = tuple(max(1, round(side * scale)) for side in img.size)
        img = img.resize(new_size, PIL.Image.Resampling.NEAREST if scale >= 2 else PIL.Image.Resampling.LANCZOS)
    out = io.BytesIO()
    img.save(out, format="JPEG", quality=85)
    return out.getvalue()


class ImageCard:
    """The widgets of one image on a page: `image` (its thumbnail, or a note when the file cannot be
    read), `dropdown` (its label), `delete` (a toggle: leave it out of cleaned.csv); `file`, `box`."""

    def __init__(self, cleaner: ImageCleaner, file: Path, caption: str):
        w, table = cleaner._w, cleaner.table
        self.file, self.cleaner = file, cleaner
        try:
            self.image = w.Image(value=thumbnail(file, cleaner.img_size), format="jpg")
        except (OSError, ValueError, SyntaxError, PIL.Image.DecompressionBombError) as e:
            self.image = w.HTML(f"<b>cannot read this file</b><br>{html.escape(f'{type(e).__name__}: {e}')}")
        label = table.label(file)
        options = [*cleaner.classes, *([label] if label not in cleaner.classes else [])]
        self.dropdown = w.Dropdown(options=options, value=label, layout=w.Layout(width="auto"))
        deleted = table.is_deleted(file)
        self.delete = w.ToggleButton(value=deleted, description="Delete", button_style="danger" if deleted else "",
                                     layout=w.Layout(width="auto"))
        title = html.escape(str(file))
        self.caption = w.HTML(f'<span title="{title}" style="font-size:smaller">{html.escape(caption)}</span>')
        self.box = w.VBox([self.image, self.caption, self.dropdown, self.delete],
                          layout=w.Layout(width=f"{cleaner.img_size + 20}px", margin="4px"))
        self.dropdown.observe(self._relabel, names="value")
        self.delete.observe(self._toggle_delete, names="value")

    def _relabel(self, change) -> None:
        self.cleaner.table.set_label(self.file, change["new"])
        self.cleaner._changed()

    def _toggle_delete(self, change) -> None:
        self.cleaner.table.set_deleted(self.file, change["new"])
        self.delete.button_style = "danger" if change["new"] else ""
        self.cleaner._changed()


class ImageCleaner:
    """Shows the images `fns_idxs` of `dataset` (what `DatasetFormatter` returns) `batch_size` at a time,
    each with its label in a dropdown and a Delete toggle; `duplicates=True` shows `fns_idxs` as pairs
    (`from_similars`), `batch_size` pairs a page. Every change rewrites `path/csv_name` (name,label;
    names relative to `path`) at once: train on it with
    `ImageDataBunch.from_csv(path, csv_labels='cleaned.csv')`.

    The CSV lists every labelled image of the DataBunch that `dataset` came from, not only those
    shown. When the CSV was written by a previous cleaner on the same data, its decisions are carried (see
    `CleanedTable`). In duplicates mode a pair is left out when one of its images was deleted before
    its page was shown. `deleted` and `relabelled` report this cleaner's decisions."""

    def __init__(self, dataset, fns_idxs, path, duplicates: bool = False, batch_size: int = 5,
                 csv_name: str = "cleaned.csv", img_size: int = 150):
        self._w = w = _ipywidgets()
        self.ds, self.duplicates, self.img_size = as_cleaning_set(dataset), bool(duplicates), int(img_size)
        if int(batch_size) < 1:
            raise CleaningError(f"batch_size must be at least 1, got {batch_size}.")
        idxs = _positions(fns_idxs, len(self.ds))
        if self.duplicates and len(idxs) % 2:
            raise CleaningError(f"duplicates=True shows pairs, so fns_idxs needs an even length; got {len(idxs)}. "
                                "Pass the idxs that DatasetFormatter.from_similars returns.")
        step = 2 if self.duplicates else 1
        groups = [idxs[i:i + step] for i in range(0, len(idxs), step)]
        self.pages = [groups[i:i + int(batch_size)] for i in range(0, len(groups), int(batch_size))]
        self.path = Path(path)
        self.table = CleanedTable(self.ds, self.path, self.path / csv_name)
        self.csv_path = self.table.csv_path
        self.classes = [str(c) for c in self.ds.classes]
        self.page, self.cards, self.skipped, self._shown = 0, [], 0, {}
        self.status, self.grid = w.HTML(), w.VBox()
        self.prev_button = w.Button(description="Previous batch", icon="arrow-left")
        self.next_button = w.Button(description="Next batch", button_style="primary", icon="arrow-right")
        self.prev_button.on_click(self.previous_batch)
        self.next_button.on_click(self.next_batch)
        self.widget = w.VBox([self.status, self.grid, w.HBox([self.prev_button, self.next_button])])
        self.table.save()
        self._render()

    # --- what the session decided ---------------------------------------------------------------
    @property
    def deleted(self) -> list[Path]:
        """The images left out of the CSV."""
        return sorted(Path(k) for k in self.table.deleted)

    @property
    def relabelled(self) -> dict:
        """{image: new label} for the images kept with a label other than the data's."""
        return self.table.relabelled()

    # --- navigation -------------------------------------------------------------------------------
    def next_batch(self, _=None) -> None:
        """Show the next page (after the last one: a summary)."""
        if self.page < len(self.pages):
            self.page += 1
            self._render()

    def previous_batch(self, _=None) -> None:
        if self.page > 0:
            self.page -= 1
            self._render()

    def _groups(self, page: int) -> list:
        """The groups (one image, or a pair) of `page`, fixed at its first showing."""
        if page not in self._shown:
            groups = self.pages[page]
            if self.duplicates:
                kept = [g for g in groups if not any(self.table.is_deleted(self.ds.items[i]) for i in g)]
                self.skipped += len(groups) - len(kept)
                groups = kept
            self._shown[page] = groups
        return self._shown[page]

    def _render(self) -> None:
        w = self._w
        self.cards, rows = [], []
        if self.page < len(self.pages):
            for group in self._groups(self.page):
                cards = [ImageCard(self, self.ds.items[i], self._caption(i)) for i in group]
                self.cards += cards
                rows.append(cards)
        if self.duplicates:
            boxes = [w.HBox([c.box for c in pair], layout=w.Layout(border="1px solid #ddd", margin="2px"))
                     for pair in rows]
        else:
            boxes = [w.HBox([c.box for pair in rows for c in pair], layout=w.Layout(flex_flow="row wrap"))]
        self.grid.children = tuple(boxes)
        self.prev_button.disabled = self.page == 0
        self.next_button.disabled = self.page >= len(self.pages)
        self._update_status()

    def _caption(self, i: int) -> str:
        return _relative_name(self.ds.items[i], self.path)

    # --- after each change --------------------------------------------------------------------------
    def _changed(self) -> None:
        self.table.save()
        self._update_status()

    def _update_status(self) -> None:
        n_pages, table = len(self.pages), self.table
        counts = f"{len(table.deleted)} deleted, {len(table.relabelled())} relabelled; saved to {self.csv_path}"
        if not self.pages:
            where = "No images to show."
        elif self.page >= n_pages:
            where = (f"No more images. Train on the cleaned data with ImageDataBunch.from_csv(path, "
                     f"csv_labels='{self.csv_path.name}').")
        else:
            where = f"{'Pairs' if self.duplicates else 'Images'}: page {self.page + 1} of {n_pages}."
        notes = []
        if table.carried:
            notes.append(f"{table.carried} decisions carried from the existing {self.csv_path.name}")
        if self.skipped:
            notes.append(f"{self.skipped} pairs skipped: one of their images was already deleted")
        self.status.value = html.escape(" ".join([where, counts + ".", *(n + "." for n in notes)]))

    # --- display ------------------------------------------------------------------------------------
    def _repr_mimebundle_(self, **kwargs):
        return self.widget._repr_mimebundle_(**kwargs)

    def __repr__(self):
        return (f"ImageCleaner({len(self.pages)} pages, {len(self.table.deleted)} deleted, "
                f"{len(self.table.relabelled())} relabelled, csv={self.csv_path})")


def _positions(fns_idxs, n: int) -> list[int]:
    """`fns_idxs` (a list or tensor of positions) as ints, each checked against the set's length."""
    idxs = [int(i) for i in fns_idxs]
    outside = [i for i in idxs if not 0 <= i < n]
    if outside:
        raise CleaningError(f"fns_idxs has positions {outside[:5]} outside the data set, which has {n} images "
                            f"(positions 0 to {n - 1}).")
    return idxs


def _relative_name(fn: Path, path: Path) -> str:
    try:
        return Path(fn).resolve().relative_to(Path(path).resolve()).as_posix()
    except ValueError:
        return Path(fn).name
