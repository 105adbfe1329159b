"""Layer 8: notebook widgets for cleaning an image data set (lesson 2 of the course): fastai v1's
`from fastai.widgets import *` is `from fastbase.widgets import *`.

`DatasetFormatter().from_toplosses(learn)` or `.from_similars(learn)` choose the images to look at,
`ImageCleaner(ds, idxs, path)` shows them and keeps `path/cleaned.csv` up to date. The widget needs
ipywidgets (`pip install 'fastbase[widgets]'`); the formatter does not. `ClassConfusion` (fastai v1's
`fastai.widgets.class_confusion`) is `fastbase.interpret`'s, offered here under fastai's import path.
"""
from ..interpret import ClassConfusion
from .cleaning import CleanedTable, CleaningError, CleaningSet
from .formatter import DatasetFormatter
from .image_cleaner import ImageCleaner

__all__ = ["ClassConfusion", "CleanedTable", "CleaningError", "CleaningSet", "DatasetFormatter", "ImageCleaner"]
