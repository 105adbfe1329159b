"""The generic data block API (fastbase.data): item lists, every split and labelling method on the
embedded digits' files, label lists and their items, and the errors that name the items."""
import numpy as np
import pytest
import torch
from image_fixtures import digits_fixture  # noqa: F401

from fastbase.data import (
    Category,
    CategoryList,
    DataBunch,
    DataError,
    EmptyDatasetError,
    FloatItem,
    FloatList,
    ItemList,
    LabelError,
    MultiCategory,
    MultiCategoryList,
)

PNG = [".png"]


@pytest.fixture(name="files")
def files_fixture(digits):
    return ItemList.from_folder(digits, extensions=PNG)


def test_from_folder_finds_sorted_files_and_indexes_like_a_list(files, digits):
    assert len(files) == 1797 and files.items == sorted(files.items) and files.path == digits
    assert files[0] == files.items[0] and files[0].suffix == ".png"
    part = files[:10]
    assert isinstance(part, ItemList) and len(part) == 10 and part.path == digits
    assert ItemList.from_folder(digits, extensions=PNG, include=["valid"]).items == \
        [o for o in files.items if "/valid/" in o.as_posix()]
    assert len(ItemList.from_folder(digits / "train" / "3", extensions=["png"], recurse=False)) > 100


def test_split_by_folder_and_label_from_folder(files):
    lls = files.split_by_folder().label_from_folder()
    assert (len(lls.train), len(lls.valid)) == (1438, 359)
    assert lls.train.y.classes == [str(i) for i in range(10)] and lls.valid.y.classes == lls.train.y.classes
    x, y = lls.train[0]
    assert isinstance(y, Category) and y.obj == x.parent.name and int(y.data) == int(x.parent.name)
    assert str(y) == x.parent.name and y == x.parent.name


def test_split_by_folder_names_what_it_found_when_a_folder_is_wrong(files):
    with pytest.raises(DataError, match="testing.*train, valid"):
        files.split_by_folder(valid="testing")


def test_random_split_follows_numpys_global_seed_as_fastai(files):
    np.random.seed(2)
    first = files.split_by_rand_pct(0.2).valid.items
    np.random.seed(2)
    assert files.split_by_rand_pct(0.2).valid.items == first and len(first) == int(0.2 * 1797)
    state = np.random.get_state()[1].copy()
    seeded = files.split_by_rand_pct(0.2, seed=5)
    assert (np.random.get_state()[1] == state).all()  # a seed of its own leaves the global stream alone
    assert seeded.valid.items == files.split_by_rand_pct(0.2, seed=5).valid.items != first
    assert sorted(seeded.train_idx + seeded.valid_idx) == list(range(1797))


def test_index_list_and_function_splits(files, tmp_path):
    small = files[:20]
    assert small.split_none().valid.items == [] and len(small.split_none().train) == 20
    assert small.split_by_idx([1, 3]).valid.items == [small.items[1], small.items[3]]
    by_idxs = small.split_by_idxs([0, 1, 2], [5])
    assert by_idxs.train.items == small.items[:3] and by_idxs.valid.items == [small.items[5]]
    by_list = small.split_by_list(small.items[:15], small.items[15:])
    assert len(by_list.train) == 15 and by_list.valid.items == small.items[15:]
    by_func = small.split_by_valid_func(lambda o: o.name.endswith("1.png"))
    assert by_func.valid.items and all(o.name.endswith("1.png") for o in by_func.valid.items)
    names = [small.items[2].name, small.items[7].name]
    assert [o.name for o in small.split_by_files(names).valid.items] == names
    (tmp_path / "valid.txt").write_text("\n".join(names) + "\n")
    assert small.split_by_fname_file("valid.txt", path=tmp_path).valid.items == [small.items[2], small.items[7]]
    subsets = small.split_subsets(train_size=0.5, valid_size=0.25, seed=0)
    assert (len(subsets.train), len(subsets.valid)) == (10, 5)
    assert not set(subsets.train.items) & set(subsets.valid.items)
    with pytest.raises(DataError, match="out of range"):
        small.split_by_idxs([0], [99])


def test_an_empty_training_split_is_an_error(files):
    with pytest.raises(EmptyDatasetError, match="training set is empty"):
        files[:5].split_by_idx(range(5))


def test_filters_and_partial_data(files):
    odd = files.filter_by_func(lambda o: int(o.parent.name) % 2 == 1)
    assert odd.items and all(int(o.parent.name) % 2 for o in odd.items)
    assert all("/valid/" in o.as_posix() for o in files.filter_by_folder(include=["valid"]).items)
    assert len(files.filter_by_folder(exclude=["valid"])) == 1438
    kept = files.filter_by_rand(0.5, seed=0)
    assert 700 < len(kept) < 1100 and kept.items == files.filter_by_rand(0.5, seed=0).items
    part = files.use_partial_data(0.1, seed=1)
    assert len(part) == 179 and part.items == sorted(part.items)


def test_from_csv_then_label_and_split_from_the_table(digits, tmp_path):
    pytest.importorskip("pandas")
    table = ItemList.from_csv(digits, "labels.csv", folder=".")
    assert len(table) == 1797 and table.items[0] == digits / "." / table.inner_df.iloc[0, 0]
    lls = table.split_by_rand_pct(0.2, seed=0).label_from_df(cols=1)
    assert lls.train.y.classes == list(range(10))  # the column holds numbers: classes are ints, sorted
    x, y = lls.valid[0]
    assert int(y.obj) == int(x.parent.name)
    df = table.inner_df.assign(is_valid=[n.startswith("valid/") for n in table.inner_df["name"]])
    from_df = ItemList.from_df(df, digits, cols="name", suffix="")
    split = from_df.split_from_df("is_valid")
    assert (len(split.train), len(split.valid)) == (1438, 359)
    assert split.valid.inner_df["is_valid"].all()


def test_label_from_re_func_const_empty_and_lists(files):
    small = files[::60].split_by_idx([0, 7, 14, 21, 28])  # 30 items of every class
    by_re = small.label_from_re(r"/(\d)/\d+\.png$")
    assert by_re.train.y.items == [o.parent.name for o in small.train.items]
    by_func = small.label_from_func(lambda o: "low" if int(o.parent.name) < 5 else "high")
    assert by_func.train.y.classes == ["high", "low"]
    assert set(small.label_const("x").train.y.items) == {"x"}
    empty = small.label_empty()
    assert str(empty.train[0][1]) == "" and empty.train.y.classes is None
    lists = small.label_from_lists(["a", "b"] * 12 + ["a"], ["b"] * 5)
    assert lists.train.y.items[:2] == ["a", "b"] and len(lists.train) == 25
    assert lists.train.y.classes == ["a", "b"] and lists.valid.y.targets.tolist() == [1] * 5


def test_label_from_re_names_the_items_it_does_not_match(files):
    with pytest.raises(LabelError, match=r"no group"):
        files[:5].label_from_re(r"\d+")
    with pytest.raises(LabelError, match=r"do not match, like .*/7/"):
        files.split_by_folder().label_from_re(r"/([0-6])/\d+\.png$")


def test_a_validation_class_that_training_lacks_is_named_with_an_item(files):
    src = files.split_by_valid_func(lambda o: o.parent.name == "9")
    with pytest.raises(LabelError, match=r"class\(es\) 9 that the training set lacks \(e\.g\. .*/9/"):
        src.label_from_folder()
    lls = src.label_from_folder(classes=[str(i) for i in range(10)])  # naming every class allows it
    assert lls.valid.y.targets.unique().tolist() == [9]


def test_given_classes_may_hold_classes_no_item_has(files):
    lls = files[:40].split_by_idx(range(35, 40)).label_from_folder(classes=["0", "1", "2", "zz"])
    assert lls.train.y.classes == ["0", "1", "2", "zz"] and lls.train.y.c == 4


def test_multi_label_with_a_delimiter_gives_multi_hot_targets(files):
    def tags(o):
        d = int(o.parent.name)
        return f"{'odd' if d % 2 else 'even'} {'round' if d in (0, 6, 8, 9) else 'straight'}"
    lls = files[::30].split_by_idx(range(0, 60, 6)).label_from_func(tags, label_delim=" ")
    assert isinstance(lls.train.y, MultiCategoryList) and lls.train.y.multi_label
    assert lls.train.y.classes == ["even", "odd", "round", "straight"]
    x, y = lls.train[0]
    assert isinstance(y, MultiCategory) and sorted(y.obj) == sorted(tags(x).split())
    assert y.data.shape == (4,) and y.data.sum() == 2 and str(y) == ";".join(y.obj)


def test_lists_of_labels_choose_a_multi_category_list(files):
    ll = files[:4].label_from_list([["a"], ["a", "b"], [], ["c"]])
    assert isinstance(ll.y, MultiCategoryList) and ll.y.targets.tolist()[1] == [1.0, 1.0, 0.0]


def test_floats_choose_a_float_list_with_log_and_mse(files):
    values = [float(o.parent.name) + 1 for o in files.items[:20]]
    ll = files[:20].label_from_list(values)
    assert isinstance(ll.y, FloatList) and ll.y.c == 1 and isinstance(ll.y.loss_func, torch.nn.MSELoss)
    _, y = ll[3]
    assert isinstance(y, FloatItem) and float(y.data) == values[3] and str(y) == f"{values[3]:.4g}"
    logged = files[:20].label_from_list(values, label_cls=FloatList, log=True)
    assert torch.allclose(logged.y.targets[:, 0], torch.tensor(values).log())
    with pytest.raises(LabelError, match="positive"):
        files[:2].label_from_list([1.0, -2.0], log=True, label_cls=FloatList)


def test_generic_chain_ends_in_a_databunch_of_item_data():
    items = ItemList([torch.full((3,), float(i)) for i in range(24)])
    lls = items.split_by_idx(range(20, 24)).label_from_func(lambda t: "big" if t[0] > 11 else "small")
    data = lls.databunch(bs=4, num_workers=0, device="cpu", seed=0)
    assert isinstance(data, DataBunch) and data.classes == ["big", "small"] and data.c == 2
    x, y = data.one_batch()
    assert x.shape == (4, 3) and y.dtype == torch.int64
    assert ((x[:, 0] > 11).long() == 1 - y).all()
    data.c = 5  # settable, as in fastai v1
    assert data.c == 5


def test_label_list_repr_and_iteration(files):
    ll = files[:6].label_from_folder()
    assert isinstance(ll.y, CategoryList) and "CategoryList (6 items)" in repr(ll.y)
    assert [str(y) for y in ll.y] == [o.parent.name for o in files.items[:6]]
    assert "LabelList (6 items)" in repr(ll)
