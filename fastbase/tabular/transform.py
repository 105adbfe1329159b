"""Layer 6: helpers that prepare a DataFrame before the data block chain: date columns into parts
(`add_datepart`, `add_cyclic_datepart`, `make_date`), the time since and until events
(`add_elapsed_times`), and the split of columns into continuous and categorical ones
(`cont_cat_split`). As in fastai v1, the date-part helpers change the DataFrame in place (lesson 6
calls them without using the result) and also return it; `add_elapsed_times` returns a new one.
"""
from __future__ import annotations

import re

import numpy as np

from ..data.categories import require_pandas
from .procs import TabularError

__all__ = ["add_cyclic_datepart", "add_datepart", "add_elapsed_times", "cont_cat_split", "make_date"]

_DATE_ATTRS = ("Year", "Month", "Week", "Day", "Dayofweek", "Dayofyear", "Is_month_end", "Is_month_start",
               "Is_quarter_end", "Is_quarter_start", "Is_year_end", "Is_year_start")


def _dates(df, field_name: str):
    pd = require_pandas()
    if field_name not in df.columns:
        raise TabularError(f"The table has no column {field_name!r}; its columns: {list(df.columns)}.")
    col = df[field_name]
    if not pd.api.types.is_datetime64_any_dtype(col):
        try:
            col = pd.to_datetime(col)
        except (ValueError, TypeError) as e:
            raise TabularError(f"Column {field_name!r} does not hold dates ({e}).") from e
        df[field_name] = col
    return col


def make_date(df, date_field: str):
    """Make `df[date_field]` a datetime64 column (parsing text dates), in place; a column that does not
    hold dates is a TabularError naming it. Returns `df`."""
    _dates(df, date_field)
    return df


def add_elapsed_times(df, field_names, date_field: str, base_field: str):
    """For each event column in `field_names` (truthy on the days the event happens), per group of
    `base_field` (a store, say) in date order, as fastai v1 names them: 'After<f>', the days since the
    last event (0 before the first), 'Before<f>', the days until the next one, counted negative (0 after
    the last), and '<f>_bw' / '<f>_fw', how many of this row and the 6 rows before / after it have the
    event. Returns a new DataFrame (the same rows and index); `df` is not changed."""
    fields = [field_names] if isinstance(field_names, str) else list(field_names)
    missing = [c for c in [*fields, date_field, base_field] if c not in df.columns]
    if missing:
        raise TabularError(f"add_elapsed_times: the table has no column {missing[0]!r}; its columns: "
                           f"{list(df.columns)}.")
    out = make_date(df.reset_index(drop=True), date_field)  # a copy, with unique row labels to align on
    ordered = out.sort_values([base_field, date_field], kind="stable")
    groups = ordered[base_field]
    for name in fields:
        happened = ordered[name].fillna(False).astype(bool)
        when = ordered[date_field].where(happened)
        last, following = when.groupby(groups).ffill(), when.groupby(groups).bfill()
        out["After" + name] = (ordered[date_field] - last).dt.days.fillna(0).astype(int)
        out["Before" + name] = (ordered[date_field] - following).dt.days.fillna(0).astype(int)
        counts = happened.astype("float64")
        out[name + "_bw"] = counts.groupby(groups).transform(lambda s: s.rolling(7, min_periods=1).sum())
        out[name + "_fw"] = counts[::-1].groupby(groups[::-1]).transform(lambda s: s.rolling(7, min_periods=1).sum())
    out.index = df.index
    return out


def _prefix(field_name: str, prefix: str | None) -> str:
    return re.sub("[Dd]ate$", "", field_name) if prefix is None else prefix


def add_datepart(df, field_name: str, prefix: str | None = None, drop: bool = True, time: bool = False):
    """Add the parts of the date column `field_name`: Year, Month, Week (ISO), Day, Dayofweek
    (Monday = 0), Dayofyear, Is_month_end/start, Is_quarter_end/start, Is_year_end/start, with
    `time` also Hour, Minute, Second, and Elapsed (seconds since 1970). The new columns are named
    `prefix` + part (default prefix: the column name without a final 'Date'/'date'). `drop` removes
    the date column. Changes `df` in place and returns it."""
    col = _dates(df, field_name)
    prefix = _prefix(field_name, prefix)
    dt = col.dt
    parts = {"Year": dt.year, "Month": dt.month, "Week": dt.isocalendar().week.astype("float64"), "Day": dt.day,
             "Dayofweek": dt.day_of_week, "Dayofyear": dt.day_of_year, "Is_month_end": dt.is_month_end,
             "Is_month_start": dt.is_month_start, "Is_quarter_end": dt.is_quarter_end,
             "Is_quarter_start": dt.is_quarter_start, "Is_year_end": dt.is_year_end, "Is_year_start": dt.is_year_start}
    if time:
        parts.update(Hour=dt.hour, Minute=dt.minute, Second=dt.second)
    for name, values in parts.items():
        df[prefix + name] = values
    seconds = (col - np.datetime64("1970-01-01")).dt.total_seconds()
    df[prefix + "Elapsed"] = seconds.where(col.notna())
    if drop:
        del df[field_name]
    return df


def add_cyclic_datepart(df, field_name: str, prefix: str | None = None, drop: bool = True, time: bool = False,
                        add_linear: bool = False):
    """Add the date column `field_name` as points on circles, so that the end of a cycle sits next to
    its start: cos and sin of the day of the week, of the month and of the year and of the month of the
    year (`prefix` + 'weekday_cos', 'weekday_sin', 'day_month_cos', ... 'day_year_sin'); with `time`,
    of the hour, the time of day ('clock'), the minute and the second too. `add_linear` adds
    'year_part', the fraction of the year gone. `drop` removes the date column. In place; returns `df`."""
    col = _dates(df, field_name)
    prefix = _prefix(field_name, prefix)
    dt = col.dt
    days_in_year = np.where(dt.is_leap_year, 366.0, 365.0)
    fractions = {"weekday": dt.day_of_week / 7.0, "day_month": (dt.day - 1) / dt.days_in_month,
                 "month_year": (dt.month - 1) / 12.0, "day_year": (dt.day_of_year - 1) / days_in_year}
    if time:
        fractions.update(hour=dt.hour / 24.0, clock=(dt.hour * 3600 + dt.minute * 60 + dt.second) / 86400.0,
                         min=dt.minute / 60.0, sec=dt.second / 60.0)
    for name, frac in fractions.items():
        angle = 2 * np.pi * frac.astype("float64")
        df[f"{prefix}{name}_cos"] = np.cos(angle)
        df[f"{prefix}{name}_sin"] = np.sin(angle)
    if add_linear:
        start = col.dt.to_period("Y").dt.start_time
        df[prefix + "year_part"] = (col - start).dt.total_seconds() / (days_in_year * 86400.0)
    if drop:
        del df[field_name]
    return df


def cont_cat_split(df, max_card: int = 20, dep_var=None) -> tuple[list, list]:
    """(cont_names, cat_names) of `df`'s columns but `dep_var`: floats, and integers with more than
    `max_card` distinct values, are continuous; everything else (text, booleans, integers with few
    values, dates) is categorical."""
    pd = require_pandas()
    skip = set(dep_var if isinstance(dep_var, (list, tuple)) else [dep_var])
    cont, cat = [], []
    for name in df.columns:
        if name in skip:
            continue
        col = df[name]
        is_int = pd.api.types.is_integer_dtype(col) and not pd.api.types.is_bool_dtype(col)
        if pd.api.types.is_float_dtype(col) or (is_int and col.nunique() > max_card):
            cont.append(name)
        else:
            cat.append(name)
    return cont, cat
