"""Layer 6: the text rules of fastai v1's tokenizer, written for fastbase: the special tokens and the
rules that run on the raw text before spaCy splits it (`pre_rules`: HTML entities, repeated
characters and words, spaces) and on the tokens after (`post_rules`: capitals become a marker token
and lower case), so that the vocabulary stays small while the model still sees emphasis.
"""
from __future__ import annotations

import html
import re

__all__ = [
    "BOS",
    "EOS",
    "FLD",
    "PAD",
    "TK_MAJ",
    "TK_REP",
    "TK_UP",
    "TK_WREP",
    "UNK",
    "deal_caps",
    "default_post_rules",
    "default_pre_rules",
    "default_spec_tok",
    "fix_html",
    "replace_all_caps",
    "replace_rep",
    "replace_wrep",
    "rm_useless_spaces",
    "spec_add_spaces",
]

UNK, PAD, BOS, EOS, FLD = "xxunk", "xxpad", "xxbos", "xxeos", "xxfld"
TK_MAJ, TK_UP, TK_REP, TK_WREP = "xxmaj", "xxup", "xxrep", "xxwrep"
default_spec_tok = [UNK, PAD, BOS, EOS, FLD, TK_MAJ, TK_UP, TK_REP, TK_WREP]  # the vocabulary's first ids

_SPECIAL_CHARS = re.compile(r"([/#\n])")
_SPACES = re.compile(" {2,}")
_CHAR_REPEAT = re.compile(r"(\S)(\1{3,})")
_WORD_REPEAT = re.compile(r"(?:\s|^)(\w+)\s+((?:\1\s+){2,})\1(\s|\W|$)")
_HTML_BR = re.compile(r"<\s*br\s*/?>", re.IGNORECASE)
# entities as they appear in scraped reviews (often without their leading '&') and WikiText's escapes
_HTML_FIXES = (("#39;", "'"), ("amp;", "&"), ("#146;", "'"), ("nbsp;", " "), ("#36;", "$"), ("\\n", "\n"),
               ("quot;", "'"), ("\\\"", '"'), (" @.@ ", "."), (" @-@ ", "-"), (" @,@ ", ","))


def fix_html(t: str) -> str:
    """Undo HTML and WikiText escapes: `<br />` becomes a newline, `&amp;` '&', ` @-@ ` '-', `<unk>` xxunk."""
    t = _HTML_BR.sub("\n", html.unescape(t))
    for old, new in _HTML_FIXES:
        t = t.replace(old, new)
    return t.replace("<unk>", UNK).replace("\\", " \\ ")


def replace_rep(t: str) -> str:
    """A character repeated 4+ times becomes `xxrep n c` ('cooool' -> ' xxrep 4 o ' after the 'c')."""
    return _CHAR_REPEAT.sub(lambda m: f" {TK_REP} {len(m.group(2)) + 1} {m.group(1)} ", t)


def replace_wrep(t: str) -> str:
    """A word repeated 4+ times in a row becomes `xxwrep n word`."""
    def one(m):
        count = len(m.group(2).split()) + 2
        return f" {TK_WREP} {count} {m.group(1)} {m.group(3)}"
    return _WORD_REPEAT.sub(one, t)


def spec_add_spaces(t: str) -> str:
    """Spaces around '/', '#' and newlines, so they are tokens of their own."""
    return _SPECIAL_CHARS.sub(r" \1 ", t)


def rm_useless_spaces(t: str) -> str:
    """Runs of spaces become one space."""
    return _SPACES.sub(" ", t)


def replace_all_caps(tokens: list[str]) -> list[str]:
    """A word in capitals (two letters or more) becomes `xxup` and the word in lower case."""
    out = []
    for t in tokens:
        if t.isupper() and len(t) > 1:
            out += [TK_UP, t.lower()]
        else:
            out.append(t)
    return out


def deal_caps(tokens: list[str]) -> list[str]:
    """A capitalised word becomes `xxmaj` and the word in lower case; every token is lower case."""
    out = []
    for t in tokens:
        if not t:
            continue
        if t[0].isupper() and len(t) > 1 and t[1:].islower():
            out.append(TK_MAJ)
        out.append(t.lower())
    return out


replace_all_caps.token_local = deal_caps.token_local = True  # each token's result depends on it alone
default_pre_rules = [fix_html, replace_rep, replace_wrep, spec_add_spaces, rm_useless_spaces]
default_post_rules = [replace_all_caps, deal_caps]
