"""Mixup (inputs, targets and loss mixed as defined, validation untouched) and label smoothing
(equal to its formula)."""
import math
from functools import partial

import pytest
import torch
import torch.nn.functional as F
from tiny_models import make_data, make_learner

from fastbase.callback import Callback, Order
from fastbase.callbacks.mixup import MixUp, MixUpLoss
from fastbase.core import FastbaseError
from fastbase.losses import LabelSmoothingCrossEntropy
from fastbase.metrics import loss_activation, per_item_loss


class Before(Callback):
    """The batch and torch's random state just before MixUp changes the batch."""
    order = Order.MIXUP - 5

    def before_fit(self):
        self.batches = []

    def before_batch(self):
        self.batches.append((self.learn.training, self.learn.xb[0].clone(), self.learn.yb[0].clone(),
                             torch.get_rng_state()))


class After(Callback):
    """The batch after MixUp, the predictions and the loss the Learner computed."""

    def before_fit(self):
        self.batches = []

    def after_loss(self):
        learn = self.learn
        self.batches.append((learn.xb, learn.yb[0].clone(), learn.pred.detach().clone(), learn.loss.clone()))


def run(alpha=0.4, **kwargs):
    learn = make_learner(make_data(n_train=64, n_valid=32, bs=32)).mixup(alpha, **kwargs)
    before, after = Before(), After()
    torch.manual_seed(3)
    learn.fit(1, 1e-2, callbacks=[before, after])
    return learn, before.batches, after.batches


def replay(rng_state, alpha, bs):
    """MixUp's draws, replayed from the random state it started from."""
    torch.set_rng_state(rng_state)
    lam = torch.distributions.Beta(alpha, alpha).sample((bs,))
    return torch.maximum(lam, 1 - lam), torch.randperm(bs)


def test_mixup_mixes_inputs_and_stacks_targets_as_defined():
    _, before, after = run(alpha=0.4)
    assert len(before) == len(after) == 3  # 2 training batches, 1 validation batch
    for (training, x, y, rng), (xb, yb, pred, loss) in zip(before[:2], after[:2]):
        assert training
        lam, perm = replay(rng, 0.4, len(y))
        assert (lam >= 0.5).all() and (lam <= 1).all() and not torch.allclose(lam, torch.ones_like(lam))
        expected_x = lam[:, None] * x + (1 - lam[:, None]) * x[perm]
        assert torch.allclose(xb[0], expected_x, atol=1e-6)
        assert torch.equal(yb, torch.stack([y.float(), y[perm].float(), lam], dim=1))
        by_hand = (lam * F.cross_entropy(pred, y, reduction="none")
                   + (1 - lam) * F.cross_entropy(pred, y[perm], reduction="none")).mean()
        assert float(loss) == pytest.approx(float(by_hand), rel=1e-5)


def test_mixup_leaves_validation_untouched():
    learn, before, after = run()
    training, x, y, _ = before[2]
    xb, yb, pred, loss = after[2]
    assert not training and torch.equal(xb[0], x) and torch.equal(yb, y)
    assert float(loss) == pytest.approx(float(F.cross_entropy(pred, y)), rel=1e-6)
    plain = make_learner(make_data(n_train=64, n_valid=32, bs=32))
    plain.model.load_state_dict(learn.model.state_dict())
    assert learn.validate() == pytest.approx(plain.validate())


def test_mixup_without_stacking_blends_one_hot_targets():
    _, before, after = run(alpha=1.0, stack_y=False)
    _, _, y, rng = before[0]
    _, yb, pred, loss = after[0]
    lam, perm = replay(rng, 1.0, len(y))
    one_hot = F.one_hot(y, 2).float()
    assert torch.allclose(yb, lam[:, None] * one_hot + (1 - lam[:, None]) * one_hot[perm])
    assert torch.allclose(yb.sum(1), torch.ones(len(y)))
    # cross-entropy is linear in the target, so this equals the mix of the two losses
    by_hand = (lam * F.cross_entropy(pred, y, reduction="none")
               + (1 - lam) * F.cross_entropy(pred, y[perm], reduction="none")).mean()
    assert float(loss) == pytest.approx(float(by_hand), rel=1e-5)


def test_mixup_stack_x_hands_both_inputs_and_the_weights_to_the_model():
    learn = make_learner(make_data(n_train=32, n_valid=32, bs=32), callbacks=[MixUp(stack_x=True)])
    seen = []

    class Model(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x, x_other=None, lam=None):
            seen.append(x_other is not None and lam is not None)
            return self.inner(x if lam is None else lam[:, None] * x + (1 - lam[:, None]) * x_other)

    learn.model = Model(learn.model)
    learn.layer_groups = [learn.model]
    learn.fit(1, 1e-3)
    assert seen == [True, False]  # the training batch got (x, x_shuffled, lam), validation plain x


def test_learn_mixup_replaces_and_mixup_loss_needs_per_item_losses():
    learn = make_learner(make_data()).mixup(0.2).mixup(0.4)
    assert [cb.alpha for cb in learn.callbacks if isinstance(cb, MixUp)] == [0.4]
    loss = MixUpLoss(torch.nn.CrossEntropyLoss())
    pred, y = torch.randn(4, 3), torch.tensor([0, 1, 2, 1])
    assert float(loss(pred, y)) == pytest.approx(float(F.cross_entropy(pred, y)))  # plain targets pass through
    with pytest.raises(FastbaseError, match="reduction='none'"):
        MixUpLoss(lambda p, t: (p - t).abs().mean())
    with pytest.raises(FastbaseError, match="alpha > 0"):
        MixUp(alpha=0)


def label_smoothing_by_hand(logits, target, eps):
    """Per item: -sum_j q_j log p_j with q = (1 - eps) * one_hot + eps / c, written out with loops."""
    out = []
    for row, t in zip(logits.tolist(), target.tolist()):
        c = len(row)
        log_z = math.log(sum(math.exp(v) for v in row))
        log_p = [v - log_z for v in row]
        q = [(1 - eps) * (j == t) + eps / c for j in range(c)]
        out.append(-sum(qj * lpj for qj, lpj in zip(q, log_p)))
    return torch.tensor(out)


def test_label_smoothing_equals_the_formula():
    g = torch.Generator().manual_seed(0)
    logits, target = torch.randn(6, 5, generator=g) * 3, torch.tensor([0, 4, 2, 2, 1, 3])
    by_hand = label_smoothing_by_hand(logits, target, 0.1)
    assert torch.allclose(LabelSmoothingCrossEntropy(0.1, reduction="none")(logits, target), by_hand, atol=1e-5)
    assert float(LabelSmoothingCrossEntropy()(logits, target)) == pytest.approx(float(by_hand.mean()), rel=1e-5)
    assert float(LabelSmoothingCrossEntropy(reduction="sum")(logits, target)) == pytest.approx(float(by_hand.sum()),
                                                                                                rel=1e-5)
    torch_ls = torch.nn.CrossEntropyLoss(label_smoothing=0.3)(logits, target)
    assert float(LabelSmoothingCrossEntropy(0.3)(logits, target)) == pytest.approx(float(torch_ls), rel=1e-5)
    assert float(LabelSmoothingCrossEntropy(0.0)(logits, target)) == pytest.approx(
        float(F.cross_entropy(logits, target)), rel=1e-6)
    with pytest.raises(FastbaseError, match="eps"):
        LabelSmoothingCrossEntropy(eps=1.5)


def test_label_smoothing_works_as_a_learner_loss_with_mixup():
    loss = LabelSmoothingCrossEntropy()
    logits = torch.randn(3, 4)
    assert torch.allclose(loss_activation(loss)(logits), logits.softmax(-1))
    assert per_item_loss(loss)(logits, torch.tensor([0, 1, 2])).shape == (3,)
    learn = make_learner(make_data(n_train=64, n_valid=32, bs=32), loss_func=loss).mixup()
    learn.fit(1, 1e-2)
    assert all(math.isfinite(v) for v in learn.recorder.losses)
    preds, _, losses = learn.get_preds(with_loss=True)
    assert torch.allclose(preds.sum(1), torch.ones(len(preds))) and losses.shape == (32,)
    mixed = MixUpLoss(partial(F.cross_entropy))  # partials of loss functions work too
    target = torch.tensor([[0.0, 1.0, 0.7], [2.0, 2.0, 0.9], [1.0, 0.0, 0.5]])
    expected = (0.7 * F.cross_entropy(logits[:1], torch.tensor([0])) + 0.3 * F.cross_entropy(logits[:1], torch.tensor([1]))
                + F.cross_entropy(logits[1:2], torch.tensor([2]))
                + 0.5 * F.cross_entropy(logits[2:], torch.tensor([1])) + 0.5 * F.cross_entropy(logits[2:], torch.tensor([0]))) / 3
    assert float(mixed(logits, target)) == pytest.approx(float(expected), rel=1e-5)
