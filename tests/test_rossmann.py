"""Lesson 6's Rossmann notebooks on a stand-in of the Kaggle tables (tests/rossmann_fixture.py): the
cleaning steps with fastbase's date helpers, then lesson6-rossmann's cells, run with only the import
line changed (`from fastai.tabular import *` -> `from fastbase.tabular import *`)."""
import pandas as pd
import pytest
import rossmann_fixture

from fastbase.config import Config
from fastbase.tabular import (
    Categorify,
    FillMissing,
    Normalize,
    TabularError,
    add_datepart,
    add_elapsed_times,
    make_date,
)

LESSON6_CELLS = '''
from fastbase.tabular import *
path = Config().data_path()/'rossmann'
train_df = pd.read_pickle(path/'train_clean')
train_df.head().T
n = len(train_df); n

idx = np.random.permutation(range(n))[:2000]
idx.sort()
small_train_df = train_df.iloc[idx[:1000]]
small_test_df = train_df.iloc[idx[1000:]]
small_cont_vars = ['CompetitionDistance', 'Mean_Humidity']
small_cat_vars =  ['Store', 'DayOfWeek', 'PromoInterval']
small_train_df = small_train_df[small_cat_vars + small_cont_vars + ['Sales']]
small_test_df = small_test_df[small_cat_vars + small_cont_vars + ['Sales']]
small_train_df.head()
small_test_df.head()
categorify = Categorify(small_cat_vars, small_cont_vars)
categorify(small_train_df)
categorify(small_test_df, test=True)
small_test_df.head()
small_train_df.PromoInterval.cat.categories
small_train_df['PromoInterval'].cat.codes[:5]
fill_missing = FillMissing(small_cat_vars, small_cont_vars)
fill_missing(small_train_df)
fill_missing(small_test_df, test=True)
small_train_df[small_train_df['CompetitionDistance_na'] == True]

train_df = pd.read_pickle(path/'train_clean')
test_df = pd.read_pickle(path/'test_clean')
len(train_df),len(test_df)
procs=[FillMissing, Categorify, Normalize]
cat_vars = ['Store', 'DayOfWeek', 'Year', 'Month', 'Day', 'StateHoliday', 'CompetitionMonthsOpen',
    'Promo2Weeks', 'StoreType', 'Assortment', 'PromoInterval', 'CompetitionOpenSinceYear', 'Promo2SinceYear',
    'State', 'Week', 'Events', 'Promo_fw', 'Promo_bw', 'StateHoliday_fw', 'StateHoliday_bw',
    'SchoolHoliday_fw', 'SchoolHoliday_bw']
cont_vars = ['CompetitionDistance', 'Max_TemperatureC', 'Mean_TemperatureC', 'Min_TemperatureC',
   'Max_Humidity', 'Mean_Humidity', 'Min_Humidity', 'Max_Wind_SpeedKm_h',
   'Mean_Wind_SpeedKm_h', 'CloudCover', 'trend', 'trend_DE',
   'AfterPromo', 'BeforePromo', 'AfterStateHoliday', 'BeforeStateHoliday', 'AfterSchoolHoliday', 'BeforeSchoolHoliday']
dep_var = 'Sales'
df = train_df[cat_vars + cont_vars + [dep_var,'Date']].copy()
test_df['Date'].min(), test_df['Date'].max()
cut = train_df['Date'][(train_df['Date'] == train_df['Date'][len(test_df)])].index.max()
cut
valid_idx = range(cut)
df[dep_var].head()
data = (TabularList.from_df(df, path=path, cat_names=cat_vars, cont_names=cont_vars, procs=procs,)
                .split_by_idx(valid_idx)
                .label_from_df(cols=dep_var, label_cls=FloatList, log=True)
                .add_test(TabularList.from_df(test_df, path=path, cat_names=cat_vars, cont_names=cont_vars))
                .databunch())
doc(FloatList)

max_log_y = np.log(np.max(train_df['Sales'])*1.2)
y_range = torch.tensor([0, max_log_y], device=defaults.device)
learn = tabular_learner(data, layers=[1000,500], ps=[0.001,0.01], emb_drop=0.04,
                        y_range=y_range, metrics=exp_rmspe)
learn.model
len(data.train_ds.cont_names)
learn.lr_find()
learn.recorder.plot()
learn.fit_one_cycle(5, 1e-3, wd=0.2)
learn.save('1')
learn.recorder.plot_losses(skip_start=10000)
learn.load('1');
learn.fit_one_cycle(5, 3e-4)
learn.fit_one_cycle(5, 3e-4)
test_preds=learn.get_preds(DatasetType.Test)
test_df["Sales"]=np.exp(test_preds[0].data).numpy().T[0]
test_df[["Id","Sales"]]=test_df[["Id","Sales"]].astype("int")
test_df[["Id","Sales"]].to_csv("rossmann_submission.csv",index=False)
'''


@pytest.fixture
def rossmann():
    path = Config().data_path() / "rossmann"
    rossmann_fixture.write_raw(path)
    rossmann_fixture.clean(path, add_datepart, add_elapsed_times)
    return path


def test_rossman_data_clean_steps_give_the_lessons_columns(rossmann):
    train, test = pd.read_pickle(rossmann / "train_clean"), pd.read_pickle(rossmann / "test_clean")
    for column in ["Promo_fw", "StateHoliday_bw", "AfterSchoolHoliday", "BeforePromo", "trend_DE",
                   "CompetitionMonthsOpen", "Promo2Weeks", "Mean_Humidity", "Events", "Elapsed"]:
        assert column in train.columns and column in test.columns, column
    assert (train.Sales != 0).all() and train.Date.is_monotonic_decreasing
    assert (train.BeforePromo <= 0).all() and (train.AfterPromo >= 0).all()


def test_lesson6_rossmann_runs_with_only_the_import_changed(rossmann, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    namespace = {}  # the cells' own import (`from fastbase.tabular import *`) gives every name, doc() included
    exec(compile(LESSON6_CELLS, "lesson6-rossmann", "exec"), namespace)  # noqa: S102 -- the lesson's cells
    small = namespace["small_train_df"]
    assert isinstance(small.PromoInterval.dtype, pd.CategoricalDtype)  # Categorify leaves pandas categories
    assert list(small.PromoInterval.cat.categories) == sorted(small.PromoInterval.dropna().unique())
    assert "CompetitionDistance_na" in small.columns and small.CompetitionDistance.notna().all()
    data, learn = namespace["data"], namespace["learn"]
    assert data.train_ds.cont_names[:len(namespace["cont_vars"])] == namespace["cont_vars"]
    assert data.train_ds.cat_names[:len(namespace["cat_vars"])] == namespace["cat_vars"]
    submission = pd.read_csv(tmp_path / "rossmann_submission.csv")
    assert len(submission) == len(namespace["test_df"]) and (submission.Sales > 0).all()
    assert learn.recorder.val_losses[-1] < learn.recorder.val_losses[0]


def test_processors_called_as_fastai_change_the_frame_in_place():
    train = pd.DataFrame({"shop": ["b", "a", None, "a"], "size": [1.0, None, 3.0, 5.0]})
    test = pd.DataFrame({"shop": ["a", "z"], "size": [None, 2.0]})
    categorify = Categorify(["shop"], ["size"])
    with pytest.raises(TabularError, match="call it on the training DataFrame first"):
        categorify(test, test=True)
    categorify(train)
    categorify(test, test=True)
    assert list(train.shop.cat.categories) == ["a", "b"] and train.shop.cat.codes.tolist() == [1, 0, -1, 0]
    assert test.shop.cat.codes.tolist() == [0, -1]  # a value the training rows lack is missing
    fill = FillMissing(["shop"], ["size"])
    fill(train)
    fill(test, test=True)
    assert train["size"].tolist() == [1.0, 3.0, 3.0, 5.0] and train.size_na.tolist() == [False, True, False, False]
    assert test["size"].tolist() == [3.0, 2.0] and test.size_na.tolist() == [True, False]
    norm = Normalize(["shop"], ["size"])
    norm(train)
    assert abs(train["size"].mean()) < 1e-9


def test_make_date_and_add_elapsed_times():
    df = pd.DataFrame({"Store": [1, 1, 1, 1, 2, 2], "Promo": [0, 1, 0, 0, 1, 0],
                       "Date": ["2015-01-01", "2015-01-02", "2015-01-03", "2015-01-05", "2015-01-02", "2015-01-01"]})
    out = add_elapsed_times(df, ["Promo"], "Date", "Store")
    assert df.Date.dtype == object or str(df.Date.dtype) == "str"  # the caller's frame is left as it was
    assert out.AfterPromo.tolist() == [0, 0, 1, 3, 0, 0]  # days since the last promo of the same store
    assert out.BeforePromo.tolist() == [-1, 0, 0, 0, 0, -1]  # days until the next one, negative
    assert out.Promo_bw.tolist() == [0, 1, 1, 1, 1, 0] and out.Promo_fw.tolist() == [1, 1, 0, 0, 1, 1]
    make_date(df, "Date")
    assert pd.api.types.is_datetime64_any_dtype(df.Date)
    with pytest.raises(TabularError, match="no column 'Holiday'"):
        add_elapsed_times(df, ["Holiday"], "Date", "Store")
