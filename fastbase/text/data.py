"""Layer 6: text in the data block API: the `Text` item, `TextList` (documents from a folder of
`.txt` files, a table's text columns, token lists or ids) and `label_for_lm`. The chain ends in
`TextList.build_databunch`, which reads, tokenizes and numericalizes every list once (the vocabulary
from the training documents, unless one is given) and builds a `TextLMDataBunch` for documents
labelled for a language model, a `TextClasDataBunch` otherwise (`fastbase.text.bunch`).
"""
from __future__ import annotations

import numpy as np
import torch

from ..core import Path, is_listy
from ..data import EmptyLabelList, ItemBase, ItemList, LabelList, format_list
from .rules import BOS, EOS, FLD
from .tokenizer import TextError, Tokenizer
from .vocab import TokenIds, Vocab

__all__ = ["LMLabelList", "Text", "TextList", "open_text", "process_lists"]


class Text(ItemBase):
    """One document: `text` (its tokens joined by spaces, as the model reads them) and `data` (ids)."""

    def __init__(self, ids, text: str):
        super().__init__(ids, text)

    @property
    def text(self) -> str:
        return self.obj


class LMLabelList(EmptyLabelList):
    """The labels of documents for a language model: none (the target is the next token)."""


def open_text(fn) -> str:
    """The text of the file `fn`; a `TextError` naming the file and the first byte that is not UTF-8."""
    data = Path(fn).read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise TextError(f"{fn} is not UTF-8 text: byte {e.start} (0x{data[e.start]:02x}) cannot be decoded "
                        f"({e.reason}). Convert the file to UTF-8 (e.g. `iconv -f latin1 -t utf-8`).") from e


class TextList(ItemList):
    """Documents as the data block API's items: strings, `.txt` files (`from_folder`), token lists
    or id lists. `vocab` (a `Vocab`, e.g. `data_lm.vocab`) numericalizes them with a language
    model's vocabulary; `tokenizer` (default `Tokenizer()`) splits them. Once the chain builds its
    DataBunch, `ids` holds the documents' ids and `il[i]` is a `Text`."""
    _extensions = (".txt",)

    def __init__(self, items, path=".", vocab: Vocab | None = None, tokenizer: Tokenizer | None = None, **kwargs):
        super().__init__(items, path=path, vocab=vocab, tokenizer=tokenizer, **kwargs)
        self.vocab, self.tokenizer = vocab, tokenizer
        self.ids: TokenIds | None = None

    def get(self, i: int):
        if self.ids is not None:
            ids = self.ids[i]
            return Text(torch.from_numpy(ids), self.vocab.textify(ids))
        item = self.items[i]
        return open_text(item) if isinstance(item, Path) else item

    def __getitem__(self, idx):
        new = super().__getitem__(idx)
        if isinstance(new, TextList) and self.ids is not None:
            pos = np.arange(len(self))[idx] if isinstance(idx, slice) else np.arange(len(self))[np.asarray(idx)]
            new.ids, new.vocab = self.ids[pos.reshape(-1)], self.vocab
        return new

    @classmethod
    def from_df(cls, df, path=".", cols=0, mark_fields: bool | None = None, **kwargs) -> TextList:
        """Documents from the text column(s) `cols` of `df`; several columns are joined, each after
        `xxfld <n>` when `mark_fields` (default: when there are several)."""
        names = _text_columns(df, cols)
        if len(names) == 1:
            column = df[names[0]]
            items = ["" if v is None or (isinstance(v, float) and np.isnan(v)) else str(v) for v in column]
        else:
            mark = len(cols) > 1 if mark_fields is None else mark_fields
            items = [" ".join((f"{FLD} {k + 1} " if mark else "") + str(v) for k, v in enumerate(row))
                     for row in df[names].itertuples(index=False)]
        return cls(items, path=path, inner_df=df, **kwargs)

    def label_for_lm(self, process: bool = True, **kwargs) -> LabelList:
        """Label the documents for a language model: the targets are the documents shifted by one token."""
        y = LMLabelList([0] * len(self))
        return LabelList(self, y.process() if process else y)

    @classmethod
    def build_databunch(cls, lls, path, bs=64, val_bs=None, num_workers=None, dl_tfms=None, device=None,
                        collate_fn=None, no_check=False, seed=None, tokenizer=None, max_vocab: int = 60000,
                        min_freq: int = 2, include_bos: bool = True, include_eos: bool = False, **kwargs):
        """Tokenize and numericalize the lists (`process_lists`), then the DataBunch they call for:
        a `TextLMDataBunch` (`label_for_lm`) or a `TextClasDataBunch`. Other arguments (`bptt`,
        `pad_first`, `backwards`...) go to that DataBunch's `create`."""
        from .bunch import TextClasDataBunch, TextLMDataBunch  # the DataBunches build on this module
        process_lists(lls, tokenizer=tokenizer, max_vocab=max_vocab, min_freq=min_freq, include_bos=include_bos,
                      include_eos=include_eos)
        bunch_cls = TextLMDataBunch if isinstance(lls.train.y, LMLabelList) else TextClasDataBunch
        return bunch_cls.from_label_lists(lls, path=path, bs=bs, val_bs=val_bs, device=device, dl_tfms=dl_tfms,
                                          seed=seed, **kwargs)


def _text_columns(df, cols) -> list:
    """The names of the columns `cols` (names or positions) of `df`; a TextError naming a missing one."""
    try:
        import pandas as pd
    except ImportError as e:
        raise TextError("Texts from a table need pandas (`pip install pandas`).") from e
    if not isinstance(df, pd.DataFrame):
        raise TextError(f"Expected a pandas DataFrame, got {type(df).__name__}.")
    names = [df.columns[c] if isinstance(c, int) and c not in df.columns and -len(df.columns) <= c < len(df.columns)
             else c for c in (cols if is_listy(cols) else [cols])]
    missing = [c for c in names if c not in df.columns]
    if missing:
        raise TextError(f"The table has no text column {missing[0]!r}; its columns: {list(df.columns)}. Pass "
                        "`cols=` (TextList) or `text_cols=` (a DataBunch factory) naming the column of texts.")
    return names


def _document_tokens(il: TextList, tokenizer: Tokenizer, include_bos: bool, include_eos: bool):
    """(token lists or None, id lists or None) of the items of `il`: texts are read (files) and
    tokenized, token lists kept, id lists passed through."""
    items = il.items
    if items and all(isinstance(o, (list, tuple, np.ndarray)) for o in items):
        first = next((o for o in items if len(o)), [])
        if len(first) and isinstance(first[0], (int, np.integer)):
            return None, [np.asarray(o, dtype=np.int64) for o in items]
        return [list(o) for o in items], None
    texts = [open_text(o) if isinstance(o, Path) else o for o in items]
    empty = [str(items[i]) if isinstance(items[i], Path) else f"document {i}" for i, t in enumerate(texts)
             if not isinstance(t, str) or not t.strip()]
    if empty:
        raise TextError(f"{len(empty)} empty document(s): {format_list(empty)}. A document needs at least one "
                        "token; filter them out first (e.g. `.filter_by_func(lambda t: str(t).strip())` on a "
                        "table's texts, or remove the files).")
    tokens = tokenizer.process_all(texts)
    head, tail = [BOS] if include_bos else [], [EOS] if include_eos else []
    return [head + t + tail for t in tokens], None


def process_lists(lls, tokenizer=None, vocab: Vocab | None = None, max_vocab: int = 60000, min_freq: int = 2,
                  include_bos: bool = True, include_eos: bool = False) -> Vocab:
    """Tokenize and numericalize the training, validation and test TextLists of `lls` in place
    (their `ids`), with the training list's `vocab` when it has one, else a vocabulary made from the
    training documents (`Vocab.create(max_vocab, min_freq)`). Returns the vocabulary."""
    train = lls.train.x
    if not isinstance(train, TextList):
        raise TextError(f"A text DataBunch needs TextList items, got {type(train).__name__}.")
    tokenizer = train.tokenizer = tokenizer or train.tokenizer or Tokenizer()
    vocab = vocab or train.vocab
    lists = [ll.x for ll in lls.lists]
    parts = [_document_tokens(il, tokenizer, include_bos, include_eos) for il in lists]
    if vocab is None:
        if parts[0][0] is None:
            raise TextError("Documents given as ids need their vocabulary: pass `vocab=`.")
        vocab = Vocab.create(parts[0][0], max_vocab=max_vocab, min_freq=min_freq)
    for il, (tokens, ids) in zip(lists, parts):
        docs = ids if ids is not None else [vocab.numericalize(t) for t in tokens]
        il.ids, il.vocab = TokenIds.from_lists(docs), vocab
        too_big = int(il.ids.ids.max(initial=0))
        if too_big >= len(vocab) or int(il.ids.ids.min(initial=0)) < 0:
            raise TextError(f"Token id {too_big} is outside the vocabulary of {len(vocab)} tokens.")
    return vocab
