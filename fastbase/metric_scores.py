"""Layer 5 (helper of the Learner): classification metrics computed over the whole validation set,
under fastai v1's names: `ConfusionMatrix`, `Precision`, `Recall`, `FBeta`, `KappaScore`,
`MatthewsCorreff`, `AUROC` (and `auc_roc_score`, `roc_curve`), and `MultiLabelFbeta`.

None of them is a mean of per-batch values, so each keeps the batch's class indexes (or
probabilities, for AUROC) on the device and scores them once at the end of validation with
torchmetrics (imported on first use; `pip install 'fastbase[metrics]'`).
"""
from __future__ import annotations

import warnings

import torch

from .metric_base import MetricError, WholeSetMetric, torchmetrics_functional

__all__ = ["AUROC", "CMScores", "ConfusionMatrix", "FBeta", "KappaScore", "MatthewsCorreff", "MultiLabelFbeta",
           "Precision", "Recall", "auc_roc_score", "roc_curve"]

_AVERAGES = ("binary", "micro", "macro", "weighted", None)


def _class_scores():
    return torchmetrics_functional().classification


class ConfusionMatrix(WholeSetMetric):
    """The (c, c) confusion matrix of single-label predictions (n, c) against class indexes (n,),
    over the whole set: row = actual class, column = predicted class (float counts). The base of
    the scores below; as a metric its value is the matrix, not one number."""

    def __init__(self):
        self.n_classes = 0
        super().__init__()

    def prepare(self, pred, targ):
        if pred.dim() != 2 or targ.reshape(-1).shape[0] != pred.shape[0]:
            raise MetricError(f"{type(self).__name__} scores single-label predictions (n, classes) against one "
                              f"class index per item; got predictions {tuple(pred.shape)} and targets "
                              f"{tuple(targ.shape)}.")
        self.n_classes = max(self.n_classes, pred.shape[-1])
        return pred.argmax(dim=-1), targ.reshape(-1).long()

    def compute(self, preds, targs):
        return _class_scores().multiclass_confusion_matrix(preds, targs, self.n_classes).float()

    @property
    def cm(self) -> torch.Tensor | None:
        """The matrix of what was accumulated so far (fastai v1's attribute)."""
        return self.value


class CMScores(ConfusionMatrix):
    """Scores read from the confusion matrix: `average` is 'binary' (the class `pos_label` of two),
    'micro', 'macro', 'weighted' or None (one score per class), as in scikit-learn."""

    def __init__(self, average: str | None = "binary", pos_label: int = 1, eps: float = 1e-9):
        if average not in _AVERAGES:
            raise MetricError(f"average={average!r} is not one of {list(_AVERAGES)}.")
        self.average, self.pos_label, self.eps = average, pos_label, eps
        super().__init__()

    def _score(self, fn, preds, targs, **kwargs):
        average = self.average
        if average == "binary" and self.n_classes != 2:
            warnings.warn(f"{type(self).__name__}(average='binary') on {self.n_classes} classes: using 'macro'. "
                          "Pass average='macro', 'micro' or 'weighted' for more than two classes.", stacklevel=3)
            average = "macro"
        if average == "binary":
            if self.pos_label not in (0, 1):
                raise MetricError(f"pos_label={self.pos_label!r}: with two classes the positive one is 0 or 1.")
            return fn(preds, targs, num_classes=self.n_classes, average="none", **kwargs)[self.pos_label]
        return fn(preds, targs, num_classes=self.n_classes, average=average or "none", **kwargs)


class Precision(CMScores):
    """Precision: of the items predicted as a class, the share that belong to it."""

    def compute(self, preds, targs):
        return self._score(_class_scores().multiclass_precision, preds, targs)


class Recall(CMScores):
    """Recall: of the items of a class, the share predicted as it."""

    def compute(self, preds, targs):
        return self._score(_class_scores().multiclass_recall, preds, targs)


class FBeta(CMScores):
    """F-beta score of single-label predictions: (1+β²)·P·R / (β²·P + R), with `average` as
    `CMScores` says (fastai v1's default β is 2)."""

    def __init__(self, average: str | None = "binary", pos_label: int = 1, eps: float = 1e-9, beta: float = 2):
        super().__init__(average, pos_label, eps)
        self.beta = beta

    def compute(self, preds, targs):
        return self._score(_class_scores().multiclass_fbeta_score, preds, targs, beta=float(self.beta))


class KappaScore(ConfusionMatrix):
    """Cohen's kappa, the agreement of predictions and targets beyond chance; `weights` None,
    'linear' or 'quadratic' (for ordered classes)."""

    def __init__(self, weights: str | None = None):
        if weights not in (None, "linear", "quadratic"):
            raise MetricError(f"weights={weights!r}: use None, 'linear' or 'quadratic'.")
        self.weights = weights
        super().__init__()

    def compute(self, preds, targs):
        return _class_scores().multiclass_cohen_kappa(preds, targs, self.n_classes, weights=self.weights)


class MatthewsCorreff(ConfusionMatrix):
    """Matthews correlation coefficient (its multi-class form for more than two classes)."""

    def compute(self, preds, targs):
        return _class_scores().multiclass_matthews_corrcoef(preds, targs, self.n_classes)


def auc_roc_score(input: torch.Tensor, targ: torch.Tensor) -> torch.Tensor:
    """Area under the ROC curve of scores `input` (n,) for the positive class against 0/1 targets (n,)."""
    return _class_scores().binary_auroc(input.reshape(-1).float(), targ.reshape(-1).long())


def roc_curve(input: torch.Tensor, targ: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(false positive rate, true positive rate) at each threshold, for scores `input` (n,) and 0/1 targets."""
    fpr, tpr, _ = _class_scores().binary_roc(input.reshape(-1).float(), targ.reshape(-1).long())
    return fpr, tpr


class AUROC(WholeSetMetric):
    """Area under the ROC curve over the whole set. Two outputs (or one logit): the binary AUROC of
    the last class's probability, as fastai v1; more classes: the mean of one-against-rest AUROCs
    (scikit-learn's `roc_auc_score(multi_class='ovr')`)."""

    def prepare(self, pred, targ):
        pred = pred.float()
        probs = pred.reshape(-1).sigmoid() if pred.dim() == 1 or pred.shape[-1] == 1 else pred.softmax(dim=-1)
        return probs, targ.reshape(-1).long()

    def compute(self, preds, targs):
        if preds.dim() == 1:
            return auc_roc_score(preds, targs)
        if preds.shape[-1] == 2:
            return auc_roc_score(preds[:, -1], targs)
        return _class_scores().multiclass_auroc(preds, targs, preds.shape[-1], average="macro")


class MultiLabelFbeta(WholeSetMetric):
    """F-beta of multi-label predictions over the whole set: labels predicted where (the sigmoid of,
    with `sigmoid`) the output is above `thresh`; `average` 'micro' (all labels pooled), 'macro',
    'weighted' or None (one score per label). `eps` is kept for fastai v1's signature: empty labels
    score 0, as in scikit-learn."""

    def __init__(self, beta: float = 2, eps: float = 1e-15, thresh: float = 0.3, sigmoid: bool = True,
                 average: str | None = "micro"):
        if average not in ("micro", "macro", "weighted", None):
            raise MetricError(f"average={average!r} is not one of ['micro', 'macro', 'weighted', None].")
        self.beta, self.eps, self.thresh, self.sigmoid, self.average = beta, eps, thresh, sigmoid, average
        super().__init__()

    def prepare(self, pred, targ):
        if pred.shape != targ.shape:
            raise MetricError(f"MultiLabelFbeta needs one 0/1 target per output: predictions {tuple(pred.shape)}, "
                              f"targets {tuple(targ.shape)}.")
        probs = pred.float().sigmoid() if self.sigmoid else pred.float()
        return (probs > self.thresh).long(), targ.long()  # thresholded here: strictly above, as fastai v1

    def compute(self, preds, targs):
        return _class_scores().multilabel_fbeta_score(preds, targs, float(self.beta), preds.shape[-1],
                                                      average=self.average or "none")
