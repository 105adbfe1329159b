"""fastbase: a layered training framework on PyTorch in the style of fastai v1.

Layers, each importing only from those below it:
core -> datasets -> data -> callback -> callbacks/ -> learner -> vision/ -> interpret -> cli.
Notebooks use `from fastbase.vision import *`; library code imports explicitly.
"""
__version__ = "0.1.0"
