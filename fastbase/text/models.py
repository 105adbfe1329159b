"""Layer 6: the AWD-LSTM (Merity et al., 2017) as ULMFiT uses it, with fastai v1's names and state
dict keys (so fastai's WT103 weights load): `AWD_LSTM` (embedding dropout, input/hidden dropout,
`WeightDropout` on the hidden-to-hidden weights), the language model (`get_language_model`: the
encoder and a `LinearDecoder` tied to its embedding) and the classifier (`get_text_classifier`:
`MultiBatchEncoder` over long documents and `PoolingLinearClassifier`'s concat pooling).

Unlike fastai v1, the models return their output tensor only; `RNNTrainer` reads the encoder's
per-layer outputs (for AR/TAR) with a forward hook, so `predict`, export and serving see a plain model.
"""
from __future__ import annotations

import warnings
from bisect import bisect_left

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from ..core import ifnone
from ..layers import bn_drop_lin

__all__ = ["AWD_LSTM", "BatchNorm1dFlat", "EmbeddingDropout", "LinearDecoder", "MultiBatchEncoder",
           "PoolingLinearClassifier", "RNNDropout", "SequentialRNN", "WeightDropout", "awd_lstm_clas_config",
           "awd_lstm_lm_config", "dropout_mask", "get_language_model", "get_text_classifier"]

awd_lstm_lm_config = {"emb_sz": 400, "n_hid": 1152, "n_layers": 3, "pad_token": 1, "bidir": False, "output_p": 0.1,
                      "hidden_p": 0.15, "input_p": 0.25, "embed_p": 0.02, "weight_p": 0.2, "tie_weights": True,
                      "out_bias": True}
awd_lstm_clas_config = {"emb_sz": 400, "n_hid": 1152, "n_layers": 3, "pad_token": 1, "bidir": False,
                        "output_p": 0.4, "hidden_p": 0.3, "input_p": 0.4, "embed_p": 0.05, "weight_p": 0.5}


def dropout_mask(x: torch.Tensor, size, p: float) -> torch.Tensor:
    """A mask of `size` like `x`: 0 with probability `p`, else 1/(1-p)."""
    return x.new_empty(*size).bernoulli_(1 - p).div_(1 - p)


class RNNDropout(nn.Module):
    """Dropout of whole features of a (bs, seq_len, n) sequence: the same mask at every position."""

    def __init__(self, p: float = 0.5):
        super().__init__()
        self.p = p

    def forward(self, x):
        if not self.training or self.p == 0.0:
            return x
        return x * dropout_mask(x.detach(), (x.size(0), 1, *x.shape[2:]), self.p)


class WeightDropout(nn.Module):
    """DropConnect on the weights `layer_names` of `module` (an nn.LSTM): each training forward uses
    a dropped copy of the raw weight (`<name>_raw`), passed in with `torch.func.functional_call`, so
    the wrapped module is never modified."""

    def __init__(self, module: nn.Module, weight_p: float, layer_names=("weight_hh_l0",)):
        super().__init__()
        self.module, self.weight_p, self.layer_names = module, weight_p, list(layer_names)
        for name in self.layer_names:
            w = getattr(module, name)
            del module._parameters[name]  # the raw weight lives here; the module gets a dropped copy per call
            module.register_buffer(name, w.detach().clone(), persistent=False)
            self.register_parameter(f"{name}_raw", nn.Parameter(w.detach().clone()))

    def forward(self, *args):
        p = self.weight_p if self.training else 0.0
        weights = {name: F.dropout(getattr(self, f"{name}_raw"), p=p, training=self.training)
                   for name in self.layer_names}
        with warnings.catch_warnings():  # cuDNN asks for one flat weight buffer; the dropped copy cannot be one
            warnings.simplefilter("ignore", UserWarning)
            return functional_call(self.module, weights, args)


class EmbeddingDropout(nn.Module):
    """An embedding `emb` whose rows (whole words) are dropped with probability `embed_p` in training."""

    def __init__(self, emb: nn.Embedding, embed_p: float):
        super().__init__()
        self.emb, self.embed_p = emb, embed_p

    def forward(self, words, scale: float | None = None):
        weight = self.emb.weight
        if self.training and self.embed_p != 0:
            weight = weight * dropout_mask(weight.detach(), (weight.size(0), 1), self.embed_p)
        if scale:
            weight = weight * scale
        return F.embedding(words, weight, self.emb.padding_idx, self.emb.max_norm, self.emb.norm_type,
                           self.emb.scale_grad_by_freq, self.emb.sparse)


class AWD_LSTM(nn.Module):
    """The AWD-LSTM encoder: an embedding of `vocab_sz` words in `emb_sz`, `n_layers` LSTMs of `n_hid`
    units (the last back to `emb_sz`, so a decoder can share the embedding). Forward: ids (bs, seq_len)
    -> (raw_outputs, outputs), each a list of (bs, seq_len, n) per layer, before and after dropout.
    The hidden state carries over between calls (the streams continue); `reset()` clears it."""
    initrange = 0.1

    def __init__(self, vocab_sz: int, emb_sz: int, n_hid: int, n_layers: int, pad_token: int = 1,
                 hidden_p: float = 0.2, input_p: float = 0.6, embed_p: float = 0.1, weight_p: float = 0.5,
                 bidir: bool = False):
        super().__init__()
        self.bs, self.emb_sz, self.n_hid, self.n_layers = 1, emb_sz, n_hid, n_layers
        self.n_dir = 2 if bidir else 1
        self.encoder = nn.Embedding(vocab_sz, emb_sz, padding_idx=pad_token)
        self.encoder_dp = EmbeddingDropout(self.encoder, embed_p)
        self.rnns = nn.ModuleList([WeightDropout(self._one_rnn(l, bidir), weight_p) for l in range(n_layers)])
        self.encoder.weight.data.uniform_(-self.initrange, self.initrange)
        self.input_dp = RNNDropout(input_p)
        self.hidden_dps = nn.ModuleList([RNNDropout(hidden_p) for _ in range(n_layers)])
        self.hidden = None

    def _one_rnn(self, layer: int, bidir: bool) -> nn.LSTM:
        n_in = self.emb_sz if layer == 0 else self.n_hid
        n_out = (self.n_hid if layer != self.n_layers - 1 else self.emb_sz) // self.n_dir
        return nn.LSTM(n_in, n_out, 1, batch_first=True, bidirectional=bidir)

    def forward(self, input: torch.Tensor, from_embeddings: bool = False):
        bs = input.size(0)
        if self.hidden is None or bs != self.bs:
            self.bs = bs
            self.reset()
        raw = self.input_dp(input if from_embeddings else self.encoder_dp(input))
        new_hidden, raw_outputs, outputs = [], [], []
        for layer, (rnn, hid_dp) in enumerate(zip(self.rnns, self.hidden_dps)):
            raw, h = rnn(raw, self._hidden_for(layer, raw))
            new_hidden.append(h)
            raw_outputs.append(raw)
            if layer != self.n_layers - 1:
                raw = hid_dp(raw)
            outputs.append(raw)
        self.hidden = [(h.detach(), c.detach()) for h, c in new_hidden]  # truncated backpropagation through time
        return raw_outputs, outputs

    def _hidden_for(self, layer: int, x: torch.Tensor):
        h = self.hidden[layer]
        if h is None or h[0].device != x.device or h[0].is_inference() != x.is_inference():
            n = (self.n_hid if layer != self.n_layers - 1 else self.emb_sz) // self.n_dir
            zeros = x.new_zeros(self.n_dir, self.bs, n)
            return zeros, zeros
        return h if h[0].dtype == x.dtype else (h[0].to(x.dtype), h[1].to(x.dtype))  # mixed precision

    def reset(self) -> None:
        """Forget the hidden state (a new set of streams or documents starts)."""
        self.hidden = [None] * self.n_layers

    def grow_batch(self, bs: int) -> None:
        """Continue the current streams in the first rows of a batch of `bs` rows: the rows added
        after them start from a zero state (`MultiBatchEncoder` adds documents as their text begins)."""
        if bs < self.bs and any(h is not None for h in self.hidden):
            raise ValueError(f"grow_batch({bs}): the hidden state already holds {self.bs} rows.")
        if bs > self.bs:
            self.hidden = [None if h is None else tuple(F.pad(t, (0, 0, 0, bs - self.bs)) for t in h)
                           for h in self.hidden]
        self.bs = bs


class LinearDecoder(nn.Module):
    """The language model's head: dropout, then a linear layer to the vocabulary, its weight the
    encoder's embedding when `tie_encoder` is given (ULMFiT ties them)."""
    initrange = 0.1

    def __init__(self, n_out: int, n_hid: int, output_p: float, tie_encoder: nn.Module | None = None,
                 bias: bool = True):
        super().__init__()
        self.decoder = nn.Linear(n_hid, n_out, bias=bias)
        self.decoder.weight.data.uniform_(-self.initrange, self.initrange)
        self.output_dp = RNNDropout(output_p)
        if bias:
            self.decoder.bias.data.zero_()
        if tie_encoder is not None:
            self.decoder.weight = tie_encoder.weight

    def forward(self, input):
        return self.decoder(self.output_dp(input[1][-1]))  # input: (raw_outputs, outputs)


class SequentialRNN(nn.Sequential):
    """An encoder and a head; `reset()` clears the encoder's hidden state."""

    def reset(self) -> None:
        for m in self.modules():
            if m is not self and callable(getattr(type(m), "reset", None)) and not isinstance(m, nn.Sequential):
                m.reset()


class MultiBatchEncoder(nn.Module):
    """Runs the encoder `module` over a long (bs, seq_len) document `bptt` tokens at a time, keeping
    the outputs of the last `max_len` tokens (gradients flow through those only; the chunks before
    them run without autograd). Returns (raw_outputs, outputs, mask) of the kept tokens, mask True at
    padding. A document joins the batch at the chunk where its text begins, from a zero state: chunks
    of leading padding (`pad_collate`'s `pad_first`) are not run, their outputs are zeros (and
    masked), so a short document in a batch of long ones costs what its own length costs."""

    def __init__(self, bptt: int, max_len: int, module: nn.Module, pad_idx: int = 1):
        super().__init__()
        self.bptt, self.max_len, self.module, self.pad_idx = bptt, max_len, module, pad_idx

    def reset(self) -> None:
        self.module.reset()

    def forward(self, input: torch.Tensor):
        bs, sl = input.shape
        self.module.reset()
        text = input != self.pad_idx
        first = torch.where(text.any(1), text.int().argmax(1), sl)  # where each row's text begins
        order = torch.argsort(first, stable=True)  # rows whose text begins first go first
        unsorted = not bool((order[1:] > order[:-1]).all())
        if unsorted:
            input, text, first = input[order], text[order], first[order]
        starts, n_rows = first.tolist(), 1
        raw_outputs, outputs, masks = [], [], []
        for i in range(0, sl, self.bptt):
            end = min(i + self.bptt, sl)
            keep = i > sl - self.max_len
            n_rows = max(n_rows, bisect_left(starts, end))  # the rows with text before `end`
            self.module.grow_batch(n_rows)
            with torch.set_grad_enabled(keep and torch.is_grad_enabled()):
                r, o = self.module(input[:n_rows, i:end])
            if keep:
                raw_outputs.append([_pad_rows(t, bs) for t in r])
                outputs.append([_pad_rows(t, bs) for t in o])
                masks.append(~text[:, i:end])
        raw_outputs, outputs, mask = _concat(raw_outputs), _concat(outputs), torch.cat(masks, dim=1)
        if unsorted:
            back = torch.argsort(order)
            raw_outputs, outputs, mask = [t[back] for t in raw_outputs], [t[back] for t in outputs], mask[back]
        return raw_outputs, outputs, mask


def _pad_rows(t: torch.Tensor, bs: int) -> torch.Tensor:
    return t if t.shape[0] == bs else F.pad(t, (0, 0, 0, 0, 0, bs - t.shape[0]))


def _concat(parts):
    return [torch.cat([p[layer] for p in parts], dim=1) for layer in range(len(parts[0]))]


class PoolingLinearClassifier(nn.Module):
    """The classifier's head: the last output, its max and its mean over the real tokens (padding
    masked), concatenated, then `bn_drop_lin` blocks of sizes `layers` with dropouts `drops`."""

    def __init__(self, layers, drops):
        super().__init__()
        mods = []
        activs = [nn.ReLU(inplace=True)] * (len(layers) - 2) + [None]
        for n_in, n_out, p, actn in zip(layers[:-1], layers[1:], drops, activs):
            mods += bn_drop_lin(n_in, n_out, p=p, actn=actn)
        self.layers = nn.Sequential(*mods)

    def forward(self, input):
        _, outputs, mask = input
        output = outputs[-1]
        keep = (~mask).unsqueeze(-1).to(output.dtype)
        avg_pool = (output * keep).sum(1) / keep.sum(1).clamp(min=1)
        max_pool = output.masked_fill(mask.unsqueeze(-1), float("-inf")).max(1)[0]
        x = torch.cat([output[:, -1], max_pool, avg_pool], 1)
        return self.layers(x)


class BatchNorm1dFlat(nn.BatchNorm1d):
    """BatchNorm1d over the features of a (bs, seq_len, n) sequence."""

    def forward(self, x):
        if x.dim() == 2:
            return super().forward(x)
        *f, n = x.shape
        return super().forward(x.contiguous().view(-1, n)).view(*f, n)


def _scaled(config: dict, drop_mult: float) -> dict:
    return {k: (v * drop_mult if k.endswith("_p") else v) for k, v in config.items()}


def get_language_model(arch=AWD_LSTM, vocab_sz: int = 0, config: dict | None = None,
                       drop_mult: float = 1.0) -> SequentialRNN:
    """The encoder `arch(vocab_sz, **config)` and a `LinearDecoder` to the vocabulary; every dropout
    of `config` (default `awd_lstm_lm_config`) multiplied by `drop_mult`."""
    config = _scaled(ifnone(config, awd_lstm_lm_config), drop_mult)
    tie, output_p, out_bias = config.pop("tie_weights", True), config.pop("output_p"), config.pop("out_bias", True)
    encoder = arch(vocab_sz, **config)
    decoder = LinearDecoder(vocab_sz, config["emb_sz"], output_p, tie_encoder=encoder.encoder if tie else None,
                            bias=out_bias)
    return SequentialRNN(encoder, decoder)


def get_text_classifier(arch=AWD_LSTM, vocab_sz: int = 0, n_class: int = 2, bptt: int = 70,
                        config: dict | None = None, drop_mult: float = 1.0, lin_ftrs=None, ps=None,
                        pad_idx: int = 1, max_len: int = 20 * 70) -> SequentialRNN:
    """`MultiBatchEncoder` over `arch(vocab_sz, **config)` (default `awd_lstm_clas_config`) and a
    `PoolingLinearClassifier` of hidden sizes `lin_ftrs` (default [50]) to `n_class` outputs."""
    config = _scaled(ifnone(config, awd_lstm_clas_config), drop_mult)
    output_p = config.pop("output_p")
    for k in ("tie_weights", "out_bias"):
        config.pop(k, None)
    lin_ftrs = list(ifnone(lin_ftrs, [50]))
    ps = list(ifnone(ps, [0.1] * len(lin_ftrs)))
    layers = [config["emb_sz"] * 3, *lin_ftrs, n_class]
    encoder = MultiBatchEncoder(bptt, max_len, arch(vocab_sz, **config), pad_idx=pad_idx)
    return SequentialRNN(encoder, PoolingLinearClassifier(layers, [output_p, *ps]))
