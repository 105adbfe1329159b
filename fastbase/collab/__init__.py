"""Layer 6: collaborative filtering (lesson 4): ratings of items by users in a pandas DataFrame,
`CollabDataBunch.from_df`, `collab_learner` (`EmbeddingDotBias` or `EmbeddingNN`), the learnt
biases and factors by name (`learn.bias`, `learn.weight`) and `pca`.

Modules: `data` (encoding names as codes, the DataBunch), `models`, `learner`. This namespace is
also the public one for notebooks: `from fastbase.collab import *` gives the collab API and what
`from fastbase.basics import *` gives (the Learner, callbacks, `untar_data`, `np`, `torch`, `nn`,
`pd`, `plt`...), through the explicit `__all__` below (`fastbase.namespace`); `load_learner` is the
one that gives a `CollabLearner` back. pandas is needed (the `tabular` extra) once a DataFrame is read; `plt` and
`pd` are loaded on first use, as in `fastbase.basics`.
"""
from .. import basics
from ..namespace import notebook_namespace
from .data import UNKNOWN, CollabDataBunch, RatingsDataset, UnknownNameWarning, encode
from .learner import CollabLearner, collab_learner, load_learner, pca
from .models import EmbeddingDotBias, EmbeddingNN, emb_sz_rule, embedding

__all__ = [  # the collab API, sorted; notebook_namespace adds fastbase.basics' names
    "UNKNOWN", "CollabDataBunch", "CollabLearner", "EmbeddingDotBias", "EmbeddingNN", "RatingsDataset",
    "UnknownNameWarning", "collab_learner", "emb_sz_rule", "embedding", "encode", "load_learner", "pca",
]
__getattr__, __dir__ = notebook_namespace(__name__, __all__, base=basics)
