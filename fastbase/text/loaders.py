"""Layer 6: batches of text. A language model reads its corpus as `bs` contiguous streams cut in
windows of about `bptt` tokens (`LMDataset`, `LMLoader`): the documents are shuffled each epoch and,
for windows longer than `EXACT_BPTT` tokens, the training window length varies (AWD-LSTM's variable
BPTT) so the model does not see the same cuts every epoch. A
classifier reads whole documents padded to the longest of their batch (`pad_collate`, padding
first so the last position is a real token); `SortishSampler` puts documents of similar lengths
together so little of a batch is padding.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, RandomSampler, Sampler

from .vocab import TokenIds

__all__ = ["EXACT_BPTT", "LMDataset", "LMLoader", "SortSampler", "SortishSampler", "TextClasDataset", "TextClasLoader",
           "pad_collate"]


# Windows of at most this many tokens are cut exactly: a length noise of 5 tokens (with a floor of 5)
# would change what such a model reads (lesson 7's Model0 reads exactly 3 tokens to predict the 4th).
EXACT_BPTT = 20


class LMDataset(Dataset):
    """A language model's view of labelled documents `labelled` (whose `x` holds `TokenIds`):
    `ds[i]` is document i as items, `ds[slice]` the batch of windows `start:stop` of the current
    epoch's `bs` streams, as (x, y) int64 tensors of shape (bs, stop - start), y one token ahead."""

    def __init__(self, labelled, bs: int = 64, bptt: int = 70, backwards: bool = False):
        self.labelled, self.bs, self.bptt, self.backwards = labelled, bs, bptt, backwards
        self.docs: TokenIds = labelled.x.ids
        self.n_tokens = int(self.docs.offsets[-1])
        self.stream_len = max(0, (self.n_tokens - 1) // bs)  # tokens per stream
        self.x_rows = self.y_rows = None

    def __len__(self):
        return len(self.docs)

    @property
    def vocab(self):
        return self.labelled.x.vocab

    def set_order(self, order) -> None:
        """Lay the documents end to end in `order` and cut the result into the `bs` streams."""
        stream = self.docs.concat(order)
        if self.backwards:
            stream = stream[::-1].copy()
        n = self.bs * self.stream_len
        stream = torch.from_numpy(stream)
        self.x_rows, self.y_rows = stream[:n].view(self.bs, -1), stream[1:n + 1].view(self.bs, -1)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return self.x_rows[:, i], self.y_rows[:, i]
        return self.labelled[i]

    @property
    def classes(self):
        return None


class _LMBatches:
    """The windows of one epoch: plain `bptt` cuts, or randomised lengths that still cover each stream."""

    def _setup(self, ds: LMDataset, random_lengths: bool, generator):
        self.ds, self.random_lengths, self.gen = ds, random_lengths, generator

    def __len__(self):
        return max(0, math.ceil(self.ds.stream_len / self.ds.bptt)) if self.ds.stream_len else 0

    def _lengths(self) -> list[int]:
        total, bptt, n = self.ds.stream_len, self.ds.bptt, len(self)
        if not self.random_lengths or n < 2:
            return [min(bptt, total - i * bptt) for i in range(n)]
        base = torch.where(torch.rand(n, generator=self.gen) < 0.95, float(bptt), bptt / 2)
        raw = (base + 5 * torch.randn(n, generator=self.gen)).clamp(min=5)
        ends = torch.round(torch.cumsum(raw, 0) * total / raw.sum()).long().tolist()
        ends[-1] = total
        starts = [0, *ends[:-1]]
        return [max(0, e - s) for s, e in zip(starts, ends)]

    def _iter(self, order):
        self.ds.set_order(order)
        start = 0
        for length in self._lengths():
            if length:
                yield slice(start, start + length)
            start += length


class LMBatches(_LMBatches, Sampler):
    """Validation windows: the documents in order, `bptt` tokens each."""

    def __init__(self, ds: LMDataset, generator=None):
        self._setup(ds, False, generator)

    def __iter__(self):
        return self._iter(None)


class ShuffledLMBatches(_LMBatches, RandomSampler):
    """Training windows: the documents shuffled (with `generator`); windows of random lengths when
    `random_bptt` (by default when `bptt` is over `EXACT_BPTT`)."""

    def __init__(self, ds: LMDataset, generator=None, random_bptt: bool | None = None):
        RandomSampler.__init__(self, ds, generator=generator)
        self._setup(ds, ds.bptt > EXACT_BPTT if random_bptt is None else bool(random_bptt), generator)

    def __len__(self):
        return _LMBatches.__len__(self)

    def __iter__(self):
        return self._iter(torch.randperm(len(self.ds.docs), generator=self.gen).numpy())


def _as_batch(batch):
    return batch


class LMLoader(DataLoader):
    """A DataLoader over an `LMDataset`: each step one (x, y) batch of windows, read in this process
    (slicing tensors in memory costs less than a worker's hand-off). `shuffle`: the training order
    (and window lengths that vary, see `ShuffledLMBatches`)."""

    def __init__(self, dataset: LMDataset, batch_size=None, shuffle: bool = False, generator=None,
                 pin_memory: bool = False, random_bptt: bool | None = None, **kwargs):
        sampler = ShuffledLMBatches(dataset, generator, random_bptt) if shuffle else LMBatches(dataset, generator)
        super().__init__(dataset, batch_size=None, sampler=sampler, collate_fn=_as_batch, num_workers=0,
                         pin_memory=pin_memory, generator=generator)


class TextClasDataset(Dataset):
    """A classifier's view of labelled documents: `ds[i]` is `(Text, Category)` for people; the loader
    fetches `(ids, target)` pairs (`__getitems__`), without building items."""

    def __init__(self, labelled):
        self.labelled = labelled
        self.docs: TokenIds = labelled.x.ids
        self.targets = labelled.y.targets

    def __len__(self):
        return len(self.docs)

    def __getitem__(self, i):
        return self.labelled[i]

    @property
    def vocab(self):
        return self.labelled.x.vocab

    def __getitems__(self, idxs):
        return [(self.docs[i], self.targets[i]) for i in idxs]

    @property
    def lengths(self) -> np.ndarray:
        return self.docs.lengths

    @property
    def classes(self):
        return self.labelled.y.classes

    @property
    def c(self):
        return self.labelled.y.c

    @property
    def multi_label(self):
        return self.labelled.y.multi_label


class SortSampler(Sampler):
    """The items from the longest to the shortest (validation: little padding, the same order each time)."""

    def __init__(self, lengths):
        self.lengths = np.asarray(lengths)

    def __len__(self):
        return len(self.lengths)

    def __iter__(self):
        return iter(np.argsort(-self.lengths, kind="stable").tolist())


class SortishSampler(RandomSampler):
    """A shuffled order in which neighbours have similar lengths: random chunks of `bs * 50` items,
    each sorted by length and cut in batches; the batches are shuffled, the longest one first (an
    out-of-memory error shows at once) and a short one (fewer than `bs` items) last, so the loader's
    cuts every `bs` items fall where this sampler cut (one short batch in the middle would shift
    every later cut across two batches of unlike lengths, each padded to the longer)."""

    def __init__(self, lengths, bs: int, generator=None):
        self.lengths, self.bs = np.asarray(lengths), bs
        super().__init__(range(len(self.lengths)), generator=generator)

    def __len__(self):
        return len(self.lengths)

    def __iter__(self):
        n, bs = len(self.lengths), self.bs
        perm = torch.randperm(n, generator=self.generator).numpy()
        chunk = bs * 50
        parts = [p[np.argsort(-self.lengths[p], kind="stable")] for p in
                 (perm[i:i + chunk] for i in range(0, n, chunk))]
        order = np.concatenate(parts) if parts else perm
        batches = [order[i:i + bs] for i in range(0, n, bs)]
        full, short = [b for b in batches if len(b) == bs], [b for b in batches if len(b) < bs]
        batches, short = (full, short) if full else (short, [])
        longest = int(np.argmax([self.lengths[b[0]] for b in batches])) if batches else 0
        if batches:
            batches[0], batches[longest] = batches[longest], batches[0]
        rest = torch.randperm(max(0, len(batches) - 1), generator=self.generator).tolist()
        batches = [*batches[:1], *[batches[k + 1] for k in rest], *short]
        return iter(np.concatenate(batches).tolist() if batches else [])


class TextClasLoader(DataLoader):
    """A DataLoader over a `TextClasDataset`: `SortishSampler` when `shuffle`, else longest first."""

    def __init__(self, dataset: TextClasDataset, batch_size: int = 64, shuffle: bool = False, generator=None,
                 sampler=None, **kwargs):
        if sampler is None:
            sampler = SortishSampler(dataset.lengths, batch_size, generator) if shuffle else \
                SortSampler(dataset.lengths)
        kwargs.pop("drop_last", None)
        super().__init__(dataset, batch_size=batch_size, sampler=sampler, generator=generator, **kwargs)


def pad_collate(samples, pad_idx: int = 1, pad_first: bool = True, backwards: bool = False):
    """`(x, y)` of `(ids, target)` samples: x int64 (n, longest), shorter documents padded with
    `pad_idx` before their tokens (`pad_first`) or after; `backwards` reverses each document."""
    lengths = [len(s[0]) for s in samples]
    x = torch.full((len(samples), max(lengths, default=0)), pad_idx, dtype=torch.long)
    for row, ((ids, _), n) in enumerate(zip(samples, lengths)):
        ids = torch.as_tensor(np.ascontiguousarray(ids[::-1] if backwards else ids))
        if pad_first:
            x[row, x.shape[1] - n:] = ids
        else:
            x[row, :n] = ids
    y = torch.stack([torch.as_tensor(s[1]) for s in samples])
    return x, y
