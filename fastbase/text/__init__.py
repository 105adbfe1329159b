"""Layer 6: text and ULMFiT (lessons 3-imdb and 7-human-numbers): tokenizing with spaCy's rules
(`Tokenizer`, `Vocab`), text in the data block API (`TextList`, `label_for_lm`), the language-model
and classifier DataBunches, the AWD-LSTM, `language_model_learner` and `text_classifier_learner`.
Needs spaCy (`pip install 'fastbase[text]'`).

Modules: `rules` (fastai's text rules and special tokens), `tokenizer`, `vocab` (Vocab, compact
TokenIds), `data` (Text, TextList), `loaders` (the language-model streams, SortishSampler,
pad_collate), `bunch` (the DataBunches), `models` (AWD_LSTM and its heads), `pretrained` (fastai's
file layout), `learner`, `interpret` (TextClassificationInterpretation), `pretrain` (a command that
pretrains a language model on a corpus).

This package's namespace is also the public one for notebooks: `from fastbase.text import *` gives
the names below and everything of `fastbase.basics` (`untar_data`, `URLs`, `np`, `torch`, `nn`,
`pd`, `plt`...), through the explicit `__all__` (`fastbase.namespace`).
"""
from .. import basics
from ..namespace import notebook_namespace
from .bunch import TextClasDataBunch, TextDataBunch, TextLMDataBunch
from .data import LMLabelList, Text, TextList, open_text
from .interpret import TextClassificationInterpretation, attention_html
from .learner import (
    LanguageLearner,
    Perplexity,
    RNNLearner,
    RNNTrainer,
    awd_lstm_clas_split,
    awd_lstm_lm_split,
    decode_spec_tokens,
    language_model_learner,
    text_classifier_learner,
)
from .loaders import LMDataset, LMLoader, SortishSampler, SortSampler, TextClasDataset, pad_collate
from .models import (
    AWD_LSTM,
    BatchNorm1dFlat,
    EmbeddingDropout,
    LinearDecoder,
    MultiBatchEncoder,
    PoolingLinearClassifier,
    RNNDropout,
    SequentialRNN,
    WeightDropout,
    awd_lstm_clas_config,
    awd_lstm_lm_config,
    get_language_model,
    get_text_classifier,
)
from .pretrained import convert_weights, load_pretrained, read_itos, write_itos
from .rules import (
    BOS,
    EOS,
    FLD,
    PAD,
    TK_MAJ,
    TK_REP,
    TK_UP,
    TK_WREP,
    UNK,
    deal_caps,
    default_post_rules,
    default_pre_rules,
    default_spec_tok,
    fix_html,
    replace_all_caps,
    replace_rep,
    replace_wrep,
    rm_useless_spaces,
    spec_add_spaces,
)
from .tokenizer import BaseTokenizer, SpacyTokenizer, TextError, Tokenizer
from .vocab import TokenIds, Vocab

__all__ = [  # the text API, sorted; notebook_namespace adds fastbase.basics' names
    "AWD_LSTM", "BOS", "EOS", "FLD", "PAD", "TK_MAJ", "TK_REP", "TK_UP", "TK_WREP", "UNK", "BaseTokenizer",
    "BatchNorm1dFlat", "EmbeddingDropout", "LMDataset", "LMLabelList", "LMLoader", "LanguageLearner",
    "LinearDecoder", "MultiBatchEncoder", "Perplexity", "PoolingLinearClassifier", "RNNDropout", "RNNLearner",
    "RNNTrainer", "SequentialRNN", "SortSampler", "SortishSampler", "SpacyTokenizer", "Text", "TextClasDataBunch",
    "TextClasDataset", "TextClassificationInterpretation", "TextDataBunch", "TextError", "TextLMDataBunch",
    "TextList", "TokenIds", "Tokenizer", "Vocab", "WeightDropout", "attention_html", "awd_lstm_clas_config",
    "awd_lstm_clas_split", "awd_lstm_lm_config", "awd_lstm_lm_split", "convert_weights", "deal_caps",
    "decode_spec_tokens", "default_post_rules", "default_pre_rules", "default_spec_tok", "fix_html",
    "get_language_model", "get_text_classifier", "language_model_learner", "load_pretrained", "open_text",
    "pad_collate", "read_itos", "replace_all_caps", "replace_rep", "replace_wrep", "rm_useless_spaces",
    "spec_add_spaces", "text_classifier_learner", "write_itos",
]
_LAZY = {"ClassificationInterpretation": "fastbase.interpret:ClassificationInterpretation"}  # above this layer
__getattr__, __dir__ = notebook_namespace(__name__, __all__, lazy=_LAZY, base=basics)
