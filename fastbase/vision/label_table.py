"""Layer 6: reading the (file name, label) rows behind `ImageDataBunch.from_csv` and `from_df`: a CSV
file through the csv module (pandas is not needed) or a pandas DataFrame, columns by position or name."""
from __future__ import annotations

import csv

from ..core import Path
from ..data import DataError, LabelError, format_list


def read_csv_table(csv_path: Path, fn_col=0, label_col=1, delimiter: str | None = None,
                   header="infer") -> list[tuple[str, str]]:
    """(name, label) rows of `csv_path`. `header='infer'` takes the first row as column names, None
    means there is none, an int names the header row."""
    if not csv_path.is_file():
        raise DataError(f"No label file {csv_path}; pass csv_labels= with its name inside {csv_path.parent}.")
    rows = _csv_rows(csv_path, delimiter)
    skip = 0 if header is None else (1 if header == "infer" else int(header) + 1)
    names = rows[skip - 1] if skip else None
    fn_i, label_i = (_column(c, names, csv_path) for c in (fn_col, label_col))
    short = [k + skip + 1 for k, r in enumerate(rows[skip:]) if len(r) <= max(fn_i, label_i)]
    if short:
        raise LabelError(f"Rows {format_list(short)} of {csv_path} have fewer than {max(fn_i, label_i) + 1} "
                         "columns; check `delimiter`, `fn_col` and `label_col`.")
    return [(r[fn_i], r[label_i]) for r in rows[skip:]]


def _csv_rows(csv_path: Path, delimiter: str | None) -> list[list[str]]:
    """The non-empty rows of a CSV file; a file that is empty, binary, not UTF-8 or not CSV is named
    with its size and what is wrong."""
    where = f"{csv_path} ({csv_path.stat().st_size:,} bytes)"
    try:
        with open(csv_path, newline="", encoding="utf-8-sig") as f:  # a BOM (Excel) is not part of the header
            rows = [r for r in csv.reader(f, delimiter=delimiter or ",") if r]
    except UnicodeDecodeError as e:
        raise DataError(f"{where} is not a UTF-8 text CSV: byte {e.start} ({e.object[e.start:e.start + 1]!r}) "
                        "cannot be read as text; save it as UTF-8 CSV.") from e
    except csv.Error as e:  # e.g. NUL bytes: a binary file, or one damaged on disk
        raise DataError(f"{where} is not a CSV file ({e}); check that it is the label file.") from e
    if not rows:
        raise DataError(f"{where} is empty: no (file name, label) rows in it.")
    return rows


def df_table(df, fn_col=0, label_col=1) -> list[tuple[str, str]]:
    """(name, label) rows of a pandas DataFrame; a missing label becomes ''."""
    try:
        import pandas as pd
    except ImportError as e:
        raise DataError("from_df needs pandas (`pip install pandas`); from_csv and from_lists work without "
                        "it.") from e
    if not isinstance(df, pd.DataFrame):
        raise DataError(f"from_df expects a pandas DataFrame, got {type(df).__name__}.")
    cols = [df.columns[c] if isinstance(c, int) and c not in df.columns else c for c in (fn_col, label_col)]
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise DataError(f"The DataFrame has no column {missing[0]!r}; its columns: {list(df.columns)}.")
    labels = ["" if pd.isna(v) else str(v) for v in df[cols[1]]]
    return list(zip((str(v) for v in df[cols[0]]), labels))


def _column(col, names, where) -> int:
    if isinstance(col, int):
        return col
    if names is None or col not in names:
        raise DataError(f"No column {col!r} in {where}" + (f"; its columns: {names}." if names else
                                                          " (it has no header row; give the column's number)."))
    return names.index(col)
