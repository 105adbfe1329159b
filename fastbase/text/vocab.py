"""Layer 6: `Vocab` (tokens to ids and back, built from a corpus with `create`, saved as a JSON list)
and `TokenIds`, a corpus of numericalized documents as one int32 array plus offsets: the full IMDB
(25M tokens) takes 100 MB there, where lists of Python ints take over a gigabyte.
"""
from __future__ import annotations

import json
from collections import Counter

import numpy as np

from ..core import Path
from ..file_checks import DamagedFileError, file_size, read_json_state
from ..files import atomic_write
from .rules import PAD, UNK, default_spec_tok
from .tokenizer import TextError

__all__ = ["TokenIds", "Vocab"]


class Vocab:
    """The tokens of a model's vocabulary in id order (`itos`); `stoi` maps back, unknown tokens to
    the id of `xxunk` (0 in vocabularies fastbase or fastai make)."""

    def __init__(self, itos):
        itos = [str(o) for o in itos]
        if len(itos) < 2:
            raise TextError(f"A vocabulary needs at least two tokens (a model chooses among them); got {itos}. "
                            "Build it from more text, or lower min_freq.")
        self.itos = itos
        self.stoi = {w: i for i, w in enumerate(itos)}
        self.unk_idx = self.stoi.get(UNK, 0)
        self.pad_idx = self.stoi.get(PAD, 1)

    def __len__(self):
        return len(self.itos)

    def __eq__(self, other):
        return isinstance(other, Vocab) and self.itos == other.itos

    def __repr__(self):
        return f"Vocab({len(self)} tokens: {' '.join(self.itos[:12])} ...)"

    def numericalize(self, t) -> list[int]:
        """The ids of the tokens `t`."""
        get, unk = self.stoi.get, self.unk_idx
        return [get(w, unk) for w in t]

    def textify(self, nums, sep: str | None = " "):
        """The tokens of the ids `nums`, joined with `sep` (a list when `sep` is None)."""
        words = [self.itos[int(i)] for i in nums]
        return words if sep is None else sep.join(words)

    @classmethod
    def create(cls, tokens, max_vocab: int = 60000, min_freq: int = 2) -> Vocab:
        """The `max_vocab` most frequent tokens of `tokens` (a list of token lists) that occur at
        least `min_freq` times, after the special tokens; padded with `xxfake` to a multiple of 8
        (faster matrix products on GPUs)."""
        freq = Counter(w for doc in tokens for w in doc)
        special = set(default_spec_tok)
        words = [w for w, c in freq.most_common(max_vocab) if c >= min_freq and w not in special]
        if not words:
            top = ", ".join(f"{w!r} ({c})" for w, c in freq.most_common(5) if w not in special) or "none"
            raise TextError(f"No token occurs at least min_freq={min_freq} times (most frequent: {top}): the "
                            "vocabulary would hold only the special tokens. Give more text or a lower min_freq.")
        itos = (list(default_spec_tok) + words)[:max(max_vocab, len(default_spec_tok) + 1)]
        while len(itos) % 8:
            itos.append(f"xxfake{len(itos)}")  # distinct, so stoi maps each back
        return cls(itos)

    def save(self, path) -> Path:
        """Write the tokens as a JSON list (plain data), atomically: a failed write keeps the old file."""
        text = json.dumps(self.itos)
        return atomic_write(Path(path), lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))

    @classmethod
    def load(cls, path) -> Vocab:
        """The vocabulary `save` wrote; an empty, cut short, binary or foreign file raises
        `DamagedFileError` naming the file, its size and what is wrong."""
        path = Path(path)
        itos = read_json_state(path, what="vocabulary (a JSON list of tokens)")
        if not isinstance(itos, list) or not itos or not all(isinstance(t, str) for t in itos):
            raise DamagedFileError(f"{path} ({file_size(path)}) is not a vocabulary: it holds "
                                   f"{type(itos).__name__ if not isinstance(itos, list) else 'a list'} where a "
                                   "non-empty JSON list of token strings was expected.")
        return cls(itos)


class TokenIds:
    """Documents of token ids stored compactly: `ids` (int32, every document end to end) and
    `offsets` (int64, n + 1: document i is `ids[offsets[i]:offsets[i + 1]]`). `docs[i]` is one
    document as an int64 array; `docs[list]` a TokenIds of those documents."""

    def __init__(self, ids: np.ndarray, offsets: np.ndarray):
        self.ids = np.ascontiguousarray(ids, dtype=np.int32)
        self.offsets = np.ascontiguousarray(offsets, dtype=np.int64)

    @classmethod
    def from_lists(cls, docs) -> TokenIds:
        docs = list(docs)
        lengths = np.fromiter((len(d) for d in docs), dtype=np.int64, count=len(docs))
        offsets = np.zeros(len(docs) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        parts = [np.asarray(d, dtype=np.int32).reshape(-1) for d in docs]
        return cls(np.concatenate(parts) if parts else np.zeros(0, dtype=np.int32), offsets)

    def __len__(self):
        return len(self.offsets) - 1

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    @property
    def nbytes(self) -> int:
        return self.ids.nbytes + self.offsets.nbytes

    def __getitem__(self, i):
        if isinstance(i, (int, np.integer)):
            i = int(i) % max(1, len(self))
            return self.ids[self.offsets[i]:self.offsets[i + 1]].astype(np.int64)
        idx = np.arange(len(self))[i] if isinstance(i, slice) else np.asarray(i, dtype=np.int64).reshape(-1)
        return TokenIds.from_lists(self.ids[self.offsets[k]:self.offsets[k + 1]] for k in idx)

    def concat(self, order=None) -> np.ndarray:
        """Every document end to end (in `order` when given) as one int64 array: a language model's stream."""
        if order is None:
            return self.ids.astype(np.int64)
        return np.concatenate([self.ids[self.offsets[k]:self.offsets[k + 1]] for k in order]).astype(np.int64)

    def __repr__(self):
        return f"TokenIds({len(self)} documents, {len(self.ids)} tokens)"
