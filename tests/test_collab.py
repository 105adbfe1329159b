"""Collaborative filtering (lesson 4): ratings frames built here, a few hundred rows, CPU only."""
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

pd = pytest.importorskip("pandas", reason="collaborative filtering reads pandas DataFrames (the tabular extra)")

from conftest import shared_path

from fastbase.collab import (
    UNKNOWN,
    CollabDataBunch,
    CollabLearner,
    DatasetType,
    EmbeddingDotBias,
    EmbeddingNN,
    RatingsDataset,
    UnknownNameWarning,
    collab_learner,
    encode,
    load_learner,
    pca,
)
from fastbase.data import DataError

ROOT = Path(__file__).resolve().parent.parent


def ratings_frame(n_users=30, n_items=20, seed=0, density=0.6):
    """Ratings from two hidden factors per user and item: something a dot-product model can learn."""
    rng = np.random.default_rng(seed)
    users, items = rng.normal(size=(n_users, 2)), rng.normal(size=(n_items, 2))
    rows = [(f"u{u}", 100 + i, float(np.clip(np.round(3 + users[u] @ items[i] + rng.normal(0, 0.1), 1), 0.5, 5)))
            for u in range(n_users) for i in range(n_items) if rng.random() < density]
    return pd.DataFrame(rows, columns=["user", "movie", "stars"]).assign(ts=0)


@pytest.fixture(scope="module")
def frame():
    return ratings_frame()


@pytest.fixture
def data(frame, tmp_path):
    return CollabDataBunch.from_df(frame, seed=42, bs=32, path=tmp_path, device="cpu")


def test_encode_reserves_code_zero_for_unknown_and_missing():
    codes, classes = encode(np.array(["b", "a", "b", None], dtype=object))
    assert classes == [UNKNOWN, "a", "b"] and codes.tolist() == [2, 1, 2, 0] and codes.dtype == torch.int64
    assert encode(["a", "z"], classes)[0].tolist() == [1, 0]


def test_from_df_takes_the_first_three_columns_and_splits_by_seed(frame, data):
    assert data.names == ["user", "movie", "stars"] and data.c == 1
    assert len(data.valid_ds) == int(0.2 * len(frame)) and len(data.train_ds) + len(data.valid_ds) == len(frame)
    again = CollabDataBunch.from_df(frame, seed=42, device="cpu")
    assert torch.equal(again.valid_ds.ratings, data.valid_ds.ratings)
    assert data.classes["movie"][0] == UNKNOWN and data.classes["movie"][1:] == sorted(data.classes["movie"][1:])


def test_names_only_the_validation_rows_have_get_code_zero():
    frame = pd.DataFrame({"u": ["a", "b", "c", "new"], "i": [1, 1, 2, 2], "r": [1.0, 2.0, 3.0, 4.0]})
    data = CollabDataBunch.from_df(frame, valid_pct=0.25, seed=0, device="cpu")
    valid_user = frame.u.iloc[next(i for i in range(4) if data.valid_ds.ratings[0] == frame.r.iloc[i])]
    assert valid_user not in data.classes["u"] and data.valid_ds.codes[0].tolist() == [0]


def test_batches_are_gathered_from_tensors_without_per_row_calls(data, monkeypatch):
    def per_row(self, i):
        raise AssertionError("a batch was built row by row")

    monkeypatch.setattr(RatingsDataset, "__getitem__", per_row)
    (users, items), ratings = next(iter(data.train_dl))
    assert users.shape == items.shape == ratings.shape == (32,)
    assert users.dtype == items.dtype == torch.int64 and ratings.dtype == torch.float32
    assert sum(len(b[1]) for b in data.valid_dl) == len(data.valid_ds)


def test_bad_columns_and_ratings_are_named(frame):
    with pytest.raises(DataError, match="'nope'.*its columns are user, movie, stars"):
        CollabDataBunch.from_df(frame, rating_name="nope")
    bad = frame.copy()
    bad["stars"] = bad["stars"].astype(object)
    bad.loc[3, "stars"] = "five"
    with pytest.raises(DataError, match=r"'stars' must hold numbers; 1 rows.*3: 'five'"):
        CollabDataBunch.from_df(bad)


def test_show_batch_is_a_table_of_names(data):
    table = data.show_batch(rows=4)
    assert list(table.columns) == ["user", "movie", "target"] and len(table) == 4
    assert set(table.user) <= set(data.classes["user"]) and table.target.between(0.5, 5).all()


def test_dot_model_learns_the_ratings_within_y_range(data):
    torch.manual_seed(0)
    learn = collab_learner(data, n_factors=8, y_range=(0, 5.5), silent=True)
    assert isinstance(learn.model, EmbeddingDotBias) and isinstance(learn.loss_func, torch.nn.MSELoss)
    before = learn.validate()[0]
    learn.fit_one_cycle(6, 5e-2)
    assert learn.validate()[0] < 0.5 * before
    preds, _ = learn.get_preds()
    assert preds.shape == (len(data.valid_ds),) and preds.min() >= 0 and preds.max() <= 5.5


def test_nn_model_trains_and_takes_embedding_sizes(data):
    torch.manual_seed(0)
    learn = collab_learner(data, use_nn=True, emb_szs={"user": 5}, layers=[16], y_range=(0, 5.5), silent=True)
    assert isinstance(learn.model, EmbeddingNN)
    assert [e.embedding_dim for e in learn.model.embeds] == [5, 9]  # movie: fastai's rule, round(1.6 * 21 ** 0.56)
    before = learn.validate()[0]
    learn.fit_one_cycle(3, 1e-2)
    assert learn.validate()[0] < before
    assert learn.weight(["u1", "u2"], is_item=False).shape == (2, 5)
    with pytest.raises(DataError, match="bias reads an EmbeddingDotBias"):
        learn.bias([100])


def test_bias_and_weight_by_name_match_the_embeddings(data):
    learn = collab_learner(data, n_factors=4, silent=True)
    items = data.classes["movie"][1:4]
    codes = torch.tensor([1, 2, 3])
    assert torch.equal(learn.bias(np.array(items)), learn.model.i_bias.weight[codes, 0].detach())
    assert torch.equal(learn.weight(["u1"], is_item=False), learn.model.u_weight.weight[[data.classes["user"].index("u1")]].detach())
    assert learn.bias(items).shape == (3,) and learn.weight(items).shape == (3, 4)
    assert learn.model.training is not None and next(learn.model.parameters()).requires_grad  # nothing switched off


def test_weight_offers_pca_as_lesson_4_calls_it(data):
    learn = collab_learner(data, n_factors=4, silent=True)
    movie_w = learn.weight(data.classes["movie"][1:])
    movie_pca = movie_w.pca(3)  # the lesson's call: a method of what learn.weight returns
    assert torch.allclose(movie_pca, pca(movie_w, 3)) and type(movie_pca) is torch.Tensor
    assert movie_w[:5].pca(2).shape == (5, 2)  # slices keep the method
    fac0, fac1, fac2 = movie_pca.t()
    assert fac0.shape == fac1.shape == fac2.shape == (len(movie_w),)
    assert not hasattr(torch.zeros(2, 2), "pca")  # torch's own tensors are not patched


def test_unknown_name_for_bias_is_a_clear_error(data):
    learn = collab_learner(data, n_factors=4, silent=True)
    with pytest.raises(DataError, match="movie 999 not in the training data"):
        learn.bias([100, 999])


def test_pca_projects_on_the_main_directions():
    torch.manual_seed(0)
    direction = torch.tensor([3.0, 4.0, 0.0]) / 5
    points = torch.randn(200, 1) * 10 * direction + torch.randn(200, 3) * 0.1
    projected = pca(points, k=2)
    assert projected.shape == (200, 2)
    assert torch.allclose(projected[:, 0].abs(), ((points - points.mean(0)) @ direction).abs(), atol=0.2)
    assert projected[:, 0].var() > 100 * projected[:, 1].var()
    with pytest.raises(ValueError, match="k=4"):
        pca(points, k=4)


def test_predict_takes_a_row_a_dict_or_a_pair(frame, data):
    learn = collab_learner(data, n_factors=4, y_range=(0, 5.5), silent=True)
    row = frame.iloc[0]
    item, rating, same = learn.predict(row)
    assert float(item.data) == float(rating) == float(same) and 0 <= float(rating) <= 5.5
    assert float(learn.predict({"user": row.user, "movie": row.movie})[1]) == pytest.approx(float(rating))
    assert float(learn.predict((row.user, row.movie))[1]) == pytest.approx(float(rating))
    with pytest.raises(DataError, match="columns 'user' and 'movie'"):
        learn.predict({"user": "u1"})


def test_unknown_user_warns_and_rests_on_the_item_bias(data):
    learn = collab_learner(data, n_factors=4, y_range=(0, 5.5), silent=True)
    learn.fit(1, 1e-2)
    with pytest.warns(UnknownNameWarning, match="user nobody not in the training data"):
        rating = float(learn.predict(("nobody", 100))[1])
    item_bias = float(learn.bias([100])[0])
    assert rating == pytest.approx(float(torch.sigmoid(torch.tensor(item_bias)) * 5.5), rel=1e-5)
    assert learn.model.u_weight.weight[0].abs().sum() == 0  # the unknown row never trains


def test_export_and_load_learner_keep_the_names(frame, data, tmp_path):
    learn = collab_learner(data, n_factors=4, y_range=(0, 5.5), silent=True)
    learn.fit(1, 1e-2)
    expected = float(learn.predict(frame.iloc[5])[1])
    file = learn.export()
    loaded = load_learner(tmp_path)
    assert isinstance(loaded, CollabLearner) and file == tmp_path / "export.pkl"
    assert loaded.data.classes == data.classes and loaded.data.names == data.names
    assert float(loaded.predict(frame.iloc[5])[1]) == pytest.approx(expected)
    assert torch.equal(loaded.bias([100, 101]), learn.bias([100, 101]))
    with pytest.warns(UnknownNameWarning, match="movie 5"):
        loaded.predict(("u1", 5))
    nn_learn = collab_learner(data, use_nn=True, layers=[8], silent=True)
    nn_learn.export("nn.pkl")
    assert isinstance(load_learner(tmp_path, "nn.pkl").model, EmbeddingNN)


def test_test_set_gets_predictions_without_ratings(frame):
    test = frame[["user", "movie"]].iloc[:7]
    data = CollabDataBunch.from_df(frame, seed=1, test=test, device="cpu")
    learn = collab_learner(data, n_factors=3, silent=True)
    preds, _ = learn.get_preds(DatasetType.Test)
    assert preds.shape == (7,)


def test_catalogue_has_fastais_movie_lens_sample():
    entry = json.loads((ROOT / "datasets" / "catalogue.json").read_text())["datasets"]["ML_SAMPLE"]
    assert entry["url"].endswith("/movie_lens_sample.tgz") and entry["folder"] == "movie_lens_sample"
    assert entry["size"] == 51790


_FRESH_IMPORT = """
import sys
import fastbase.collab
assert "pandas" not in sys.modules, "import fastbase.collab loaded pandas"
import fastbase.vision
assert "pandas" not in sys.modules
ns = {}
exec("from fastbase.collab import *", ns)
names = {"CollabDataBunch", "collab_learner", "pd", "plt", "np", "torch", "untar_data", "URLs", "load_learner", "pca"}
assert names <= set(ns), names - set(ns)
assert ns["load_learner"] is fastbase.collab.learner.load_learner
print("ok")
"""


def test_namespace_gives_the_lesson_names_and_loads_pandas_only_when_asked():
    env = {**os.environ, "MPLBACKEND": "Agg", "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-c", _FRESH_IMPORT], capture_output=True, text=True, check=False,
                            env=env)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-2000:]


def test_lesson4_cells_on_movie_lens_sample():
    ratings = pd.read_csv(Path(shared_path("data", "movie_lens_sample")) / "ratings.csv")
    data = CollabDataBunch.from_df(ratings, seed=42, device="cpu")
    learn = collab_learner(data, n_factors=50, y_range=[0, 5.5], silent=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        learn.fit_one_cycle(3, 5e-3)
    assert learn.validate()[0] < 0.9  # fastai's lesson reaches about 0.8 here
