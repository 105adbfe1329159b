"""Layer 5: the Learner: the training loop over a model and a DataBunch, the optimizer wrapper
with layer groups, metrics, saving and export."""
