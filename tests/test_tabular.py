"""Tabular data and models on small frames built here (with missing values, unseen categories and
dates): processors learn on the training rows only, batches come from whole tensors, the model
trains, predicts one row, exports and loads, and is interpreted."""
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

pd = pytest.importorskip("pandas", reason="fastbase.tabular needs pandas (pip install -e '.[tabular]')")

from fastbase.data import DatasetType, FloatItem
from fastbase.learner import load_learner
from fastbase.metrics import accuracy
from fastbase.tabular import (
    Categorify,
    FillMissing,
    Normalize,
    TabularDataBunch,
    TabularDataLoader,
    TabularError,
    TabularList,
    TabularModel,
    emb_sz_rule,
    exp_rmspe,
    tabular_learner,
)

PROCS = [FillMissing, Categorify, Normalize]
CAT, CONT = ["color", "shape"], ["size", "noise"]


def make_frame(n=400, seed=0) -> pd.DataFrame:
    """'yes' when the color is red or the size is above 0.5: learnable from two columns, not from noise."""
    rng = np.random.default_rng(seed)
    color = rng.choice(["red", "green", "blue"], n).astype(object)
    size = rng.uniform(0, 1, n)
    label = np.where((color == "red") | (size > 0.5), "yes", "no")
    frame = pd.DataFrame({"color": color, "shape": rng.choice(["round", "square"], n), "size": size,
                          "noise": rng.normal(0, 1, n), "label": label})
    frame.loc[::17, "size"] = np.nan  # missing values in a continuous column
    frame.loc[::23, "color"] = np.nan  # and in a categorical one
    return frame


def make_data(df=None, valid=range(300, 400), bs=32, **kwargs):
    df = make_frame() if df is None else df
    return (TabularList.from_df(df, cat_names=CAT, cont_names=CONT, procs=PROCS)
            .split_by_idx(list(valid)).label_from_df(cols="label", **kwargs).databunch(bs=bs, seed=0))


@pytest.fixture(scope="module")
def trained():
    torch.manual_seed(0)
    learn = tabular_learner(make_data(), layers=[32, 16], metrics=accuracy, silent=True)
    learn.fit_one_cycle(6, 3e-2)
    return learn


# --- processors --------------------------------------------------------------------------------
def test_processors_learn_on_the_training_rows_only():
    df = make_frame()
    df.loc[300:, "size"] = 100.0  # validation rows far off: they must not move the median, mean or std
    data = make_data(df)
    fill, cat, norm = data.processor.procs
    train = df.iloc[:300]
    assert fill.fill_values["size"] == pytest.approx(train["size"].median())
    assert norm.means["size"] == pytest.approx(train["size"].fillna(train["size"].median()).mean())
    assert norm.means["noise"] == pytest.approx(train["noise"].mean())
    assert data.cat_names == ["color", "shape", "size_na"] and data.cont_names == CONT
    assert cat.classes["color"] == ["#na#", "blue", "green", "red"]


def test_missing_values_are_filled_and_flagged_and_the_callers_frame_is_untouched():
    df = make_frame()
    before = df.copy()
    data = make_data(df)
    ds = data.train_ds
    na_col = data.cat_names.index("size_na")
    missing = df.iloc[:300]["size"].isna().to_numpy()
    assert (ds.cats[:, na_col].numpy() == np.where(missing, 2, 1)).all()  # classes #na#, False, True
    assert not torch.isnan(ds.conts).any()
    assert (ds.cats[torch.tensor(df.iloc[:300]["color"].isna().to_numpy()), 0] == 0).all()  # missing -> #na#
    pd.testing.assert_frame_equal(df, before)


def test_unseen_validation_category_gets_code_zero():
    df = make_frame()
    df.loc[350, "color"] = "purple"
    data = make_data(df)
    assert int(data.valid_ds.cats[50, 0]) == 0


def test_databunch_from_df_gives_the_same_tensors_as_the_block_api():
    df = make_frame()
    test_df = df.iloc[:10].drop(columns="label")
    data = TabularDataBunch.from_df(".", df, "label", valid_idx=list(range(300, 400)), procs=PROCS, cat_names=CAT,
                                    cont_names=CONT, test_df=test_df, bs=32)
    block = make_data(df)
    assert torch.equal(data.train_ds.cats, block.train_ds.cats) and torch.equal(data.valid_ds.conts, block.valid_ds.conts)
    assert len(data.test_ds) == 10 and not data.test_ds.labelled
    assert data.classes == ["no", "yes"] and data.c == 2


def test_batches_are_slices_of_whole_tensors():
    data = make_data(bs=32)
    assert isinstance(data.train_dl.dl, TabularDataLoader)
    (cats, conts), _y = next(iter(data.train_dl))
    assert cats.dtype == torch.long and cats.shape == (32, 3) and conts.dtype == torch.float32 and conts.shape == (32, 2)
    assert len(data.train_dl) == 300 // 32  # the last partial batch is dropped in training
    seen = torch.cat([b[0][0] for b in data.valid_dl])
    assert torch.equal(seen, data.valid_ds.cats)  # validation in order, every row once
    first = [b[1] for b in make_data(bs=32).train_dl]
    again = [b[1] for b in make_data(bs=32).train_dl]
    assert all(torch.equal(a, b) for a, b in zip(first, again))  # the same seed, the same order


def test_loaders_rebuilt_by_the_databunch_stay_tabular():
    data = make_data()
    small = data.subset(64, seed=1)
    assert sum(len(b[1]) for b in small.train_dl) == 64
    assert isinstance(data.valid_dl.new(shuffle=False).dl, TabularDataLoader)


def test_show_batch_prints_category_names_and_raw_values(capsys):
    make_data().show_batch(rows=4)
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["color", "shape", "size_na", "size", "noise", "target"] and len(out) == 5
    assert any(word in out[1] for word in ("red", "green", "blue", "#na#"))


# --- model and learner ---------------------------------------------------------------------------
def test_embedding_sizes_follow_fastais_rule():
    assert [emb_sz_rule(n) for n in (2, 10, 100, 10_000, 10 ** 7)] == [2, 6, 21, 278, 600]
    data = make_data()
    assert data.get_emb_szs() == [(4, 3), (3, 3), (3, 3)]
    assert data.get_emb_szs({"color": 10})[0] == (4, 10)


def test_tabular_learner_learns_the_rule(trained):
    _loss, acc = trained.validate()
    assert acc > 0.85
    assert isinstance(trained.model, TabularModel) and trained.model.embeds[0].num_embeddings == 4


def test_predict_a_row_matches_get_preds(trained):
    df = make_frame()
    label, idx, probs = trained.predict(df.iloc[305])
    preds = trained.get_preds(DatasetType.Valid)[0]
    assert torch.allclose(probs, preds[5], atol=1e-5)
    assert str(label) == trained.data.classes[int(idx)] and int(idx) == int(probs.argmax())


def test_predict_maps_an_unseen_category_to_na_and_names_a_missing_or_mistyped_column(trained):
    row = make_frame().iloc[5].copy()
    as_na = row.copy()
    as_na["color"] = np.nan
    row["color"] = "purple"
    assert torch.allclose(trained.predict(row)[2], trained.predict(as_na)[2])
    with pytest.raises(TabularError, match="'noise'"):
        trained.predict(row.drop("noise"))
    bad = row.copy()
    bad["size"] = "large"
    with pytest.raises(TabularError, match="'size'.*numbers"):
        trained.predict(bad)
    typed = row.copy()
    typed["shape"] = 3
    with pytest.raises(TabularError, match="'shape'"):
        trained.predict(typed)


def test_export_keeps_the_processors_and_loads_with_weights_only(trained, tmp_path):
    file = trained.export(tmp_path / "export.pkl")
    torch.load(file, weights_only=True)  # plain data only
    loaded = load_learner(file)
    row = make_frame().iloc[42]
    row = row.copy()
    row["shape"] = "triangle"  # unseen after loading too
    label, _idx, probs = loaded.predict(row)
    assert torch.allclose(probs, trained.predict(row)[2], atol=1e-6) and label == trained.predict(row)[0]
    assert loaded.data.cat_names == ["color", "shape", "size_na"]


def test_a_loaded_learner_predicts_a_test_table(trained, tmp_path):
    df = make_frame()
    loaded = load_learner(trained.export(tmp_path / "export.pkl"))
    loaded.data.add_test(df.iloc[300:320].drop(columns="label"))
    preds = loaded.get_preds(DatasetType.Test)[0]
    assert preds.shape == (20, 2) and torch.allclose(preds, trained.get_preds()[0][:20], atol=1e-5)


def test_regression_with_y_range_predicts_a_float_item_in_range():
    df = make_frame()
    df["target"] = (df["size"].fillna(0.5) * 3 + (df["color"] == "red") + 1).astype("float64")
    data = (TabularList.from_df(df, cat_names=CAT, cont_names=CONT, procs=PROCS).split_by_idx(list(range(300, 400)))
            .label_from_df(cols="target", log=True).databunch(bs=32, seed=0))
    torch.manual_seed(0)
    learn = tabular_learner(data, layers=[32], y_range=(0.0, math.log(6.0)), metrics=exp_rmspe, silent=True)
    learn.fit_one_cycle(3, 3e-2)
    item, raw, _ = learn.predict(df.iloc[0])
    assert isinstance(item, FloatItem) and 0.0 <= float(raw) <= math.log(6.0)
    preds, targs = learn.get_preds()
    expected = np.sqrt(np.mean(((np.exp(targs.numpy()) - np.exp(preds.numpy())) / np.exp(targs.numpy())) ** 2))
    assert learn.validate()[1] == pytest.approx(expected, rel=1e-4)


def test_model_without_categorical_or_continuous_columns():
    model = TabularModel([], n_cont=3, out_sz=2, layers=[8])
    assert model(torch.zeros(4, 0, dtype=torch.long), torch.randn(4, 3)).shape == (4, 2)
    model = TabularModel([(5, 3)], n_cont=0, out_sz=1, layers=[8], ps=[0.1])
    assert model(torch.randint(0, 5, (4, 1)), torch.zeros(4, 0)).shape == (4, 1)


# --- interpretation ----------------------------------------------------------------------------
def test_classification_interpretation_of_a_table(trained):
    from fastbase.interpret import ClassificationInterpretation
    interp = ClassificationInterpretation.from_learner(trained)
    assert interp.confusion_matrix().sum() == 100
    rows = interp.plot_tab_top_losses(5)
    assert list(rows.columns[:4]) == ["Prediction", "Actual", "Loss", "Probability"] and len(rows) == 5
    assert rows["Loss"].is_monotonic_decreasing and "color" in rows.columns
    first = int(rows["index"][0])
    assert rows["Actual"][0] == trained.data.classes[int(trained.data.valid_ds.targets[first])]
    assert interp.plot_top_losses(3).shape[0] == 3  # the rows again, not images


def test_permutation_importance_ranks_the_informative_columns_first(trained):
    from fastbase.tabular import permutation_importance, plot_importance
    imp = permutation_importance(trained, n_repeats=2)
    assert set(imp["feature"]) == {"color", "shape", "size", "noise"}  # size_na goes with size
    assert set(imp["feature"][:2]) == {"color", "size"}
    by_acc = permutation_importance(trained, metric=accuracy, n_repeats=2)
    assert by_acc.attrs["score"] == "accuracy" and by_acc["importance"].iloc[0] > 0.05
    fig = plot_importance(imp)
    assert type(fig).__name__ == "Figure"


def test_importing_vision_loads_neither_pandas_nor_the_tabular_package():
    code = ("import sys, fastbase.vision, fastbase.learner\n"
            "bad = [m for m in ('pandas', 'fastbase.tabular') if m in sys.modules]\n"
            "assert not bad, bad\nprint('ok')")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False,
                            env={**os.environ, "PYTHONPATH": os.pathsep.join([os.getcwd(), *sys.path])})
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-2000:]


# --- helpers -----------------------------------------------------------------------------------
def test_add_datepart_adds_the_parts_in_place_and_drops_the_date():
    from fastbase.tabular import add_datepart
    df = pd.DataFrame({"saleDate": ["2015-12-31", "2016-02-29", None], "x": [1, 2, 3]})
    out = add_datepart(df, "saleDate")
    assert out is df and "saleDate" not in df.columns
    assert df["saleYear"].tolist()[:2] == [2015, 2016] and df["saleDayofweek"].tolist()[:2] == [3, 0]
    assert df["saleIs_year_end"].tolist()[:2] == [True, False] and df["saleWeek"].tolist()[:2] == [53, 9]
    assert df["saleElapsed"][0] == 1451520000 and math.isnan(df["saleElapsed"][2])


def test_add_cyclic_datepart_puts_the_end_of_a_cycle_next_to_its_start():
    from fastbase.tabular import add_cyclic_datepart
    df = pd.DataFrame({"Date": pd.to_datetime(["2015-12-31 23:00", "2016-01-01 00:00"])})
    add_cyclic_datepart(df, "Date", time=True, add_linear=True)
    assert {"weekday_cos", "day_year_sin", "hour_cos", "clock_sin", "year_part"} <= set(df.columns)
    assert abs(df["day_year_cos"][0] - df["day_year_cos"][1]) < 1e-3 and df["year_part"][1] == 0.0


def test_cont_cat_split_by_type_and_cardinality():
    from fastbase.tabular import cont_cat_split
    df = pd.DataFrame({"f": np.linspace(0, 1, 30), "many": np.arange(30), "few": np.arange(30) % 3,
                       "text": ["a"] * 30, "y": np.zeros(30)})
    assert cont_cat_split(df, max_card=20, dep_var="y") == (["f", "many"], ["few", "text"])


def test_a_missing_column_is_named_when_the_data_are_built():
    df = make_frame().drop(columns="noise")
    with pytest.raises(TabularError, match="'noise'"):
        make_data(df)
