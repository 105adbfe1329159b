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


def _classifier(bptt=8, max_len=64):
    from fastbase.text import awd_lstm_clas_config, get_text_classifier
    torch.manual_seed(0)
    config = {**awd_lstm_clas_config, "emb_sz": 8, "n_hid": 16, "n_layers": 2}
    return get_text_classifier(vocab_sz=30, n_class=2, bptt=bptt, config=config, max_len=max_len).eval()


def _padded(docs, pad=1):
    """Rows padded first to the longest, as pad_collate does."""
    longest = max(len(d) for d in docs)
    return torch.tensor([[pad] * (longest - len(d)) + d for d in docs])


def test_multibatch_encoder_starts_a_document_where_its_text_begins():
    """A 10-token review in a batch with a 26-token one has 16 tokens (two chunks of 8) of padding
    first: those chunks are not run, so it scores as it does alone; the rows come back in their order."""
    model = _classifier()
    long, short = list(range(2, 28)), list(range(5, 15))
    with torch.no_grad():
        alone = model(_padded([short]))
        both = model(_padded([long, short]))
        swapped = model(_padded([short, long]))
        _, out, mask = model[0](_padded([short, long]))
    assert torch.allclose(both[1], alone[0], atol=1e-5)
    assert torch.allclose(swapped[0], both[1], atol=1e-6) and torch.allclose(swapped[1], both[0], atol=1e-6)
    assert mask[0].tolist() == [True] * 16 + [False] * 10 and not mask[1].any()
    assert out[-1][0, :16].abs().sum() == 0 and out[-1][0, 16:].abs().sum() > 0  # the skipped chunks read zeros


def test_multibatch_encoder_keeps_gradients_to_the_kept_tokens_only():
    model = _classifier(bptt=8, max_len=16)  # eval mode: no dropout, so every kept token has a gradient
    x = _padded([list(range(2, 28)), [28, 29] * 5])
    model(x).sum().backward()
    grad = model[0].module.encoder.weight.grad.abs().sum(1)
    assert grad[2:18].sum() == 0  # the long review's first two chunks come before its last max_len tokens
    assert (grad[18:30] > 0).all()
