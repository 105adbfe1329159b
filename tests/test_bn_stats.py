"""RecalibrateBN: BatchNorm statistics recomputed on the un-augmented training images."""
import torch
from tiny_vision import noise_folder, tiny_learner
from torch import nn

from fastbase.callbacks.bn_stats import RecalibrateBN, recompute_bn_stats
from fastbase.data import DatasetType
from fastbase.vision.transforms import get_transforms


def test_recompute_gives_the_exact_statistics_of_the_batches_for_training_layers_only():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 4), nn.BatchNorm1d(4))
    model.train()
    model[3].eval()  # frozen statistics: must stay as they are
    frozen = (model[3].running_mean.clone(), model[3].running_var.clone())
    batches = [torch.randn(8, 3) * 2 + 1 for _ in range(5)]
    with torch.no_grad():
        feats = [model[0](b) for b in batches]
    assert recompute_bn_stats(model, [(b, None) for b in batches]) == 5
    bn = model[1]
    assert torch.allclose(bn.running_mean, torch.stack([f.mean(0) for f in feats]).mean(0), atol=1e-5)
    assert torch.allclose(bn.running_var, torch.stack([f.var(0) for f in feats]).mean(0), atol=1e-5)
    assert bn.momentum == 0.1 and int(bn.num_batches_tracked) == 5  # momentum restored
    assert torch.equal(model[3].running_mean, frozen[0]) and torch.equal(model[3].running_var, frozen[1])
    assert recompute_bn_stats(model, batches, max_batches=2) == 2  # plain input batches work too
    before = bn.running_mean.clone()
    assert recompute_bn_stats(model, []) == 0 and torch.equal(bn.running_mean, before)  # nothing seen: kept


def test_the_callback_recomputes_from_the_fix_loader_before_each_validation(tmp_path):
    learn = tiny_learner(noise_folder(tmp_path), ds_tfms=get_transforms())
    learn.unfreeze()
    seen = []

    class Spy(RecalibrateBN):
        def after_train(self):
            super().after_train()
            bn = self.learn.model[0][1]
            seen.append((bn.running_mean.clone(), self.learn.model.training))

    spy = Spy()
    learn.fit(1, 1e-3, callbacks=[spy])
    assert spy.n_batches == len(learn.data.fix_dl) and seen[0][1]  # ran in training mode, on every batch
    # the statistics validation used are those of the un-augmented training images, whatever the weights
    learn.model.train()
    recompute_bn_stats(learn.model, learn.data.dl(DatasetType.Fix))
    assert torch.allclose(learn.model[0][1].running_mean, seen[0][0], atol=1e-6)
    assert repr(RecalibrateBN(max_batches=3)) == "RecalibrateBN(ds_type=Fix, max_batches=3)"
