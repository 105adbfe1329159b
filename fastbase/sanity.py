"""Layer 5: `sanity_check`, the checks of "A Recipe for Training Neural Networks" (Karpathy, 2019)
that catch a broken setup in seconds, before a long run hides it.

Five checks, each with a verdict and a message that says what was seen and what to look at:
the inputs vary (a constant batch trains nothing), the training labels are not all one class, the
batch transforms keep each item's label (and batches hold a mix of classes), the loss before training
is near ln(n_classes) (a model that has not learned gives every class about the same probability),
and the model can overfit one small batch (`fastbase.debug.overfit`). Weights, optimizer state and
every random state are put back afterwards. `Learner.sanity_check` calls `sanity_check` here; it
takes the Learner duck-typed.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.data import TensorDataset

from .debug import overfit

__all__ = ["SanityCheck", "SanityReport", "sanity_check"]


@dataclass
class SanityCheck:
    """One check: `passed` is True, False, or None when it does not apply to this data or loss."""
    name: str
    passed: bool | None
    message: str

    def __str__(self):
        mark = {True: "PASS", False: "FAIL", None: "SKIP"}[self.passed]
        return f"[{mark}] {self.name}: {self.message}"


class SanityReport:
    """The checks of `sanity_check`, in order; true when none failed. `report['initial loss']` finds
    one by name; `failed` lists those that failed."""

    def __init__(self, checks):
        self.checks = list(checks)

    def __bool__(self):
        return all(c.passed is not False for c in self.checks)

    def __iter__(self):
        return iter(self.checks)

    def __len__(self):
        return len(self.checks)

    def __getitem__(self, key) -> SanityCheck:
        if isinstance(key, int):
            return self.checks[key]
        for check in self.checks:
            if check.name == key:
                return check
        raise KeyError(f"No check named {key!r}; the checks are {[c.name for c in self.checks]}.")

    @property
    def failed(self) -> list[SanityCheck]:
        return [c for c in self.checks if c.passed is False]

    def __str__(self):
        n_failed = len(self.failed)
        head = "Sanity check: all passed" if not n_failed else f"Sanity check: {n_failed} of {len(self)} failed"
        return "\n".join([head, *(str(c) for c in self.checks)])

    def __repr__(self):
        return f"SanityReport({', '.join(f'{c.name}={c.passed}' for c in self.checks)})"


def sanity_check(learn, n_steps: int = 40, lr: float = 1e-2, n_items: int = 8, loss_tol: float = 1.5,
                 show: bool = True) -> SanityReport:
    """Run the checks on `learn` (see the module's docstring) and print the report when `show`.
    `n_steps`, `lr`, `n_items`: how the one-batch overfit runs; `loss_tol`: how far (in nats) above
    ln(c) the initial loss may be. A fresh head whose outputs have a std of s starts near ln(c) + s^2/2:
    1.5 lets a standard head (s about 1) pass and catches a last layer that starts large (s >= 2).
    Nothing the Learner holds is changed."""
    with learn.probe():
        x, y = _first_batch(learn.data.train_dl.new(num_workers=0))
        checks = [_guarded("data not constant", _check_data, x),
                  _guarded("labels not all one class", _check_labels, learn.data),
                  _guarded("augmentation keeps labels", _check_augmentation, learn.data, y),
                  _guarded("initial loss", _check_initial_loss, learn, x, y, loss_tol),
                  _guarded("overfit one batch", _check_overfit, learn, n_steps, lr, n_items)]
    report = SanityReport(checks)
    if show:
        print(report)
    return report


def _guarded(name: str, check, *args) -> SanityCheck:
    """The check's (passed, message); an error inside it is a failure that names the error."""
    try:
        passed, message = check(*args)
    except Exception as e:  # noqa: BLE001  (a check that crashes on this setup has found a problem: report it)
        passed, message = False, f"raised {type(e).__name__}: {str(e)[:300]}"
    return SanityCheck(name, passed, message)


def _first_batch(dl):
    x, y = next(iter(dl))
    x = x[0] if isinstance(x, (list, tuple)) else x
    y = y[0] if isinstance(y, (list, tuple)) else y
    return x, y


def _batch_labels(dl, n_batches: int) -> torch.Tensor:
    ys = []
    for _, y in dl:
        ys.append(y[0] if isinstance(y, (list, tuple)) else y)
        if len(ys) == n_batches:
            break
    return torch.cat(ys)


def _is_labels(y) -> bool:
    return isinstance(y, torch.Tensor) and not y.is_floating_point() and y.dim() == 1


# --- the checks: each returns (passed, message) ----------------------------------------------------
def _check_data(x: torch.Tensor):
    x = x.detach().float()
    bad = (~torch.isfinite(x)).sum().item()
    if bad:
        return False, (f"{bad} input values of a training batch are NaN or infinite: check the files and the "
                       "normalisation.")
    if x.shape[0] > 1 and (x.std(dim=0) == 0).all():
        return False, (f"all {x.shape[0]} items of a training batch are identical: the dataset returns the same "
                       "input for every index (check how items are read).")
    dims = [d for d in range(x.dim()) if d != 1] if x.dim() > 1 else [0]
    std = x.std(dim=dims) if x.numel() > 1 else torch.zeros(1)
    constant = (std == 0).nonzero().view(-1).tolist()
    if len(constant) == std.numel() or (x.dim() > 2 and constant):  # images: every channel must vary
        what = "the whole batch" if len(constant) == std.numel() else f"channel(s) {constant}"
        return False, (f"{what} of a training batch is constant (std 0): the model cannot learn from it. Check the "
                       "images (all black?), a transform that blanks them, or a normalisation with a huge std.")
    note = f"; {len(constant)} constant feature(s) {constant[:10]}" if constant else ""
    return True, f"per-channel std of a training batch from {std.min().item():.3g} to {std.max().item():.3g}{note}"


def _dataset_labels(ds):
    """All the training labels when the dataset holds them as a tensor (no items are read), else None."""
    y = getattr(ds, "y", None)
    if isinstance(y, torch.Tensor):
        return y
    if isinstance(ds, TensorDataset) and len(ds.tensors) > 1:
        return ds.tensors[-1]
    return None


def _check_labels(data):
    y, where = _dataset_labels(data.train_ds), "training labels"
    if y is None:  # read them from a few batches, in order, without augmentation
        dl = data.fix_dl if data.fix_dl is not None else data.train_dl
        y = _batch_labels(dl.new(num_workers=0), n_batches=8)
        where = f"labels of the first {len(y)} training items"
    classes = data.classes
    if _is_labels(y):
        counts = torch.bincount(y.cpu().clamp(min=0))
        present = counts.nonzero().view(-1).tolist()
        name = (lambda i: repr(classes[i]) if classes is not None and 0 <= i < len(classes) else str(i))
        if y.min() < 0 or (data.c is not None and y.max() >= data.c):
            return False, (f"{where} run from {y.min().item()} to {y.max().item()}, but the model has {data.c} "
                           "outputs: labels must be class indices 0..c-1.")
        if len(present) < 2:
            return False, (f"all {len(y)} {where} are class {name(present[0])}: a model learns nothing but to "
                           "predict it. Check the labelling (folder names, the regex, the label column).")
        small, large = min(present, key=lambda i: counts[i]), max(present, key=lambda i: counts[i])
        missing = [] if data.c is None else [name(i) for i in range(data.c) if i not in present]
        note = f"; classes with no training item: {missing[:10]}" if missing else ""
        spread = f"{counts[small].item()} each" if counts[small] == counts[large] else \
            f"fewest {name(small)} ({counts[small].item()}), most {name(large)} ({counts[large].item()})"
        return True, f"{len(present)} classes in {len(y)} {where}; {spread}{note}"
    rows = y.reshape(len(y), -1).float()
    if len(rows) > 1 and (rows == rows[0]).all():
        return False, f"all {len(y)} {where} are the same ({rows[0][:10].tolist()}): there is nothing to learn."
    return True, f"{len(y)} {where} vary"


def _check_augmentation(data, shuffled_y):
    """The same items through the training transforms and without them must have the same labels."""
    if data.fix_dl is None:
        return None, "no Fix loader (the training items without augmentation) to compare with"
    augmented = data.train_dl.new(num_workers=0, shuffle=False, drop_last=False)
    _, y_aug = _first_batch(augmented)
    _, y_plain = _first_batch(data.fix_dl.new(num_workers=0, batch_size=augmented.batch_size))
    n = min(len(y_aug), len(y_plain))
    if y_aug.shape[1:] != y_plain.shape[1:] or not torch.equal(y_aug[:n].cpu(), y_plain[:n].cpu()):
        shown = "all"
        if y_aug.shape[1:] == y_plain.shape[1:]:
            shown = (y_aug[:n].cpu() != y_plain[:n].cpu()).reshape(n, -1).any(1).nonzero().view(-1).tolist()[:10]
        return False, (f"the training transforms change the labels of items {shown} "
                       f"of the first {n}: a transform must move an image and keep its label (or change both "
                       "together, as mixup does in a callback).")
    labels = _dataset_labels(data.train_ds)
    if _is_labels(shuffled_y) and _is_labels(labels) and len(shuffled_y) > 1:
        share = torch.bincount(labels.cpu().clamp(min=0)).float() / len(labels)
        one_class_chance = (share ** len(shuffled_y)).sum().item()  # P(a random batch holds one class)
        if len(shuffled_y.unique()) == 1 and one_class_chance < 1e-3:
            return False, (f"a training batch of {len(shuffled_y)} holds class {shuffled_y[0].item()} only, which a "
                           f"shuffled batch does with probability {one_class_chance:.1e}: is the training loader "
                           "shuffled? Sorted batches make training swing from class to class.")
    return True, f"the first {n} training items keep their labels through the training transforms"


def _check_initial_loss(learn, x, y, loss_tol: float):
    """Before training, a classifier's loss should be near ln(c) (single label) or ln(2) (multi-label)."""
    model = learn.model
    model.train()  # BatchNorm on batch statistics, as training starts; dropout off: it inflates the outputs
    for module in model.modules():
        if isinstance(module, nn.modules.dropout._DropoutNd):
            module.eval()
    with torch.no_grad():
        pred = model(x)
        loss = learn.loss_func(pred, y)
    loss = float(loss.float().mean())
    if not math.isfinite(loss):
        return False, f"the loss of a first batch is {loss}: check the inputs, the model's output and the loss."
    if learn.data.multi_label and pred.dim() == 2:
        expected, what = math.log(2), "ln(2), a model unsure of every label"
    elif _is_labels(y) and pred.dim() == 2 and pred.shape[1] >= 2:
        expected, what = math.log(pred.shape[1]), f"ln({pred.shape[1]}), uniform over the classes"
    else:
        return None, f"loss {loss:.4g} at the start (no expected value for this kind of target)"
    if loss > expected + loss_tol:
        return False, (f"the loss before training is {loss:.3f}, far above {expected:.3f} = {what}. The model starts "
                       "out confidently wrong: its last layer's weights or bias are too large (scale them down or "
                       "zero them), or the loss does not take raw scores (logits) as its input.")
    note = "" if loss > expected / 2 else " (lower: a trained or pretrained model)"
    return True, f"loss before training {loss:.3f}, expected about {expected:.3f} = {what}{note}"


def _check_overfit(learn, n_steps: int, lr: float, n_items: int):
    n_items = min(n_items, len(learn.data.train_ds))
    result = overfit(learn, n_items=n_items, steps=n_steps, lr=lr, seed=0, restore=True)
    losses = [v for v in result.losses if math.isfinite(v)]
    if not losses:
        return False, f"every loss of {result.steps} steps on {n_items} items was NaN or infinite: lower lr ({lr})."
    start, best = losses[0], min(losses)
    if result.reached or best <= 0.1 * start:
        return True, f"the loss on {n_items} items fell from {start:.3f} to {best:.3g} in {result.steps} steps"
    trainable = sum(p.numel() for p in learn.model.parameters() if p.requires_grad)
    why = "no parameter is trainable (all frozen)" if trainable == 0 else \
        "a learning rate of 0 or too low, a loss that ignores the predictions or targets, gradients cut " \
        "(detach, no_grad), inputs and labels that do not match, or a model too small"
    return False, (f"the loss on {n_items} items only went from {start:.3f} to {best:.3g} in {result.steps} steps "
                   f"at lr {lr}: a model should memorise a handful of items. Look for {why}.")

