"""Validation, `get_preds` and `predict` run under `torch.inference_mode()`, and nothing made there
leaks into training: what they return trains like any tensor, lazy modules first run in validation
still train, and normalisation statistics first built in validation serve training."""
import torch
import torch.nn.functional as F
from tiny_models import make_data, make_learner
from torch import nn

from fastbase.callback import Callback
from fastbase.data import Normalizer
from fastbase.learner import Learner


class GradModes(Callback):
    """Per batch: (training, inference mode on, grad enabled)."""

    def __init__(self):
        self.seen = []

    def after_pred(self):
        self.seen.append((self.learn.training, torch.is_inference_mode_enabled(), torch.is_grad_enabled()))


def test_validation_runs_in_inference_mode_and_training_does_not():
    modes = GradModes()
    learn = make_learner(callbacks=[modes])
    learn.fit(1, 1e-3)
    learn.get_preds()
    assert {m for m in modes.seen if m[0]} == {(True, False, True)}
    assert {m for m in modes.seen if not m[0]} == {(False, True, False)}


def test_what_get_preds_and_predict_return_can_be_used_in_training():
    learn = make_learner()
    preds, targets, losses = learn.get_preds(with_loss=True)
    probs = learn.predict(learn.data.valid_ds[0][0])[2]
    assert not any(t.is_inference() for t in (preds, targets, losses, probs))
    x = learn.data.valid_ds.tensors[0]
    loss = F.cross_entropy(learn.model(x), preds.argmax(1)) + F.mse_loss(learn.model(x[:1])[0].softmax(0), probs)
    loss.backward()  # would raise "Inference tensors cannot be saved for backward" if they leaked
    assert all(p.grad is not None for p in learn.model.parameters())


def test_a_lazy_model_validated_before_training_still_trains():
    torch.manual_seed(0)
    model = nn.Sequential(nn.LazyLinear(16), nn.ReLU(), nn.Linear(16, 2))
    learn = Learner(make_data(), model, silent=True)
    learn.validate()  # the lazy layer's weights are created here: they must be ordinary parameters
    assert not model[0].weight.is_inference()
    before = model[0].weight.detach().clone()
    learn.fit(1, 1e-2)
    assert not torch.equal(model[0].weight, before)


def test_normalisation_statistics_first_built_in_validation_serve_training():
    norm = Normalizer(torch.zeros(8), torch.ones(8))
    with torch.inference_mode():  # the first batch it sees is a validation batch
        norm.norm(torch.randn(2, 8))
    x = torch.randn(2, 8, requires_grad=True)
    norm.norm(x).sum().backward()  # the cached statistics are ordinary tensors
    assert x.grad is not None
