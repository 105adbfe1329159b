"""The fast paths of text training: flat cross-entropy for a language model's (bs, seq_len, vocab)
output, `SortishSampler` batches that the loader's cuts keep whole."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fastbase.losses import CrossEntropyFlat
from fastbase.text.loaders import SortishSampler


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_cross_entropy_flat_last_axis_matches_moved_classes(reduction):
    torch.manual_seed(0)
    out, y = torch.randn(3, 5, 7), torch.randint(0, 7, (3, 5))
    y[0, :2] = -100
    weight = torch.rand(7)
    got = CrossEntropyFlat(axis=-1, weight=weight, reduction=reduction)(out, y)
    want = F.cross_entropy(out.movedim(-1, 1), y, weight=weight, reduction=reduction)
    assert got.shape == want.shape
    assert torch.allclose(got, want, atol=1e-6)


@pytest.mark.parametrize("n", [200, 64, 5])
def test_sortish_batches_survive_the_loaders_cuts(n):
    bs = 32
    lengths = np.random.default_rng(n).permutation(np.arange(10, 10 + 7 * n, 7))  # distinct lengths
    order = list(SortishSampler(lengths, bs, torch.Generator().manual_seed(0)))
    assert sorted(order) == list(range(n))
    cuts = [lengths[order[i:i + bs]] for i in range(0, n, bs)]
    assert cuts[0].max() == lengths.max()  # the longest batch first
    rank = {v: r for r, v in enumerate(sorted(lengths, reverse=True))}
    for cut in cuts:  # one chunk of bs * 50 items holds them all: each cut is a run of the sorted lengths
        ranks = sorted(rank[v] for v in cut)
        assert ranks == list(range(ranks[0], ranks[0] + len(cut))), ranks
