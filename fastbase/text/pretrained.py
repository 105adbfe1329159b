"""Layer 6: pretrained language models in fastai's file layout: a `.pth` state dict and an `itos`
list (`.pkl`), as `untar_data(URLs.WT103_FWD)` gives and `fastbase.text.pretrain` writes. Both are
read without running code: the weights with `torch.load(weights_only=True)`, the token list with an
unpickler that accepts strings and lists only. `convert_weights` maps the pretrained vocabulary
onto the data's: a known word keeps its row, a new word starts at the mean embedding (and bias).
"""
from __future__ import annotations

import io
import json
import pickle

import torch

from ..core import Path
from ..export import safe_load
from .tokenizer import TextError

__all__ = ["PLAIN_PICKLE_TYPES", "WT103_FILES", "convert_weights", "load_pretrained", "read_itos", "write_itos"]

WT103_FILES = ("lstm_fwd.pth", "itos_wt103.pkl")  # the names inside fastai's wt103-fwd archive
PLAIN_PICKLE_TYPES = (list, str)
_EMBEDDING_KEYS = ("0.encoder.weight", "0.encoder_dp.emb.weight", "1.decoder.weight")


class _TokensOnly(pickle.Unpickler):
    """An unpickler for a list of strings: any class or function reference is refused."""

    def find_class(self, module, name):
        raise TextError(f"the token list refers to {module}.{name}; a vocabulary file holds only strings")


def read_itos(fname) -> list[str]:
    """The token list of a vocabulary file: a pickled list of str (fastai's `itos_*.pkl`, read
    without running code) or a JSON list."""
    fname = Path(fname)
    if not fname.is_file():
        raise TextError(f"No vocabulary file {fname}.")
    data = fname.read_bytes()
    try:
        itos = json.loads(data) if fname.suffix == ".json" else _TokensOnly(io.BytesIO(data)).load()
    except (pickle.UnpicklingError, ValueError, EOFError) as e:
        raise TextError(f"{fname} is not a list of tokens (pickled or JSON): {e}.") from e
    except TextError as e:
        raise TextError(f"Refused {fname}: {e}.") from e
    if not isinstance(itos, list) or not all(isinstance(w, str) for w in itos):
        raise TextError(f"{fname} does not hold a list of strings.")
    return itos


def write_itos(itos, fname) -> Path:
    """Write a token list as fastai does (a pickled list of str, which `read_itos` reads safely)."""
    fname = Path(fname)
    fname.write_bytes(pickle.dumps([str(w) for w in itos], protocol=2))
    return fname


def convert_weights(wgts: dict, old_itos: list[str], new_itos: list[str]) -> dict:
    """The state dict `wgts` of a language model with vocabulary `old_itos`, its embedding and decoder
    rows rearranged for `new_itos`: known words keep their rows, the others start at the mean row."""
    old_index = {w: i for i, w in enumerate(old_itos)}
    rows = torch.tensor([old_index.get(w, -1) for w in new_itos])
    known = rows >= 0
    wgts = dict(wgts)

    def remap(t: torch.Tensor) -> torch.Tensor:
        if t.shape[0] != len(old_itos):
            raise TextError(f"The pretrained weights have {t.shape[0]} rows but their vocabulary {len(old_itos)} "
                            "tokens: the .pth and the itos file do not belong together.")
        new = t.mean(0, keepdim=True).repeat(len(new_itos), *([1] * (t.dim() - 1)))
        new[known] = t[rows[known]]
        return new
    for key in (*_EMBEDDING_KEYS, "1.decoder.bias"):
        if key in wgts:
            wgts[key] = remap(wgts[key])
    return wgts


def load_pretrained(model: torch.nn.Module, wgts_fname, itos_fname, new_itos: list[str]) -> torch.nn.Module:
    """Load a pretrained language model (fastai's layout) into `model`, mapped onto `new_itos`."""
    state = safe_load(wgts_fname, "cpu")
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    wgts = convert_weights(state, read_itos(itos_fname), list(new_itos))
    own = model.state_dict()
    # fastai's WeightDropout also saved its dropped copy of each weight (`module.weight_hh_l0`): not a parameter here
    wgts = {k: v for k, v in wgts.items() if k in own}
    missing = sorted(set(own) - set(wgts))
    if missing:
        raise TextError(f"{wgts_fname} lacks {missing[:4]}: it is not an AWD-LSTM language model of this "
                        "configuration (emb_sz, n_hid, n_layers must be those it was trained with).")
    bad = [(k, tuple(v.shape), tuple(own[k].shape)) for k, v in wgts.items() if v.shape != own[k].shape]
    if bad:
        k, got, want = bad[0]
        raise TextError(f"{wgts_fname}: {k} has shape {got}, this model's {want}; build the model with the "
                        "configuration the weights were trained with (`config=`).")
    model.load_state_dict(wgts)
    return model
