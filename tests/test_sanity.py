"""learn.sanity_check(): a healthy setup passes every check, each broken setup fails the check made
for it with a message, and the Learner comes back exactly as it was."""
import pytest
import torch
import torch.nn.functional as F
from tiny_models import dataset, make_data, make_learner, tiny_mlp
from tiny_vision import noise_folder, tiny_arch
from torch.utils.data import DataLoader, TensorDataset

from fastbase.data import DataBunch
from fastbase.learner import Learner
from fastbase.vision.data import ImageDataBunch
from fastbase.vision.learner import cnn_learner
from fastbase.vision.transforms import get_transforms

pytestmark = pytest.mark.usefixtures("one_thread")


def data_from(x, y, **kwargs) -> DataBunch:
    train = TensorDataset(x, y)
    train.classes = ["a", "b"]
    return DataBunch.create(train, dataset(32, 1), bs=32, num_workers=0, device="cpu", seed=0, **kwargs)


def test_a_healthy_setup_passes_every_check(capsys):
    report = make_learner().sanity_check()
    assert report and len(report) == 5 and not report.failed
    assert all(check.passed for check in report)
    printed = capsys.readouterr().out
    assert "all passed" in printed and printed.count("[PASS]") == 5
    assert "2 classes in 128 training labels" in report["labels not all one class"].message
    with pytest.raises(KeyError, match="initial loss"):
        report["no such check"]


def test_augmented_images_pass(tmp_path):
    noise_folder(tmp_path)
    data = ImageDataBunch.from_folder(tmp_path, ds_tfms=get_transforms(), size=16, bs=8, num_workers=0, seed=0)
    torch.manual_seed(0)
    report = cnn_learner(data.normalize(), tiny_arch, pretrained=False, silent=True).sanity_check(show=False)
    assert report, str(report)
    assert "first 8 training items keep their labels" in report["augmentation keeps labels"].message


def test_sanity_check_leaves_the_learner_as_it_was():
    learn = make_learner()
    learn.fit(1, 1e-2)
    weights = {k: v.clone() for k, v in learn.model.state_dict().items()}
    moments = {k: v.clone() for k, v in learn.opt.state_dict()["state"][0].items()}
    rng, shuffle = torch.get_rng_state(), learn.data.train_dl.dl.generator.get_state()
    learn.sanity_check(show=False)
    assert all(torch.equal(weights[k], v) for k, v in learn.model.state_dict().items())
    assert all(torch.equal(moments[k], v) for k, v in learn.opt.state_dict()["state"][0].items())
    assert torch.equal(torch.get_rng_state(), rng)
    assert torch.equal(learn.data.train_dl.dl.generator.get_state(), shuffle)


def test_constant_inputs_fail_the_data_check():
    x = torch.ones(64, 8)
    report = make_learner(data_from(x, torch.arange(64) % 2)).sanity_check(show=False)
    check = report["data not constant"]
    assert check.passed is False and "identical" in check.message
    assert not report


def test_a_constant_image_channel_fails_the_data_check():
    x = torch.rand(16, 3, 4, 4)
    x[:, 1] = 0.5
    report = Learner(data_from(x, torch.arange(16) % 2), torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(48, 2)),
                     silent=True).sanity_check(show=False)
    assert report["data not constant"].passed is False and "channel(s) [1]" in report["data not constant"].message


def test_labels_of_one_class_fail_the_label_check():
    report = make_learner(data_from(torch.randn(64, 8), torch.zeros(64, dtype=torch.long))).sanity_check(show=False)
    check = report["labels not all one class"]
    assert check.passed is False and "all 64 training labels are class 'a'" in check.message


def test_a_huge_last_layer_bias_fails_the_initial_loss_check():
    learn = make_learner()
    with torch.no_grad():
        learn.model[-1].bias.copy_(torch.tensor([30.0, -30.0]))
    check = learn.sanity_check(show=False)["initial loss"]
    assert check.passed is False and "far above 0.693 = ln(2)" in check.message and "bias" in check.message


def test_a_learning_rate_of_zero_fails_the_overfit_check():
    check = make_learner().sanity_check(lr=0.0, show=False)["overfit one batch"]
    assert check.passed is False and "memorise" in check.message and "lr 0.0" in check.message


def test_a_loss_that_ignores_the_targets_fails_the_overfit_check():
    def broken_loss(pred, target):  # random targets every step: nothing to memorise
        return F.cross_entropy(pred, torch.randint(0, 2, target.shape))

    report = make_learner(loss_func=broken_loss).sanity_check(show=False)
    assert report["overfit one batch"].passed is False and report["initial loss"].passed


def test_a_transform_that_changes_labels_fails_the_augmentation_check():
    def flip_labels(batch):
        x, y = batch
        return x, 1 - y

    data = make_data()
    data = DataBunch.create(data.train_ds, data.valid_ds, bs=32, num_workers=0, device="cpu", seed=0,
                            train_tfms=[flip_labels])
    check = make_learner(data).sanity_check(show=False)["augmentation keeps labels"]
    assert check.passed is False and "change the labels" in check.message


def test_unshuffled_sorted_batches_fail_the_augmentation_check():
    x = torch.randn(64, 8)
    train = TensorDataset(x, (torch.arange(64) >= 32).long())  # sorted by class
    train.classes = ["a", "b"]
    loader = DataLoader(train, batch_size=16, shuffle=False)
    data = DataBunch(loader, DataLoader(dataset(16, 1), batch_size=16), fix_dl=loader, device="cpu")
    check = make_learner(data).sanity_check(show=False)["augmentation keeps labels"]
    assert check.passed is False and "shuffled" in check.message


def test_a_check_that_crashes_is_reported_as_failed(capsys):
    learn = Learner(make_data(), tiny_mlp(n_in=5), silent=True)  # expects 5 features, gets 8
    report = learn.sanity_check()
    assert report["initial loss"].passed is False and "raised RuntimeError" in report["initial loss"].message
    assert "[FAIL] initial loss" in capsys.readouterr().out
