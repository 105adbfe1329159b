"""Layer 2: the category encoding rule that every table task shares (tabular's `Categorify`,
collaborative filtering's users and items): the distinct values of a column, sorted, are the
names of codes 1..k, and code 0 (`#na#`) stands for a missing value or one not seen in training.
Also `require_pandas`, the one check that pandas (the `tabular` extra) is installed.
"""
from __future__ import annotations

import numpy as np

from .base import DataError

__all__ = ["NA_CATEGORY", "category_codes", "category_names", "plain_value", "require_pandas"]

NA_CATEGORY = "#na#"  # the name of code 0 of every categorical column: missing, or unseen in training


def require_pandas():
    """The pandas module, or a DataError saying how to install it (it is the `tabular` extra)."""
    try:
        import pandas as pd
    except ImportError as e:
        raise DataError("Tables (tabular data, collaborative filtering) are read with pandas: "
                        "pip install 'fastbase[tabular]' (or pip install pandas).") from e
    return pd


def plain_value(value):
    """A numpy scalar as the Python value (for plain exports); anything else as it is."""
    return value.item() if hasattr(value, "item") else value


def category_names(values) -> list:
    """The distinct values of a column (a pandas Series or array), missing ones left out, sorted
    (by their text when they do not compare), as plain Python values: the names of codes 1..k."""
    pd = require_pandas()
    distinct = pd.Series(values).dropna().unique()
    try:
        distinct = sorted(distinct)
    except TypeError:
        distinct = sorted(distinct, key=str)
    return [plain_value(v) for v in distinct]


def category_codes(values, names: list) -> np.ndarray:
    """int64 codes of `values`: 1 + the position in `names` (`category_names`' list), and 0
    (`#na#`) for a missing value or one not in `names`."""
    pd = require_pandas()
    return np.asarray(pd.Index(names).get_indexer(values), dtype=np.int64) + 1  # -1 becomes 0
