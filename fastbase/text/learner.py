"""Layer 6: ULMFiT's Learners. `language_model_learner` (an AWD-LSTM language model, from fastai's
WT103 weights or your own, `predict` generates text) and `text_classifier_learner` (the encoder
and a pooling head, `predict` gives a class), with the layer groups of ULMFiT's gradual unfreezing
(`freeze_to(-2)`, `unfreeze()`, `slice` learning rates), `save_encoder`/`load_encoder` between the
two, the `RNNTrainer` callback (hidden-state resets, AR/TAR regularisation) and `Perplexity`.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..callback import Callback
from ..core import FastbaseError, Path, ifnone
from ..datasets import URLs, untar_data
from ..export import model_spec, safe_load, write_state
from ..learner import Learner
from ..loop import eval_grad_mode
from ..metrics import Metric
from .bunch import TextClasDataBunch, TextLMDataBunch
from .models import (
    AWD_LSTM,
    MultiBatchEncoder,
    awd_lstm_clas_config,
    awd_lstm_lm_config,
    get_language_model,
    get_text_classifier,
)
from .pretrained import WT103_FILES, load_pretrained
from .rules import TK_MAJ, TK_UP
from .tokenizer import TextError

__all__ = ["LanguageLearner", "Perplexity", "RNNLearner", "RNNTrainer", "awd_lstm_clas_split", "awd_lstm_lm_split",
           "decode_spec_tokens", "language_model_learner", "text_classifier_learner"]


class RNNTrainer(Callback):
    """Resets the hidden state at the start of training and of validation, and adds AR (`alpha` times
    the mean square of the last layer's dropped-out activations) and TAR (`beta` times the mean
    square of their change from one token to the next) to the training loss."""
    changes_step = True  # the loss it adds is part of the step, lr_find included

    def __init__(self, alpha: float = 2.0, beta: float = 1.0):
        self.alpha, self.beta = alpha, beta
        self._hook, self._out = None, None

    def _keep(self, module, args, output):
        if module.training:
            self._out = output

    def before_fit(self):
        self._hook = self.learn.model[0].register_forward_hook(self._keep)

    def cleanup_fit(self):
        if self._hook is not None:
            self._hook.remove()
        self._hook = self._out = None

    def before_train(self):
        self.learn.model.reset()

    def before_validate(self):
        self.learn.model.reset()

    def after_loss(self):
        if not self.learn.training or self._out is None:
            return
        raw_outputs, outputs = self._out[:2]
        extra = 0.0
        if self.alpha:
            extra = extra + self.alpha * outputs[-1].float().pow(2).mean()
        if self.beta and raw_outputs[-1].shape[1] > 1:
            last = raw_outputs[-1].float()
            extra = extra + self.beta * (last[:, 1:] - last[:, :-1]).pow(2).mean()
        self.learn.loss_grad = self.learn.loss_grad + extra

    def after_batch(self):
        self._out = None


class Perplexity(Metric):
    """exp of the mean cross-entropy per token over the validation set (a language model's metric)."""

    def __init__(self):
        self.reset()

    def reset(self):
        self._total, self._count = None, 0

    def accumulate(self, pred, *yb):
        loss = F.cross_entropy(pred.reshape(-1, pred.shape[-1]).float(), yb[0].reshape(-1), reduction="sum")
        self._total = loss.detach() if self._total is None else self._total + loss.detach()
        self._count += yb[0].numel()

    @property
    def value(self):
        return None if self._total is None else torch.exp(self._total / self._count)


def awd_lstm_lm_split(model: nn.Module) -> list[list[nn.Module]]:
    """ULMFiT's layer groups of a language model: each LSTM with its dropout, then the embedding and
    the decoder (tied, so in one group)."""
    enc = model[0]
    groups = [[rnn, dp] for rnn, dp in zip(enc.rnns, enc.hidden_dps)]
    return groups + [[enc.encoder, enc.encoder_dp, model[1]]]


def awd_lstm_clas_split(model: nn.Module) -> list[list[nn.Module]]:
    """ULMFiT's layer groups of a classifier: the embedding, each LSTM, then the head."""
    enc = model[0].module
    groups = [[enc.encoder, enc.encoder_dp]] + [[rnn, dp] for rnn, dp in zip(enc.rnns, enc.hidden_dps)]
    return groups + [[model[1]]]


class RNNLearner(Learner):
    """A Learner on an AWD-LSTM: `save_encoder`/`load_encoder` move the encoder between a language
    model and a classifier; `RNNTrainer(alpha, beta)` runs in every fit."""

    def __init__(self, data, model, split_func=None, alpha: float = 2.0, beta: float = 1.0, **learn_kwargs):
        callbacks = [*(learn_kwargs.pop("callbacks", None) or []), RNNTrainer(alpha, beta)]
        super().__init__(data, model, callbacks=callbacks, **learn_kwargs)
        if split_func is not None:
            self.split(split_func)

    @property
    def encoder(self) -> nn.Module:
        enc = self.model[0]
        return enc.module if isinstance(enc, MultiBatchEncoder) else enc

    def save_encoder(self, name) -> Path:
        """Write the encoder's weights to `path/model_dir/name.pth`."""
        return write_state({"model": self.encoder.state_dict()}, self._model_file(name))

    def load_encoder(self, name, device=None) -> RNNLearner:
        """Load the weights `save_encoder` wrote; a clear error when the vocabularies differ."""
        state = safe_load(self._model_file(name), ifnone(device, self.data.device))
        state = state.get("model", state)
        own = self.encoder.state_dict()
        key = "encoder.weight"
        if key in state and state[key].shape != own[key].shape:
            (n_saved, d_saved), (n_own, d_own) = state[key].shape, own[key].shape
            what = (f"a vocabulary of {n_saved} tokens, this model {n_own}" if n_saved != n_own else
                    f"embeddings of {d_saved}, this model {d_own}")
            raise TextError(f"The encoder {self._model_file(name)} has {what}. Build the classifier's data with "
                            "the language model's vocabulary (`vocab=data_lm.vocab`) and the same config.")
        self.encoder.load_state_dict(state)
        self.freeze()
        return self


def decode_spec_tokens(tokens: list[str]) -> list[str]:
    """Words as a person writes them: `xxmaj w` -> 'W', `xxup w` -> 'W' in capitals."""
    out, rule = [], None
    for t in tokens:
        if t in (TK_MAJ, TK_UP):
            rule = t
            continue
        out.append(t.capitalize() if rule == TK_MAJ else t.upper() if rule == TK_UP else t)
        rule = None
    return out


class LanguageLearner(RNNLearner):
    """A language model's Learner: `predict(text, n_words)` continues a text."""

    def predict(self, text: str, n_words: int = 1, no_unk: bool = True, temperature: float = 1.0,
                min_p: float | None = None, sep: str = " ", decoder=decode_spec_tokens):
        """`text` followed by `n_words` tokens drawn one at a time from the model's predictions (at
        `temperature`; `no_unk` never draws `xxunk`; `min_p` drops the less likely ones)."""
        vocab = self.data.vocab
        ids = self.data.numericalize_text(text).to(self.data.device)
        self.model.reset()
        self.model.eval()
        new, x = [], ids[None]
        with eval_grad_mode(self.model):
            for _ in range(n_words):
                logits = self.model(x)[0, -1].float()
                probs = F.softmax(logits / max(temperature, 1e-6), dim=-1)
                if no_unk:
                    probs[vocab.unk_idx] = 0.0
                if min_p is not None and (probs >= min_p).any():
                    probs[probs < min_p] = 0.0
                idx = torch.multinomial(probs, 1)
                new.append(int(idx))
                x = idx.view(1, 1)
        words = decoder(vocab.textify(new, sep=None))
        return text + sep + sep.join(words) if words else text


def _pretrained_files(learn: Learner, pretrained_fnames):
    if pretrained_fnames is not None:
        folder = learn.path / learn.model_dir
        wgts, itos = (Path(f) if Path(f).suffix else folder / f"{f}{ext}"
                      for f, ext in zip(pretrained_fnames, (".pth", ".pkl")))
        return wgts, itos
    try:
        folder = untar_data(URLs.WT103_FWD)
    except Exception as e:  # no network, offline mode, a failed download: each says why in `e`
        raise TextError(f"pretrained=True needs fastai's WT103 language model (URLs.WT103_FWD), which could not be "
                        f"fetched ({type(e).__name__}: {e}). Use pretrained=False, or a model of your own: "
                        "pretrained_fnames=(weights, itos), e.g. from `python -m fastbase.text.pretrain`.") from e
    return folder / WT103_FILES[0], folder / WT103_FILES[1]


def language_model_learner(data: TextLMDataBunch, arch=AWD_LSTM, config: dict | None = None, drop_mult: float = 1.0,
                           pretrained: bool = True, pretrained_fnames=None, **learn_kwargs) -> LanguageLearner:
    """A `LanguageLearner` for `data`: `get_language_model(arch, len(vocab), config, drop_mult)`, in
    ULMFiT's layer groups. `pretrained`: start from fastai's WT103 weights (`URLs.WT103_FWD`) or from
    `pretrained_fnames=(weights, itos)` (names in `path/model_dir`, or paths), mapped onto the data's
    vocabulary, with every group but the last frozen."""
    if not isinstance(data, TextLMDataBunch):
        raise FastbaseError(f"language_model_learner needs a TextLMDataBunch, got {type(data).__name__}.")
    if arch is not AWD_LSTM:
        raise FastbaseError(f"fastbase.text builds AWD_LSTM models; got arch={arch!r}.")
    config = dict(ifnone(config, awd_lstm_lm_config))
    kwargs = {"vocab_sz": len(data.vocab), "config": config, "drop_mult": float(drop_mult)}
    model = get_language_model(**kwargs)
    learn = LanguageLearner(data, model, split_func=awd_lstm_lm_split, **learn_kwargs)
    learn.model_spec = model_spec(get_language_model, kwargs)
    if pretrained or pretrained_fnames is not None:
        wgts, itos = _pretrained_files(learn, pretrained_fnames)
        load_pretrained(learn.model, wgts, itos, data.vocab.itos)
        learn.model.to(data.device)
        learn.freeze()
    return learn


def text_classifier_learner(data: TextClasDataBunch, arch=AWD_LSTM, bptt: int = 70, max_len: int = 70 * 20,
                            config: dict | None = None, drop_mult: float = 1.0, lin_ftrs=None, ps=None,
                            **learn_kwargs) -> RNNLearner:
    """An `RNNLearner` classifier for `data`: `get_text_classifier` (documents read `bptt` tokens at
    a time, the last `max_len` kept) in ULMFiT's layer groups. Load a fine-tuned encoder with
    `load_encoder` (which freezes all but the head), then unfreeze gradually."""
    if not isinstance(data, TextClasDataBunch):
        raise FastbaseError(f"text_classifier_learner needs a TextClasDataBunch, got {type(data).__name__}.")
    if arch is not AWD_LSTM:
        raise FastbaseError(f"fastbase.text builds AWD_LSTM models; got arch={arch!r}.")
    config = dict(ifnone(config, awd_lstm_clas_config))
    kwargs = {"vocab_sz": len(data.vocab), "n_class": data.c, "bptt": bptt, "config": config,
              "drop_mult": float(drop_mult), "lin_ftrs": None if lin_ftrs is None else list(lin_ftrs),
              "ps": None if ps is None else list(ps), "pad_idx": data.pad_idx, "max_len": max_len}
    model = get_text_classifier(**kwargs)
    learn = RNNLearner(data, model, split_func=awd_lstm_clas_split, **learn_kwargs)
    learn.model_spec = model_spec(get_text_classifier, kwargs)
    return learn
