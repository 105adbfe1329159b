"""A stand-in for the Kaggle Rossmann tables (the real ones are a Kaggle download): the same files and
columns, a few stores over a few months of invented numbers, and the course's cleaning steps
(rossman_data_clean) on them, which write `train_clean` and `test_clean` as the lesson 6 notebook reads.

The cleaning steps are the notebook's, in today's pandas: `DataFrame.append` and positional
`drop(..., 1)` left pandas in 2.0 (`pd.concat`, `drop(columns=)` here), `join_df` drops the `_y`
duplicates as it joins (pandas 2 refuses to repeat them), and the notebook's own
`add_datepart` and `get_elapsed` helpers are the library's `add_datepart` and `add_elapsed_times`.
"""
import datetime

import numpy as np
import pandas as pd

STATES = {"HE": "Hessen", "BE": "Berlin", "BY": "Bayern", "HB,NI": "Niedersachsen"}
WEATHER = ["Max_TemperatureC", "Mean_TemperatureC", "Min_TemperatureC", "Dew_PointC", "MeanDew_PointC",
           "Min_DewpointC", "Max_Humidity", "Mean_Humidity", "Min_Humidity", "Max_Sea_Level_PressurehPa",
           "Mean_Sea_Level_PressurehPa", "Min_Sea_Level_PressurehPa", "Max_VisibilityKm", "Mean_VisibilityKm",
           "Min_VisibilitykM", "Max_Wind_SpeedKm_h", "Mean_Wind_SpeedKm_h", "Max_Gust_SpeedKm_h", "Precipitationmm",
           "CloudCover"]


def _days(start, n):
    return pd.date_range(start, periods=n, freq="D")


def raw_tables(n_stores=6, train_days=215, test_days=14, seed=0) -> dict:
    """{name: DataFrame} of train, store, store_states, state_names, googletrend, weather, test."""
    rng = np.random.default_rng(seed)
    stores = np.arange(1, n_stores + 1)
    train_dates, test_dates = _days("2014-01-06", train_days), _days("2014-01-06", train_days + test_days)[train_days:]

    def daily(dates, train: bool):
        grid = pd.MultiIndex.from_product([dates[::-1], stores], names=["Date", "Store"]).to_frame(index=False)
        open_ = (grid.Date.dt.day_of_week != 6).astype(int)  # closed on Sundays
        holiday = np.where(rng.random(len(grid)) < 0.03, "a", "0")
        holiday[0] = "a"  # read back as text in both files, as in Kaggle's
        out = pd.DataFrame({"Store": grid.Store, "DayOfWeek": grid.Date.dt.day_of_week + 1,
                            "Date": grid.Date.dt.strftime("%Y-%m-%d"), "Open": open_,
                            "Promo": (grid.Date.dt.day % 14 < 5).astype(int), "StateHoliday": holiday,
                            "SchoolHoliday": (grid.Date.dt.month == 8).astype(int)})
        if train:
            base = 4000 + 300 * grid.Store + 1500 * out.Promo + rng.normal(0, 300, len(grid))
            out.insert(3, "Sales", (base * open_).round().astype(int))
            out.insert(4, "Customers", (out.Sales / 9).round().astype(int))
        else:
            out.insert(0, "Id", np.arange(1, len(out) + 1))
        return out

    states = list(STATES)
    store = pd.DataFrame({
        "Store": stores, "StoreType": rng.choice(list("abcd"), n_stores), "Assortment": rng.choice(list("ac"), n_stores),
        "CompetitionDistance": np.where(stores % 4 == 0, np.nan, rng.integers(100, 20000, n_stores).astype(float)),
        "CompetitionOpenSinceMonth": np.where(stores % 3 == 0, np.nan, rng.integers(1, 13, n_stores)),
        "CompetitionOpenSinceYear": np.where(stores % 3 == 0, np.nan, rng.integers(2005, 2014, n_stores)),
        "Promo2": (stores % 2).astype(int),
        "Promo2SinceWeek": np.where(stores % 2 == 1, rng.integers(1, 50, n_stores), np.nan),
        "Promo2SinceYear": np.where(stores % 2 == 1, rng.integers(2010, 2014, n_stores), np.nan),
        "PromoInterval": np.where(stores % 2 == 1, rng.choice(["Jan,Apr,Jul,Oct", "Feb,May,Aug,Nov",
                                                                "Mar,Jun,Sept,Dec"], n_stores), None)})
    store_states = pd.DataFrame({"Store": stores, "State": [states[i % len(states)] for i in range(n_stores)]})
    state_names = pd.DataFrame({"StateName": list(STATES.values()), "State": list(STATES)})
    sundays = pd.date_range("2014-01-05", "2014-12-28", freq="W-SUN")
    googletrend = pd.DataFrame([
        {"file": f"Rossmann_DE_{s.split(',')[-1]}" if s else "Rossmann_DE",
         "week": f"{d:%Y-%m-%d} - {d + datetime.timedelta(days=6):%Y-%m-%d}", "trend": int(rng.integers(40, 100))}
        for d in sundays for s in ["", *states]])
    all_days = _days("2014-01-06", train_days + test_days)
    weather = pd.DataFrame([{"file": name, "Date": f"{d:%Y-%m-%d}"} for name in STATES.values() for d in all_days])
    for col in WEATHER:
        weather[col] = rng.integers(0, 30, len(weather)).astype(float)
    weather["Max_Gust_SpeedKm_h"] = np.nan
    weather["Events"] = rng.choice(["Rain", "Fog", None], len(weather))
    weather["WindDirDegrees"] = rng.integers(0, 360, len(weather))
    return {"train": daily(train_dates, True), "store": store, "store_states": store_states,
            "state_names": state_names, "googletrend": googletrend, "weather": weather,
            "test": daily(test_dates, False)}


def write_raw(path) -> None:
    path.mkdir(parents=True, exist_ok=True)
    for name, table in raw_tables().items():
        table.to_csv(path / f"{name}.csv", index=False)


def join_df(left, right, left_on, right_on=None, suffix="_y"):
    """The notebook's left join; the right side's duplicate columns (`suffix`) are dropped at once, as
    the notebook drops them at the end: pandas 2 refuses a second join that would repeat their names."""
    joined = left.merge(right, how="left", left_on=left_on, right_on=right_on or left_on, suffixes=("", suffix))
    return joined.drop(columns=[c for c in joined.columns if c.endswith(suffix) and c not in left.columns])


def clean(path, add_datepart, add_elapsed_times) -> None:
    """rossman_data_clean's steps on the CSVs in `path`: train_clean and test_clean pickles there."""
    names = ["train", "store", "store_states", "state_names", "googletrend", "weather", "test"]
    train, store, store_states, state_names, googletrend, weather, test = (
        pd.read_csv(path / f"{n}.csv", low_memory=False) for n in names)
    train.StateHoliday, test.StateHoliday = train.StateHoliday != "0", test.StateHoliday != "0"
    weather = join_df(weather, state_names, "file", "StateName")
    googletrend["Date"] = googletrend.week.str.split(" - ", expand=True)[0]
    googletrend["State"] = googletrend.file.str.split("_", expand=True)[2]
    googletrend.loc[googletrend.State == "NI", "State"] = "HB,NI"
    for table in (weather, googletrend, train, test):
        add_datepart(table, "Date", drop=False)
    trend_de = googletrend[googletrend.file == "Rossmann_DE"]
    store = join_df(store, store_states, "Store")
    joined, joined_test = join_df(train, store, "Store"), join_df(test, store, "Store")
    joined, joined_test = (join_df(j, googletrend, ["State", "Year", "Week"]) for j in (joined, joined_test))
    joined, joined_test = (j.merge(trend_de, "left", ["Year", "Week"], suffixes=("", "_DE"))
                           for j in (joined, joined_test))
    joined, joined_test = (join_df(j, weather, ["State", "Date"]) for j in (joined, joined_test))
    assert joined.trend.notna().all() and joined.Mean_TemperatureC.notna().all()  # the notebook's checks
    for df in (joined, joined_test):
        df["CompetitionOpenSinceYear"] = df.CompetitionOpenSinceYear.fillna(1900).astype(np.int32)
        df["CompetitionOpenSinceMonth"] = df.CompetitionOpenSinceMonth.fillna(1).astype(np.int32)
        df["Promo2SinceYear"] = df.Promo2SinceYear.fillna(1900).astype(np.int32)
        df["Promo2SinceWeek"] = df.Promo2SinceWeek.fillna(1).astype(np.int32)
        df["CompetitionOpenSince"] = pd.to_datetime({"year": df.CompetitionOpenSinceYear,
                                                     "month": df.CompetitionOpenSinceMonth, "day": 15})
        df["CompetitionDaysOpen"] = df.Date.subtract(df.CompetitionOpenSince).dt.days
        df.loc[df.CompetitionDaysOpen < 0, "CompetitionDaysOpen"] = 0
        df.loc[df.CompetitionOpenSinceYear < 1990, "CompetitionDaysOpen"] = 0
        df["CompetitionMonthsOpen"] = (df["CompetitionDaysOpen"] // 30).clip(upper=24)
        df["Promo2Since"] = pd.to_datetime([datetime.date.fromisocalendar(y, w, 1)
                                            for y, w in zip(df.Promo2SinceYear, df.Promo2SinceWeek)])
        df["Promo2Days"] = df.Date.subtract(df["Promo2Since"]).dt.days
        df.loc[(df.Promo2Days < 0) | (df.Promo2SinceYear < 1990), "Promo2Days"] = 0
        df["Promo2Weeks"] = (df["Promo2Days"] // 7).clip(0, 25)
    events = ["Promo", "StateHoliday", "SchoolHoliday"]
    columns = ["Date", "Store", *events]
    elapsed = add_elapsed_times(pd.concat([train[columns], test[columns]], ignore_index=True), events, "Date",
                                "Store").drop(columns=events)
    joined, joined_test = (join_df(j, elapsed, ["Store", "Date"]) for j in (joined, joined_test))
    joined = joined[joined.Sales != 0].reset_index()
    joined_test = joined_test.reset_index()
    joined.to_pickle(path / "train_clean")
    joined_test.to_pickle(path / "test_clean")
