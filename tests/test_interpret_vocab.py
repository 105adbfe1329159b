"""Multi-label interpretation (per-label confusion against scikit-learn, plot_multi_top_losses) and
ClassConfusion's images of one confused pair."""
import matplotlib
import numpy as np
import pytest
import torch
from sklearn.metrics import multilabel_confusion_matrix
from tiny_models import make_data, make_learner
from tiny_vision import noise_folder, tiny_arch, tiny_learner

from fastbase.interpret import (
    ClassConfusion,
    ClassificationInterpretation,
    InterpretationError,
    MultiLabelClassificationInterpretation,
)
from fastbase.vision.data import ImageList
from fastbase.vision.learner import cnn_learner

matplotlib.use("Agg")


def test_multi_label_interpretation_counts_each_label_as_scikit_learn():
    learn = make_learner(make_data(multi_label=True))
    interp = MultiLabelClassificationInterpretation.from_learner(learn, thresh=0.4)
    preds, targets = learn.get_preds()
    expected = multilabel_confusion_matrix(targets.numpy().astype(int), (preds > 0.4).numpy().astype(int))
    np.testing.assert_array_equal(interp.confusion_matrix(), expected)
    losses, idxs = interp.top_losses(3)
    assert len(idxs) == 3 and bool((losses[:-1] >= losses[1:]).all())
    label, missed, extra = interp.most_confused()[0]
    assert label in ("a", "b") and missed + extra == max(int(m[1, 0] + m[0, 1]) for m in expected)
    with pytest.raises(InterpretationError, match="needs an ImageDataBunch"):
        interp.plot_multi_top_losses()
    with pytest.raises(InterpretationError, match="single-label"):
        ClassificationInterpretation.from_learner(learn)


def test_plot_multi_top_losses_draws_images_with_their_labels(tmp_path):
    root = noise_folder(tmp_path, per_class=(4, 3))
    data = (ImageList.from_folder(root).split_by_folder()
            .label_from_func(lambda p: f"{p.parent.name} {'even' if int(p.stem[-1]) % 2 == 0 else 'odd'}",
                             label_delim=" ")
            .transform(None, size=16).databunch(bs=4, num_workers=0, seed=0))
    torch.manual_seed(0)
    learn = cnn_learner(data, tiny_arch, pretrained=False, silent=True)
    interp = MultiLabelClassificationInterpretation.from_learner(learn)
    fig, wrong = interp.plot_multi_top_losses(samples=2, save_misclassified=True)
    assert len(fig.axes) == 2 and fig.axes[0].get_title().startswith("predicted:")
    assert all(set(actual) <= set(data.classes) for _, _, actual, _ in wrong)


def test_class_confusion_shows_the_images_of_a_confused_pair(tmp_path):
    learn = tiny_learner(noise_folder(tmp_path))
    interp = ClassificationInterpretation.from_learner(learn)
    confusion = ClassConfusion(interp, ["ants", "bees"], figsize=(4, 4))
    cm = interp.confusion_matrix()
    assert {pair: len(i) for pair, i in confusion.indices.items()} == {("ants", "bees"): cm[0, 1],
                                                                      ("bees", "ants"): cm[1, 0]}
    views = confusion.show()
    assert set(views) == {pair for pair, idxs in confusion.indices.items() if idxs}
    for pair, fig in views.items():
        assert len([ax for ax in fig.axes if ax.images]) == len(confusion.indices[pair])
    with pytest.raises(InterpretationError, match="not classes"):
        ClassConfusion(interp, ["ants", "wasps"])
