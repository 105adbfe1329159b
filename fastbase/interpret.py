"""Layer 7: looking at a trained classifier: top losses, confusion matrix, most confused pairs."""
