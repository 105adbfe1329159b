"""fastai v1's metrics checked against scikit-learn on random data, each accumulated over several
batches of different sizes as a Learner's validation does, and the whole-set ones used by a Learner."""
import math

import numpy as np
import pytest
import torch
from sklearn import metrics as skm
from tiny_models import make_learner

from fastbase import metrics
from fastbase.core import FastbaseError
from fastbase.metrics import as_metric

BATCHES = (7, 16, 3, 14)  # uneven batch sizes: a mean of batch values would differ from the whole-set value


def accumulate(metric, preds, targs):
    """Feed `metric` the data in uneven batches and read its value, as ValidationStats does."""
    metric = as_metric(metric)
    metric.reset()
    start = 0
    for size in BATCHES:
        metric.accumulate(preds[start:start + size], targs[start:start + size])
        start += size
    assert start == len(preds)
    return metric.value


@pytest.fixture(scope="module")
def classes():
    gen = torch.Generator().manual_seed(0)
    n = sum(BATCHES)
    logits3 = torch.randn(n, 3, generator=gen)
    targs3 = torch.randint(0, 3, (n,), generator=gen)
    logits2 = torch.randn(n, 2, generator=gen)
    targs2 = (logits2[:, 1] - logits2[:, 0] + torch.randn(n, generator=gen) > 0).long()
    return logits2, targs2, logits3, targs3


@pytest.mark.parametrize("average", ["binary", "micro", "macro", "weighted"])
def test_precision_recall_fbeta_match_scikit_learn(classes, average):
    logits2, targs2, logits3, targs3 = classes
    logits, targs = (logits2, targs2) if average == "binary" else (logits3, targs3)
    y, yhat = targs.numpy(), logits.argmax(1).numpy()
    assert accumulate(metrics.Precision(average=average), logits, targs) == pytest.approx(
        skm.precision_score(y, yhat, average=average, zero_division=0), abs=1e-6)
    assert accumulate(metrics.Recall(average=average), logits, targs) == pytest.approx(
        skm.recall_score(y, yhat, average=average, zero_division=0), abs=1e-6)
    assert accumulate(metrics.FBeta(average=average, beta=2), logits, targs) == pytest.approx(
        skm.fbeta_score(y, yhat, beta=2, average=average, zero_division=0), abs=1e-6)


def test_per_class_scores_and_pos_label(classes):
    _, _, logits3, targs3 = classes
    per_class = accumulate(metrics.Recall(average=None), logits3, targs3)
    expected = skm.recall_score(targs3.numpy(), logits3.argmax(1).numpy(), average=None)
    np.testing.assert_allclose(per_class.numpy(), expected, atol=1e-6)
    logits2, targs2, _, _ = classes
    assert accumulate(metrics.Precision(pos_label=0), logits2, targs2) == pytest.approx(
        skm.precision_score(targs2.numpy(), logits2.argmax(1).numpy(), pos_label=0), abs=1e-6)


def test_binary_average_on_three_classes_warns_and_uses_macro(classes):
    _, _, logits3, targs3 = classes
    with pytest.warns(UserWarning, match="using 'macro'"):
        value = accumulate(metrics.Precision(), logits3, targs3)
    assert value == pytest.approx(skm.precision_score(targs3.numpy(), logits3.argmax(1).numpy(), average="macro"))


@pytest.mark.parametrize("weights", [None, "linear", "quadratic"])
def test_kappa_matches_scikit_learn(classes, weights):
    _, _, logits3, targs3 = classes
    expected = skm.cohen_kappa_score(targs3.numpy(), logits3.argmax(1).numpy(), weights=weights)
    assert accumulate(metrics.KappaScore(weights=weights), logits3, targs3) == pytest.approx(expected, abs=1e-5)


def test_matthews_and_confusion_matrix_match_scikit_learn(classes):
    _, _, logits3, targs3 = classes
    y, yhat = targs3.numpy(), logits3.argmax(1).numpy()
    assert accumulate(metrics.MatthewsCorreff(), logits3, targs3) == pytest.approx(skm.matthews_corrcoef(y, yhat),
                                                                                     abs=1e-5)
    np.testing.assert_array_equal(accumulate(metrics.ConfusionMatrix(), logits3, targs3).numpy(),
                                  skm.confusion_matrix(y, yhat))


def test_auroc_binary_and_multiclass_match_scikit_learn(classes):
    logits2, targs2, logits3, targs3 = classes
    probs2 = logits2.softmax(1)[:, 1].numpy()
    assert accumulate(metrics.AUROC(), logits2, targs2) == pytest.approx(skm.roc_auc_score(targs2.numpy(), probs2),
                                                                          abs=1e-6)
    assert metrics.auc_roc_score(torch.tensor(probs2), targs2) == pytest.approx(
        skm.roc_auc_score(targs2.numpy(), probs2), abs=1e-6)
    expected = skm.roc_auc_score(targs3.numpy(), logits3.softmax(1).numpy(), multi_class="ovr")
    assert accumulate(metrics.AUROC(), logits3, targs3) == pytest.approx(expected, abs=1e-5)


@pytest.mark.parametrize("average", ["micro", "macro", "weighted"])
def test_multi_label_fbeta_matches_scikit_learn(average):
    gen = torch.Generator().manual_seed(1)
    logits = torch.randn(sum(BATCHES), 4, generator=gen)
    targs = (torch.rand(sum(BATCHES), 4, generator=gen) > 0.6).float()
    expected = skm.fbeta_score(targs.numpy(), (logits.sigmoid() > 0.3).numpy(), beta=2, average=average,
                               zero_division=0)
    assert accumulate(metrics.MultiLabelFbeta(average=average), logits, targs) == pytest.approx(expected, abs=1e-6)


def test_regression_metrics_match_scikit_learn():
    gen = torch.Generator().manual_seed(2)
    targs = torch.rand(sum(BATCHES), 1, generator=gen) * 3
    preds = targs + 0.4 * torch.randn(sum(BATCHES), 1, generator=gen)
    y, p = targs.numpy().ravel(), preds.numpy().ravel()
    expected = {
        metrics.mse: skm.mean_squared_error(y, p), metrics.mae: skm.mean_absolute_error(y, p),
        metrics.rmse: math.sqrt(skm.mean_squared_error(y, p)), metrics.r2_score: skm.r2_score(y, p),
        metrics.explained_variance: skm.explained_variance_score(y, p),
        metrics.msle: skm.mean_squared_log_error(y, np.clip(p, 0, None)),
        metrics.exp_rmspe: math.sqrt(np.mean(((np.exp(y) - np.exp(p)) / np.exp(y)) ** 2)),
    }
    for func, value in expected.items():
        given = preds.clamp_min(0) if func is metrics.msle else preds
        assert accumulate(func, given, targs) == pytest.approx(value, rel=1e-5), func.__name__
        assert func(given, targs) == pytest.approx(value, rel=1e-5), func.__name__  # the batch function itself
    assert metrics.R2Score()  # the classes exist under fastai v1's names
    assert [as_metric(f).name for f in (metrics.rmse, metrics.r2_score)] == ["root_mean_squared_error", "r2_score"]


def test_top_k_and_foreground_accuracy():
    preds = torch.tensor([[0.1, 0.5, 0.4], [0.6, 0.3, 0.1], [0.2, 0.3, 0.5]])
    targs = torch.tensor([2, 2, 0])
    assert metrics.top_k_accuracy(preds, targs, k=2) == pytest.approx(1 / 3)
    seg = torch.zeros(1, 3, 2, 2)
    seg[0, 1] = 1  # every pixel predicted class 1
    mask = torch.tensor([[[[0, 1], [2, 1]]]])  # background 0 is left out: 2 of 3 right
    assert metrics.foreground_acc(seg, mask, void_code=0) == pytest.approx(2 / 3)


def test_a_learner_scores_whole_set_metrics_on_the_validation_set():
    learn = make_learner(metrics=[metrics.FBeta(beta=1), metrics.AUROC(), metrics.accuracy])
    learn.fit(1, 1e-2)
    preds, targs = learn.get_preds()
    loss, f1, auroc, acc = learn.validate()
    assert f1 == pytest.approx(skm.f1_score(targs.numpy(), preds.argmax(1).numpy()), abs=1e-5)
    assert auroc == pytest.approx(skm.roc_auc_score(targs.numpy(), preds[:, 1].numpy()), abs=1e-5)
    assert learn.metric_names == ["f_beta", "auroc", "accuracy"] and math.isfinite(loss)
    assert acc == pytest.approx(float((preds.argmax(1) == targs).float().mean()), abs=1e-6)


def test_a_missing_target_is_a_clear_error():
    with pytest.raises(metrics.MetricError, match="differ in size"):
        metrics.rmse(torch.zeros(3), torch.zeros(4))
    with pytest.raises(metrics.MetricError, match="one class index per item"):
        accumulate(metrics.KappaScore(), torch.zeros(sum(BATCHES)), torch.zeros(sum(BATCHES)))


def test_a_metric_with_several_values_is_refused_with_its_name():
    learn = make_learner(metrics=[metrics.Recall(average=None)])
    with pytest.raises(FastbaseError, match=r"recall gives \(2,\) values"):
        learn.fit(1, 1e-2)
