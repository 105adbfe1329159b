"""Files shipped inside fastbase as `fastbase._datasets`: the dataset catalogue and the embedded digits archive."""
