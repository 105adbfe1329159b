"""The Learner: it learns, follows the one-cycle curve, freezes layer groups, agrees with itself
across validate/get_preds/predict, saves and loads safely, and reports progress."""
import numpy as np
import pytest
import torch
from tiny_models import make_data, make_learner
from torch import nn

from fastbase.callback import Callback
from fastbase.callbacks.bn_stats import BnFreeze, has_bn_statistics
from fastbase.callbacks.one_cycle import OneCycleScheduler
from fastbase.callbacks.progress import ProgressCallback
from fastbase.core import FastbaseError, set_seed
from fastbase.data import DatasetType
from fastbase.export import UnsafeFileError
from fastbase.learner import Learner
from fastbase.metrics import (
    accuracy,
    accuracy_thresh,
    error_rate,
    fbeta,
    top_k_accuracy,
)


def test_a_small_model_learns_a_learnable_task():
    learn = make_learner(make_data(n_train=512, n_valid=128), metrics=[accuracy, error_rate])
    start = learn.validate()
    learn.fit_one_cycle(4, 1e-2)
    loss, acc, err = learn.validate()
    assert loss < start[0] / 2 and acc > 0.9 and err == pytest.approx(1 - acc)
    rec = learn.recorder
    assert np.mean(rec.losses[-8:]) < np.mean(rec.losses[:8])
    assert [v[1:] for v in rec.values[-1:]] == [pytest.approx([loss, acc, err])]


def test_one_cycle_lr_and_momentum_follow_the_curve():
    learn = make_learner()  # 4 batches per epoch
    learn.fit_one_cycle(5, max_lr=1e-2, div_factor=25, pct_start=0.3, final_div=1e3)
    lrs, moms = np.array(learn.recorder.lrs), np.array(learn.recorder.moms)
    peak = int(20 * 0.3)
    assert len(lrs) == 20 and int(np.argmax(lrs)) == peak
    assert lrs[0] == pytest.approx(1e-2 / 25) and lrs[peak] == pytest.approx(1e-2) and lrs[-1] == pytest.approx(1e-5)
    assert (np.diff(lrs[:peak + 1]) > 0).all() and (np.diff(lrs[peak:]) < 0).all()
    assert moms[0] == pytest.approx(0.95) and moms[peak] == pytest.approx(0.85) and moms[-1] == pytest.approx(0.95)
    assert int(np.argmin(moms)) == peak


def test_one_cycle_gives_each_layer_group_its_own_lr():
    learn = make_learner(groups=True)
    learn.fit_one_cycle(1, max_lr=slice(1e-4, 1e-2), final_div=10)
    assert learn.opt.lrs == pytest.approx([1e-5, 1e-4, 1e-3])


def test_one_cycle_resumes_where_its_state_says():
    learn = make_learner()
    first = OneCycleScheduler(1e-2)
    learn.fit(2, callbacks=[first])
    resumed = OneCycleScheduler(1e-2)
    resumed.load_state_dict(first.state_dict())
    resumed.learn, learn.n_epochs = learn, 2
    resumed.before_fit()
    assert resumed.iteration == 8 and resumed.values_at(8) == first.values_at(8)


def test_fit_one_cycle_start_epoch_skips_the_first_epochs():
    learn = make_learner()
    learn.fit_one_cycle(3, 1e-2, start_epoch=1)
    sched = OneCycleScheduler(1e-2)
    sched.total, sched.warmup = 12, int(12 * 0.3)
    assert len(learn.recorder.lrs) == 8 and learn.recorder.lrs[0] == pytest.approx(sched.values_at(4)[0])


def trainable(module):
    return [p.requires_grad for p in module.parameters()]


def test_freeze_keeps_batchnorm_trainable_and_freezes_the_rest_of_the_body():
    learn = make_learner(groups=True)  # groups: [Linear, BatchNorm], [ReLU], [Linear]
    learn.freeze()
    assert trainable(learn.model[0]) == [False, False] and trainable(learn.model[1]) == [True, True]
    assert trainable(learn.model[3]) == [True, True] and learn.n_frozen == 2
    learn.unfreeze()
    assert all(p.requires_grad for p in learn.model.parameters()) and learn.n_frozen == 0


def test_freeze_to_with_train_bn_false_freezes_batchnorm_too():
    learn = make_learner(groups=True, train_bn=False)
    learn.freeze_to(1)
    assert trainable(learn.model[:2]) == [False] * 4 and trainable(learn.model[3]) == [True, True]


def test_freeze_needs_two_layer_groups():
    with pytest.raises(FastbaseError, match="two layer groups"):
        make_learner().freeze()


def test_layer_groups_must_cover_the_model():
    data = make_data()
    model = nn.Sequential(nn.Linear(8, 4), nn.Linear(4, 2))
    with pytest.raises(FastbaseError, match="in no layer group"):
        Learner(data, model, layer_groups=[model[1]])


def test_frozen_groups_do_not_change_and_the_optimizer_survives_unfreeze():
    learn = make_learner(groups=True)
    learn.fit(1)
    opt, state = learn.opt, learn.opt.state[learn.model[3].weight]["exp_avg"].clone()
    learn.freeze()
    body = learn.model[0].weight.clone()
    learn.fit(1)
    assert torch.equal(learn.model[0].weight, body)
    learn.unfreeze()
    assert learn.opt is opt and not torch.equal(learn.opt.state[learn.model[3].weight]["exp_avg"], state)
    learn.fit(1)
    assert not torch.equal(learn.model[0].weight, body)


@pytest.mark.parametrize("freeze_bn_stats", [True, False])
def test_freeze_bn_stats_keeps_running_mean_fixed_over_a_frozen_epoch(freeze_bn_stats):
    learn = make_learner(groups=True, freeze_bn_stats=freeze_bn_stats)
    learn.freeze()
    before = learn.model[1].running_mean.clone()
    learn.fit(1)
    assert torch.equal(learn.model[1].running_mean, before) == freeze_bn_stats
    assert learn.model[1].weight.requires_grad  # train_bn: still trainable


def test_bn_freeze_of_all_groups_keeps_statistics_fixed_in_unfrozen_groups_too():
    learn = make_learner(groups=True)  # nothing frozen
    before = learn.model[1].running_mean.clone()
    learn.fit(1, callbacks=[BnFreeze()])  # only frozen groups: none here, so the statistics move
    assert not torch.equal(learn.model[1].running_mean, before)
    before, weight = learn.model[1].running_mean.clone(), learn.model[1].weight.clone()
    learn.fit(1, callbacks=[BnFreeze(all_groups=True)])
    assert torch.equal(learn.model[1].running_mean, before) and not torch.equal(learn.model[1].weight, weight)


def pretrained_body_new_head(freeze_bn_stats="finetune") -> Learner:
    """[Linear, BatchNorm] body whose BatchNorm has statistics (as if pretrained), and a new head with
    its own fresh BatchNorm; two layer groups."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 16), nn.BatchNorm1d(16),
                          nn.Linear(16, 2))
    with torch.no_grad():
        model[1].running_mean.normal_(), model[1].running_var.uniform_(0.5, 2.0)
    return Learner(make_data(), model, layer_groups=[model[:2], model[2:]], freeze_bn_stats=freeze_bn_stats,
                   silent=True)


def test_freeze_bn_stats_finetune_lets_only_the_head_learn_statistics_and_only_while_the_body_is_frozen():
    learn = pretrained_body_new_head()
    model, body_bn, head_bn = learn.model, learn.model[1], learn.model[4]
    learn.freeze()
    body_stats, head_stats = body_bn.running_mean.clone(), head_bn.running_mean.clone()
    learn.fit(1)
    assert torch.equal(body_bn.running_mean, body_stats)  # frozen group: fixed, as with True
    assert not torch.equal(head_bn.running_mean, head_stats)  # the head learns its statistics
    learn.unfreeze()
    head_stats, weight = head_bn.running_mean.clone(), model[0].weight.clone()
    learn.fit(1)
    assert torch.equal(body_bn.running_mean, body_stats) and torch.equal(head_bn.running_mean, head_stats)
    assert not torch.equal(model[0].weight, weight)  # the body trains, on fixed statistics


def test_freeze_bn_stats_finetune_lets_a_new_head_unfrozen_at_once_learn_its_statistics_first():
    learn = pretrained_body_new_head()
    body_bn, head_bn = learn.model[1], learn.model[4]
    assert has_bn_statistics(body_bn) and not has_bn_statistics(head_bn)
    body_stats = body_bn.running_mean.clone()
    learn.fit(2)  # never frozen: the head's BatchNorm has no statistics to keep, so it learns them all fit long
    assert torch.equal(body_bn.running_mean, body_stats)
    assert int(head_bn.num_batches_tracked) == 2 * len(learn.data.train_dl)
    head_stats = head_bn.running_mean.clone()
    learn.fit(1)  # now it has some: they stay
    assert torch.equal(head_bn.running_mean, head_stats) and torch.equal(body_bn.running_mean, body_stats)


def test_freeze_bn_stats_body_keeps_the_body_statistics_and_lets_the_head_learn_in_both_stages():
    learn = pretrained_body_new_head("body")
    model, body_bn, head_bn = learn.model, learn.model[1], learn.model[4]
    learn.freeze()
    body_stats, head_stats = body_bn.running_mean.clone(), head_bn.running_mean.clone()
    learn.fit(1)
    assert torch.equal(body_bn.running_mean, body_stats)
    assert not torch.equal(head_bn.running_mean, head_stats)
    learn.unfreeze()
    head_stats, weight = head_bn.running_mean.clone(), model[0].weight.clone()
    learn.fit(1)
    assert torch.equal(body_bn.running_mean, body_stats)  # unfrozen body: weights train, statistics fixed
    assert not torch.equal(model[0].weight, weight)
    assert not torch.equal(head_bn.running_mean, head_stats)  # the head follows the moving body
    assert "freeze_bn_stats='body' (running statistics fixed in the body" in learn.summary()


def test_a_new_head_starts_its_statistics_at_its_first_batch_not_at_zero():
    """Three batches at momentum 0.1 would leave 0.9**3 of the initial mean 0 in the running mean; a
    head learning its first statistics averages its batches exactly, then goes back to momentum 0.1."""
    learn = pretrained_body_new_head("body")
    head_bn = learn.model[4]
    batch_means = []
    hook = learn.model[3].register_forward_hook(
        lambda m, i, out: batch_means.append(out.detach().mean(0)) if m.training else None)
    learn.freeze()
    learn.fit(1, 0.0)  # lr 0: every batch sees the same weights
    hook.remove()
    assert len(batch_means) == len(learn.data.train_dl) > 1
    assert torch.allclose(head_bn.running_mean, torch.stack(batch_means).mean(0), atol=1e-6)
    assert head_bn.momentum == 0.1
    learned = head_bn.running_mean.clone()
    learn.unfreeze()
    learn.fit(1, 0.0)  # it has statistics now: an ordinary running average at 0.1
    assert not torch.allclose(head_bn.running_mean, learned)
    assert head_bn.momentum == 0.1


def test_freeze_bn_stats_rejects_an_unknown_setting():
    with pytest.raises(FastbaseError, match="freeze_bn_stats='all'"):
        make_learner(freeze_bn_stats="all")


def test_validate_get_preds_and_predict_agree():
    learn = make_learner(make_data(n_valid=37, val_bs=10), metrics=[accuracy])  # batches of 10, 10, 10, 7
    learn.fit(2)
    loss, acc = learn.validate()
    preds, targets, losses = learn.get_preds(with_loss=True)
    assert preds.shape == (37, 2) and torch.allclose(preds.sum(1), torch.ones(37))  # softmax applied
    assert losses.mean().item() == pytest.approx(loss, rel=1e-5)
    assert (preds.argmax(1) == targets).float().mean().item() == pytest.approx(acc)
    x, _ = learn.data.valid_ds[3]
    label, idx, probs = learn.predict(x)
    assert torch.allclose(probs, preds[3], atol=1e-6) and int(idx) == int(preds[3].argmax())
    assert label == learn.data.classes[int(idx)]


def test_multi_label_data_gets_bce_sigmoid_and_thresholded_predictions():
    learn = make_learner(make_data(multi_label=True), metrics=[accuracy_thresh, fbeta])
    assert isinstance(learn.loss_func, nn.BCEWithLogitsLoss)
    learn.fit(2, lr=1e-2)
    preds, targets = learn.get_preds()
    assert preds.shape == targets.shape == (40, 2) and ((0 <= preds) & (preds <= 1)).all()
    labels, hot, probs = learn.predict(learn.data.valid_ds[0][0])
    assert hot.tolist() == (probs > 0.5).float().tolist()
    assert labels == [c for c, h in zip(learn.data.classes, hot) if h]


def test_the_loss_comes_from_the_data():
    assert isinstance(make_learner().loss_func, nn.CrossEntropyLoss)
    data = make_data()
    data.train_ds.classes = None
    with pytest.raises(FastbaseError, match="loss_func"):
        Learner(data, nn.Linear(8, 2))


def test_metrics_on_known_values():
    pred = torch.tensor([[0.1, 0.9, 0.0], [0.8, 0.1, 0.1], [0.2, 0.3, 0.5], [0.3, 0.4, 0.3]])
    targ = torch.tensor([1, 0, 1, 2])
    assert accuracy(pred, targ).item() == 0.5 and error_rate(pred, targ).item() == 0.5
    assert top_k_accuracy(pred, targ, k=2).item() == 0.75
    probs, truth = torch.tensor([[0.9, 0.1], [0.6, 0.7]]), torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    assert accuracy_thresh(probs, truth, sigmoid=False).item() == 0.75
    assert fbeta(probs, truth, thresh=0.5, beta=1, sigmoid=False).item() == pytest.approx((1 + 2 / 3) / 2)


def test_metrics_are_exact_over_batches_of_unequal_size():
    learn = make_learner(make_data(n_valid=37, val_bs=16), metrics=[accuracy])  # 16, 16, 5
    learn.fit(1)
    preds, targets = learn.get_preds()
    assert learn.validate()[1] == pytest.approx((preds.argmax(1) == targets).float().mean().item())


def test_save_and_load_round_trip_model_and_optimizer(tmp_path):
    learn = make_learner(path=tmp_path)
    learn.fit(1)
    file = learn.save("stage-1")
    assert file == tmp_path / "models" / "stage-1.pth"
    other = make_learner(path=tmp_path, seed=1).load("stage-1")
    assert torch.equal(learn.get_preds()[0], other.get_preds()[0])
    a, b = learn.opt.state_dict(), other.opt.state_dict()
    assert a["param_groups"] == b["param_groups"]
    assert all(torch.equal(a["state"][k]["exp_avg"], b["state"][k]["exp_avg"]) for k in a["state"])


class RunsCode:
    """A pickled object that would create a file when unpickled, if it were allowed to."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_load_refuses_a_tampered_pickle(tmp_path):
    marker = tmp_path / "pwned"
    (tmp_path / "models").mkdir()
    torch.save({"model": RunsCode(marker)}, tmp_path / "models" / "evil.pth")
    torch.load(tmp_path / "models" / "evil.pth", weights_only=False)  # the payload works when allowed...
    assert marker.exists()
    marker.unlink()
    with pytest.raises(UnsafeFileError, match="Refused to load"):
        make_learner(path=tmp_path).load("evil")
    assert not marker.exists()


def test_load_of_a_missing_file_names_it(tmp_path):
    with pytest.raises(FastbaseError, match="No file .*nothing.pth"):
        make_learner(path=tmp_path).load("nothing")


def test_summary_shows_layers_shapes_and_layer_groups(capsys):
    learn = make_learner(groups=True)
    learn.freeze()
    text = learn.summary()
    assert "1 (BatchNorm1d)" in text and "[16]" in text and "[2]" in text
    assert "Layer group 0: 176 params, 32 trainable, 144 frozen" in text
    assert "BatchNorm: train_bn=True, freeze_bn_stats=False (running statistics learnt" in text
    assert capsys.readouterr().out == ""  # returned, not printed: a notebook shows the value once
    print(learn.summary())  # as lesson notebooks call it: printed once
    assert capsys.readouterr().out.count("Layer group 0:") == 1 and repr(text) == text


def test_progress_prints_one_plain_line_per_epoch_outside_a_terminal(capsys):
    learn = make_learner(metrics=[accuracy], silent=False)
    learn.fit(2)
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith("epoch 1/2  train_loss ") and "accuracy" in lines[1]


def test_fastbase_no_bar_silences_progress(capsys, monkeypatch):
    monkeypatch.setenv("FASTBASE_NO_BAR", "1")
    make_learner(silent=None).fit(1)
    assert capsys.readouterr().out == ""


def test_console_progress_writes_the_table(capsys):
    make_learner(metrics=[accuracy]).fit(2, callbacks=[ProgressCallback(mode="console")])
    out = capsys.readouterr().out
    assert "train_loss" in out and "accuracy" in out


def test_tta_without_augmentation_equals_plain_predictions():
    learn = make_learner()
    learn.fit(1)
    preds, targets = learn.TTA()
    assert torch.allclose(preds, learn.get_preds()[0], atol=1e-6) and targets.shape == (40,)


def test_two_seeded_runs_give_identical_losses():
    runs = []
    for _ in range(2):
        set_seed(42)
        learn = make_learner(seed=42)
        learn.fit_one_cycle(2, 1e-2)
        runs.append(learn.recorder.losses)
    assert runs[0] == runs[1]


def test_a_nested_validate_inside_a_callback_leaves_the_fit_alone():
    class ValidateTwice(Callback):
        def after_validate(self):
            self.extra = self.learn.validate(dl=self.learn.data.dl(DatasetType.Fix))

    learn, cb = make_learner(metrics=[accuracy]), ValidateTwice()
    learn.fit(1, callbacks=[cb])
    assert learn.recorder.values[0][1:] == pytest.approx(learn.validate())
    assert cb.extra != learn.recorder.values[0][1:]
