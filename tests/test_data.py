"""The generic DataBunch: loaders, datasets types, normalisation, batch transforms, export state,
worker counts. Tensor datasets only: nothing here knows about images."""
import warnings

import pytest
import torch
from torch.utils.data import Dataset

from fastbase import data
from fastbase.data import (
    DataBunch,
    DataError,
    DatasetType,
    DeviceDataLoader,
    EmptyDatasetError,
    Normalizer,
    imagenet_stats,
    resolve_num_workers,
    workers,
)


class IndexedDataset(Dataset):
    """x is a (3, 2, 2) tensor filled with i / n per channel offset, y = i: a batch tells which items it holds."""

    def __init__(self, n, classes=("a", "b")):
        self.n, self.classes = n, list(classes)

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        x = torch.full((3, 2, 2), i / self.n) + torch.tensor([0.0, 1.0, 2.0]).view(3, 1, 1)
        return x, torch.tensor(i)

    def item(self, i):
        return self[i][0]


def make_bunch(n_train=20, n_valid=8, bs=4, **kwargs):
    kwargs.setdefault("num_workers", 0)
    return DataBunch.create(IndexedDataset(n_train), IndexedDataset(n_valid), bs=bs, device="cpu", **kwargs)


def test_create_builds_train_valid_fix_loaders_on_the_device():
    bunch = make_bunch()
    assert isinstance(bunch.train_dl, DeviceDataLoader) and bunch.test_dl is None
    assert len(bunch.train_ds) == 20 and len(bunch.valid_ds) == 8
    assert bunch.classes == ["a", "b"] and bunch.c == 2 and not bunch.multi_label
    assert bunch.device == torch.device("cpu") and str(bunch.path) == "."
    x, y = bunch.one_batch()
    assert x.shape == (4, 3, 2, 2) and y.shape == (4,)
    assert [int(i) for _, y in bunch.dl(DatasetType.Fix) for i in y] == list(range(20))  # in order
    assert [int(i) for _, y in bunch.dl(DatasetType.Valid) for i in y] == list(range(8))


def test_training_order_is_shuffled_and_reproducible_from_seed():
    def order(bunch):
        return [int(i) for _, y in bunch.train_dl for i in y]

    first, again = order(make_bunch(seed=3)), order(make_bunch(seed=3))
    assert first == again and first != sorted(first)
    assert order(make_bunch(seed=4)) != first


def test_loaders_by_name_and_a_subset_keeps_the_label_attributes():
    bunch = make_bunch()
    assert list(bunch.named_dls) == ["train", "valid", "fix"] and bunch.dls == list(bunch.named_dls.values())
    small = bunch.subset(6, seed=0)
    assert len(small.train_ds) == 6 and small.classes == ["a", "b"] and small.c == 2 and not small.multi_label
    plain = DataBunch.create(torch.utils.data.TensorDataset(torch.rand(4, 3), torch.zeros(4)),
                             torch.utils.data.TensorDataset(torch.rand(2, 3), torch.zeros(2)), bs=2, device="cpu")
    assert plain.subset(2, seed=0).classes is None and plain.c is None  # a plain dataset has no label attributes
    with pytest.raises(DataError, match="not a label attribute"):
        data.bunch.label_attr(bunch.train_ds, "size")


def test_dl_without_test_set_names_add_test():
    with pytest.raises(DataError, match="add_test"):
        make_bunch().dl(DatasetType.Test)


def test_add_test_gets_validation_transforms_and_normalisation():
    bunch = make_bunch().normalize(([0.5] * 3, [2.0] * 3))
    bunch.add_test(IndexedDataset(6))
    x, _ = bunch.one_batch(DatasetType.Test)
    assert torch.allclose(x[0], (IndexedDataset(6).item(0) - 0.5) / 2)


def test_empty_training_set_fails_at_creation():
    with pytest.raises(EmptyDatasetError, match="training set is empty"):
        DataBunch.create(IndexedDataset(0), IndexedDataset(4), num_workers=0, device="cpu")


def test_normalize_returns_self_and_replaces_earlier_stats():
    bunch = make_bunch()
    assert bunch.normalize(imagenet_stats) is bunch
    assert bunch.normalize(([0.0] * 3, [1.0] * 3)) is bunch
    norms = [t for t in bunch.train_dl.tfms if isinstance(t, Normalizer)]
    assert len(norms) == 1 and bunch.stats == ([0.0] * 3, [1.0] * 3)


@pytest.mark.parametrize("ds_type", [DatasetType.Train, DatasetType.Valid, DatasetType.Test, DatasetType.Fix])
def test_normalize_then_denorm_gives_back_the_items(ds_type):
    bunch = make_bunch().normalize(imagenet_stats)
    bunch.add_test(IndexedDataset(8))
    x, y = bunch.one_batch(ds_type)
    ds = bunch.dl(ds_type).dataset
    raw = torch.stack([ds.item(int(i)) for i in y])
    mean, std = (torch.tensor(s).view(1, 3, 1, 1) for s in imagenet_stats)
    assert torch.allclose(x, (raw - mean) / std, atol=1e-6)
    assert torch.allclose(bunch.denorm(x), raw, atol=1e-6)
    x2, y2 = bunch.one_batch(ds_type, denorm=True)
    assert torch.allclose(x2, torch.stack([ds.item(int(i)) for i in y2]), atol=1e-6)


def test_normalize_without_stats_uses_a_training_batch():
    bunch = make_bunch(bs=20).normalize()
    x, _ = bunch.one_batch()
    assert torch.allclose(x.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-5)
    assert torch.allclose(x.std(dim=(0, 2, 3)), torch.ones(3), atol=1e-5)


def test_batch_stats_are_per_channel():
    mean, std = make_bunch(bs=20).batch_stats()
    assert mean.shape == std.shape == (3,)
    assert torch.allclose(mean, torch.tensor([0.475, 1.475, 2.475]), atol=1e-5)


def test_train_tfms_run_on_the_training_loader_only():
    class AddOne:
        def __call__(self, batch):
            x, y = batch
            return x + 1, y

    bunch = DataBunch.create(IndexedDataset(8), IndexedDataset(4), bs=8, num_workers=0, device="cpu",
                             train_tfms=[AddOne()])
    assert bunch.one_batch()[0].min() >= 1
    assert bunch.one_batch(DatasetType.Valid)[0].min() < 1
    assert bunch.one_batch(DatasetType.Fix)[0].min() < 1


def test_fix_ds_replaces_the_training_set_in_the_fix_loader():
    bunch = DataBunch.create(IndexedDataset(8), IndexedDataset(4), bs=4, num_workers=0, device="cpu",
                             fix_ds=IndexedDataset(5))
    assert len(bunch.fix_dl.dataset) == 5 and len(bunch.train_ds) == 8


def test_on_the_cpu_with_workers_batch_transforms_run_in_the_workers():
    bunch = make_bunch(num_workers=1).normalize(([0.5] * 3, [2.0] * 3))
    assert bunch.train_dl.tfms_in_workers and isinstance(bunch.train_dl.dl.collate_fn, data.CollateThenTransform)
    x, y = bunch.one_batch(DatasetType.Valid)
    expected = torch.stack([(IndexedDataset(8).item(int(i)) - 0.5) / 2 for i in y])
    assert torch.allclose(x, expected)
    copy = bunch.valid_dl.new(shuffle=False)
    assert copy.tfms == bunch.valid_dl.tfms and copy.collate_fn is bunch.valid_dl.collate_fn


def test_without_workers_batch_transforms_run_in_the_loop():
    bunch = make_bunch(num_workers=0).normalize()
    assert not bunch.train_dl.tfms_in_workers and bunch.train_dl.dl.collate_fn is bunch.train_dl.collate_fn


def test_num_workers_default_comes_from_the_data_layer():
    assert make_bunch(num_workers=None).train_dl.num_workers == workers.default_num_workers(torch.device("cpu"))


def test_workers_fall_back_to_zero_with_a_warning_on_tiny_shm(monkeypatch):
    monkeypatch.setattr(workers, "shm_size", lambda: 32 * 2**20)
    with pytest.warns(RuntimeWarning, match="/dev/shm has only 32 MB"):
        assert resolve_num_workers(2, "cpu") == 0
    monkeypatch.setattr(workers, "num_cpus", lambda: 16)
    with pytest.warns(RuntimeWarning, match="shared memory"):
        assert workers.default_num_workers("cuda") == 0
    with pytest.raises(DataError, match="0 or more"):
        resolve_num_workers(-1)


def test_default_workers_without_shm_trouble(monkeypatch):
    monkeypatch.setattr(workers, "shm_size", lambda: 8 * 2**30)
    monkeypatch.setattr(workers, "num_cpus", lambda: 2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert workers.default_num_workers("cpu") == 2  # decoding in two workers keeps the loop fed
        assert resolve_num_workers(1, "cpu") == 1
    monkeypatch.setattr(workers, "num_cpus", lambda: 1)
    assert workers.default_num_workers("cpu") == 0  # one core: workers only fight the training thread
    monkeypatch.setattr(workers, "num_cpus", lambda: 16)
    assert workers.default_num_workers("cpu") == 4 and workers.default_num_workers("cuda") == 8


def test_export_state_is_plain_data_and_rebuilds_an_inference_bunch():
    bunch = make_bunch().normalize(imagenet_stats)
    state = bunch.export_state()
    assert state["type"] == "fastbase.data.bunch:DataBunch" and state["classes"] == ["a", "b"] and state["c"] == 2
    loaded = DataBunch.load_export_state(state, device="cpu")
    assert loaded.inference_only and loaded.classes == ["a", "b"] and loaded.stats == bunch.stats
    item = IndexedDataset(4).item(1)
    assert torch.allclose(loaded.one_item(item)[0], bunch.one_item(item)[0])
    assert loaded.one_item(item)[0].shape == (1, 3, 2, 2)
    with pytest.raises(DataError, match="inference"):
        loaded.dl(DatasetType.Valid)


def test_generic_show_batch_asks_for_a_dedicated_bunch():
    with pytest.raises(NotImplementedError, match="ImageDataBunch"):
        make_bunch().show_batch()


def test_dataset_type_names():
    assert [t.name for t in DatasetType] == ["Train", "Valid", "Test", "Fix", "Single"]


def test_normalizer_writes_in_place_only_into_a_batch_a_transform_just_made():
    from fastbase.data import apply_tfms
    from fastbase.vision.transforms import ToFloat

    norm = Normalizer([0.5, 0.25], [0.5, 2.0])
    stored = torch.rand(4, 2, 3, 3)  # e.g. a dataset's own tensor, which collate may hand over as is
    expected = (stored - torch.tensor([0.5, 0.25]).view(1, 2, 1, 1)) / torch.tensor([0.5, 2.0]).view(1, 2, 1, 1)

    # straight from the data: a new tensor, the data untouched
    kept = stored.clone()
    x, _ = apply_tfms((stored, None), [norm])
    assert torch.allclose(x, expected) and torch.equal(stored, kept) and x.data_ptr() != stored.data_ptr()

    # after ToFloat (uint8 in, its own float tensor out): normalised in that tensor, same values
    raw = (stored * 255).round().to(torch.uint8)
    made = ToFloat()((raw, None))[0]
    x, _ = apply_tfms((raw, None), [ToFloat(), norm])
    assert torch.equal(x, norm.norm(made)) and torch.equal(raw, (stored * 255).round().to(torch.uint8))  # bit for bit

    class Spy:  # records where its output's data live; `then`: returns that tensor instead
        def __init__(self, then=None, makes_new_batch=False):
            self.then, self.makes_new_batch = then, makes_new_batch

        def __call__(self, batch):
            out = batch if self.then is None else (self.then, *batch[1:])
            self.ptr = out[0].data_ptr()
            return out

    made = Spy(then=torch.rand(4, 2, 3, 3), makes_new_batch=True)  # declares its x as its own
    assert apply_tfms((raw, None), [made, norm])[0].data_ptr() == made.ptr  # normalised in it
    spy = Spy()
    assert apply_tfms((raw, None), [ToFloat(), spy, norm])[0].data_ptr() != spy.ptr  # unknown step: new tensor
    handed = Spy(then=stored)  # returns a tensor it holds: nothing may write in it
    x, _ = apply_tfms((raw, None), [ToFloat(), handed, norm])
    assert torch.equal(stored, kept) and torch.allclose(x, expected)


class _BatchGatherer(Dataset):
    """Items `i` as floats, fetched a batch at a time through `__getitems__`."""

    def __init__(self, n):
        self.x = torch.arange(n, dtype=torch.float32)

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i], self.x[i] * 2

    def __getitems__(self, positions):
        idx = torch.as_tensor(positions)
        return [(self.x[i], self.x[i] * 2) for i in idx]


def test_batch_gathering_datasets_are_read_here_in_torchs_order():
    """Without workers, a `__getitems__` dataset is read without torch's iterator: the same batches in
    the same order, and the loader's generator left where torch's iterator leaves it."""
    bunch = DataBunch.create(_BatchGatherer(50), _BatchGatherer(10), bs=8, num_workers=0, seed=3, device="cpu")
    dl = bunch.train_dl
    assert dl.fetches_batches_here
    state = dl.dl.generator.get_state()
    ours = [b for _ in range(2) for b in dl]
    after_ours = dl.dl.generator.get_state()
    dl.dl.generator.set_state(state)
    torchs = [dl.proc_batch(b) for _ in range(2) for b in dl.dl]
    assert len(ours) == len(torchs) == 12
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(ours, torchs))
    assert torch.equal(after_ours, dl.dl.generator.get_state())
    assert not bunch.train_dl.new(num_workers=1).fetches_batches_here
