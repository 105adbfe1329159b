"""fastbase: a layered training framework on PyTorch in the style of fastai v1.

Each module imports only from its own layer or the layers below it; `tests/test_layers.py` is the
map of layers (and the test that keeps it true). Notebooks use `from fastbase.vision import *`;
library code imports explicitly.
"""
__version__ = "0.1.0"
