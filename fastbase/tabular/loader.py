"""Layer 6: the tabular data set and its loader. A table is converted once, when the DataBunch is
built, into whole tensors (category codes, continuous values, targets); a batch is then one index
operation per tensor. No row goes through Python on the batch path: this is where fastai's tabular
loader spends its time (it converts rows batch by batch).
"""
from __future__ import annotations

import torch
from torch.utils.data import DataLoader, Dataset, RandomSampler

from ..data import EmptyLabelList
from ..data.label_lists import LabelledMixin

__all__ = ["TabularDataLoader", "TabularDataset"]


class TabularDataset(LabelledMixin, Dataset):
    """Rows of a processed table as tensors: `cats` int64 `(n, n_cat)`, `conts` float32 `(n, n_cont)`,
    `targets` (the label list's: int64 `(n,)` classes or float `(n, k)` values). `ds[i]` is
    `((cats, conts), label item)`; `batch(idx)` is `((cats, conts), targets)` for an index tensor.
    `y` is the processed label list (classes, items), `frame` the original rows (for showing them)."""

    def __init__(self, cats: torch.Tensor, conts: torch.Tensor, y, frame=None, processor=None):
        self.cats = cats
        self.conts = conts
        self.y = y
        self.frame = frame
        self.processor = processor
        self.targets = y.targets

    @property
    def labelled(self) -> bool:
        return not isinstance(self.y, EmptyLabelList)

    def __len__(self):
        return len(self.targets)

    @property
    def cat_names(self) -> list:
        """The categorical columns after processing (FillMissing's `_na` columns included), as fastai v1's
        `data.train_ds.cat_names`."""
        return [] if self.processor is None else list(self.processor.cat_names)

    @property
    def cont_names(self) -> list:
        """The continuous columns after processing (`len(data.train_ds.cont_names)` in lesson 6)."""
        return [] if self.processor is None else list(self.processor.cont_names)

    def batch(self, idx: torch.Tensor):
        """The rows at `idx` (an int64 tensor, or a slice) as one batch."""
        return (self.cats[idx], self.conts[idx]), self.targets[idx]

    def __getitems__(self, indices):
        """A whole batch for torch's DataLoader (used when this set is wrapped, e.g. in a Subset)."""
        return self.batch(torch.as_tensor(indices, dtype=torch.long))

    def __getitem__(self, i):
        return (self.cats[i], self.conts[i]), self.y[int(i)]

    def new(self, cats=None, conts=None) -> TabularDataset:
        """The same rows and labels with other inputs (e.g. a permuted column)."""
        return TabularDataset(self.cats if cats is None else cats, self.conts if conts is None else conts,
                              self.y, self.frame, self.processor)

    def __repr__(self):
        return (f"TabularDataset({len(self)} rows, {self.cats.shape[1]} categorical, {self.conts.shape[1]} "
                f"continuous columns)")


def already_batched(batch):
    """The `collate_fn` of a tabular loader: `TabularDataset.__getitems__` returns a collated batch."""
    return batch


class TabularDataLoader(DataLoader):
    """A DataLoader over a TabularDataset that builds each batch with one index operation per tensor:
    the order is one `randperm` per epoch (drawn from `generator` when given, as torch's own
    shuffling does), and each batch a slice of it. Worker processes are never used: slicing tensors
    in memory costs less than handing a batch over from another process. Over any other data set
    (a Subset of one, for instance) it loads as torch's DataLoader does."""

    def __init__(self, dataset, batch_size=64, shuffle=False, num_workers=0, collate_fn=None, drop_last=False,
                 generator=None, **kwargs):
        kwargs.update(persistent_workers=False, worker_init_fn=None)
        super().__init__(dataset, batch_size=batch_size, shuffle=shuffle, num_workers=0,
                         collate_fn=collate_fn or already_batched, drop_last=drop_last, generator=generator, **kwargs)

    def __iter__(self):
        if not isinstance(self.dataset, TabularDataset):
            yield from super().__iter__()
            return
        n = len(self.dataset)
        bs = self.batch_size
        ds = self.dataset
        order = torch.randperm(n, generator=self.generator) if isinstance(self.sampler, RandomSampler) else None
        stop = n - n % bs if self.drop_last else n
        for start in range(0, stop, bs):
            yield ds.batch(slice(start, start + bs) if order is None else order[start:start + bs])
