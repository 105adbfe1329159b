"""Layer 6: fastai v1's `load_learner(path, file='export.pkl', test=...)`: the exported Learner,
with a test set (an ImageList, a folder or a list of image files) for
`learn.get_preds(ds_type=DatasetType.Test)`."""
from __future__ import annotations

from .. import learner

__all__ = ["load_learner"]


def load_learner(path, file="export.pkl", test=None, device=None, fname=None) -> learner.Learner:
    """The Learner that `export` wrote to `path/file` (or the file `path`), ready for `predict`; with
    `test`, its images are the test set."""
    learn = learner.load_learner(path, fname or file, device=device)
    if test is not None:
        learn.data.add_test(test)
    return learn
