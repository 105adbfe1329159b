"""Layer 6: turning texts into tokens: `SpacyTokenizer` (spaCy's rule-based tokenizer of
`spacy.blank(lang)`: no model to download) and `Tokenizer`, which runs the rules of
`fastbase.text.rules` around it, over many texts in worker processes with a progress bar.
"""
from __future__ import annotations

import concurrent.futures
import multiprocessing
import re

from ..core import FastbaseError, ifnone, num_cpus
from ..progress import progress_bar, progress_disabled
from .rules import default_post_rules, default_pre_rules, default_spec_tok

__all__ = ["BaseTokenizer", "SpacyTokenizer", "TextError", "Tokenizer"]

_WHITESPACE = re.compile(r"(\s+)")


class TextError(FastbaseError, ValueError):
    """Text data fastbase cannot use as given; the message names the document, file or value."""


class BaseTokenizer:
    """The plainest tokenizer: words are what lies between spaces. Subclasses split better."""

    def __init__(self, lang: str = "en"):
        self.lang = lang

    def tokenizer(self, t: str) -> list[str]:
        return t.split(" ")

    def pipe(self, texts) -> list[list[str]]:
        """The tokens of each of `texts` (subclasses batch the work)."""
        return [self.tokenizer(t) for t in texts]

    def add_special_cases(self, toks) -> None:
        """Tokens the tokenizer must keep whole (`xxbos`...)."""

    def set_piece_rules(self, rules) -> bool:
        """Offer the tokenizer post rules that act on each token alone (`token_local`), to apply as it
        makes the tokens; True when it takes them (then the Tokenizer does not apply them again)."""
        return False


class SpacyTokenizer(BaseTokenizer):
    """spaCy's rule-based tokenizer for `lang` (`spacy.blank(lang)`): punctuation, contractions and
    the language's exceptions, without a trained pipeline.

    spaCy splits a text at whitespace and then cuts each piece by its rules alone, so the tokens of
    a piece never depend on its neighbours. `pipe` therefore asks spaCy once per distinct piece and
    reuses the answer (`cache_size` pieces at most), and makes the whitespace tokens as spaCy does
    (a run of whitespace is a token, less the one space that separates two words): the same tokens,
    without building a spaCy `Doc` per text (`bench/text.py` measures both). Post rules that act on
    each token alone (`piece_rules`, e.g. the capitals' markers) are applied once per piece too."""
    cache_size = 1_000_000

    def __init__(self, lang: str = "en"):
        super().__init__(lang)
        self._pieces: dict[str, list[str]] = {}
        self._spaced_cases = False
        self.piece_rules: list = []
        try:
            import spacy
        except ImportError as e:
            raise TextError("fastbase.text tokenizes with spaCy: `pip install 'fastbase[text]'`.") from e
        try:
            self.tok = spacy.blank(lang).tokenizer
        except (ImportError, ValueError, KeyError) as e:
            raise TextError(f"spaCy has no language {lang!r} ({e}); use a language code such as 'en', 'fr', "
                            "'de' or 'xx' (several languages).") from e

    def tokenizer(self, t: str) -> list[str]:
        return [w.text for w in self.tok(t)]

    def pipe(self, texts) -> list[list[str]]:
        if self._spaced_cases:  # a special case across whitespace: only spaCy's own pass sees it
            return [self._ruled([w.text for w in doc]) for doc in self.tok.pipe(texts)]
        return [self._tokens(t) for t in texts]

    def set_piece_rules(self, rules) -> bool:
        self.piece_rules = list(rules)
        self._pieces.clear()
        return True

    def _ruled(self, tokens: list[str]) -> list[str]:
        for rule in self.piece_rules:
            tokens = rule(tokens)
        return tokens

    def _tokens(self, text: str) -> list[str]:
        parts = _WHITESPACE.split(text)
        out, pieces = [], self._pieces
        for i, part in enumerate(parts):
            if i % 2 == 0:  # a piece without whitespace
                if part:
                    found = pieces.get(part)
                    if found is None:
                        if len(pieces) >= self.cache_size:
                            pieces.clear()
                        found = pieces[part] = self._ruled([w.text for w in self.tok(part)])
                    out.extend(found)
            else:  # whitespace: whole at the start of the text, else less its first character if a space
                space = part if i == 1 and not parts[0] else part[1:] if part[0] == " " else part
                if space:
                    out.extend(self._ruled([space]))
        return out

    def add_special_cases(self, toks) -> None:
        for w in toks:
            self.tok.add_special_case(w, [{"ORTH": w}])
            self._spaced_cases = self._spaced_cases or any(c.isspace() for c in w)
        self._pieces.clear()


class Tokenizer:
    """Tokenize texts as fastai v1 does: `pre_rules` on each text, `tok_func(lang)` splits it,
    `post_rules` on its tokens. `special_cases` (default: the special tokens) stay whole. `process_all`
    spreads the texts over `n_cpus` processes (default: the machine's cores, at most 8)."""

    def __init__(self, tok_func=SpacyTokenizer, lang: str = "en", pre_rules=None, post_rules=None,
                 special_cases=None, n_cpus: int | None = None):
        self.tok_func, self.lang = tok_func, lang
        self.pre_rules = list(ifnone(pre_rules, default_pre_rules))
        self.post_rules = list(ifnone(post_rules, default_post_rules))
        self.special_cases = list(ifnone(special_cases, default_spec_tok))
        self.n_cpus = max(1, ifnone(n_cpus, min(8, num_cpus())))
        self._tok, self._rules_in_tok = None, False

    def __getstate__(self):  # the spaCy tokenizer is rebuilt in each worker, not pickled
        return {**self.__dict__, "_tok": None, "_rules_in_tok": False}

    @property
    def tok(self) -> BaseTokenizer:
        if self._tok is None:
            tok = self.tok_func(self.lang)
            tok.add_special_cases(self.special_cases)
            local = all(getattr(r, "token_local", False) for r in self.post_rules)
            self._rules_in_tok = local and tok.set_piece_rules(self.post_rules)
            self._tok = tok
        return self._tok

    def __repr__(self):
        names = [getattr(r, "__name__", repr(r)) for r in self.pre_rules + self.post_rules]
        return f"Tokenizer {getattr(self.tok_func, '__name__', self.tok_func)} in {self.lang} with rules {names}"

    def process_text(self, t: str) -> list[str]:
        """The tokens of one text."""
        return self.process_many([t])[0]

    def process_many(self, texts) -> list[list[str]]:
        """The tokens of each of `texts`, in this process."""
        for rule in self.pre_rules:
            texts = [rule(t) for t in texts]
        docs = self.tok.pipe(texts)
        if not self._rules_in_tok:
            for rule in self.post_rules:
                docs = [rule(d) for d in docs]
        return docs

    def process_all(self, texts, chunk: int = 1000, show_progress: bool | None = None,
                    min_chunk: int = 100) -> list[list[str]]:
        """The tokens of each of `texts`, in order, in pieces of at most `chunk` texts (at least
        `min_chunk`, and a few per worker): in `n_cpus` worker processes when there are several
        pieces, with a progress bar over them (unless silenced)."""
        texts = list(texts)
        bad = next((i for i, t in enumerate(texts) if not isinstance(t, str)), None)
        if bad is not None:
            raise TextError(f"Text {bad} is a {type(texts[bad]).__name__} ({texts[bad]!r:.60}), not a string.")
        chunk = max(min_chunk, min(chunk, -(-len(texts) // (4 * self.n_cpus))))  # a few pieces per worker
        pieces = [texts[i:i + chunk] for i in range(0, len(texts), chunk)]
        show = not progress_disabled() if show_progress is None else show_progress
        if self.n_cpus == 1 or len(pieces) < 2:
            work = progress_bar(pieces, leave=False) if show and len(pieces) > 1 else pieces
            return [doc for piece in work for doc in self.process_many(piece)]
        fork = "fork" in multiprocessing.get_all_start_methods()
        if fork:
            _ = self.tok  # built once here; forked workers inherit it instead of each loading spaCy
        context = multiprocessing.get_context("fork" if fork else None)
        with concurrent.futures.ProcessPoolExecutor(min(self.n_cpus, len(pieces)), mp_context=context,
                                                    initializer=_start_worker, initargs=(self,)) as pool:
            results = pool.map(_tokenize_piece, pieces)
            steps = progress_bar(range(len(pieces)), leave=False) if show else range(len(pieces))
            return [doc for _ in steps for doc in next(results)]


_worker_tokenizer: Tokenizer | None = None  # set in each worker process by `_start_worker`, never in the parent


def _start_worker(tokenizer: Tokenizer) -> None:
    global _worker_tokenizer
    _worker_tokenizer = tokenizer


def _tokenize_piece(texts: list[str]) -> list[list[str]]:
    return _worker_tokenizer.process_many(texts)
