"""Layer 2: DataBunch, the generic container of training, validation and test DataLoaders.

Knows nothing about images: it moves batches to the device, applies batch transforms and
normalisation, and tells the Learner about classes and the loss that suits the labels.
"""
