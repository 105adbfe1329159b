"""Layer 6: images: opening and decoding, transforms, ImageDataBunch, models and cnn_learner.

This package's namespace is also the public one for notebooks (`from fastbase.vision import *`).
"""
