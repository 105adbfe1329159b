"""Layer 5: what a Learner does with a model once it has one: evaluation and inference (`validate`,
`get_preds`, `predict`, `TTA`, `predict_folder`, `show_results`) and its files (`save`, `load`,
`export`, `export_torchscript`, `export_onnx`). `Learner` (fastbase.learner) builds on this class
and adds training; what a task's data must provide here is the task contract (`fastbase.data.task`).
"""
from __future__ import annotations

import gc
import pathlib

import torch
from torch import nn

from . import deploy
from .callback import GatherPreds, ValidationStats
from .core import FastbaseError, Path, distrib_barrier, ifnone, listify, object_ref
from .data import DatasetType
from .export import export_state, safe_load, save_state, write_state
from .loop import Loop, eval_grad_mode, split_batch
from .metrics import as_metric, loss_activation, per_item_loss

__all__ = ["Inference"]


class Inference(Loop):
    """Evaluation, inference and files over `self.model`, `self.data`, `self.loss_func` and
    `self.metrics` (set by `Learner.__init__`)."""

    # --- evaluation and inference ---------------------------------------------------------------
    def validate(self, dl=None, callbacks=None, metrics=None) -> list[float] | None:
        """[loss, *metrics] over `dl` (default: the validation set), averaged over items; None if cancelled."""
        dl = self.data.dl(DatasetType.Valid) if dl is None else dl
        stats = ValidationStats([as_metric(m) for m in (self.metrics if metrics is None else listify(metrics))])
        with self._using([stats, *self.callbacks, *listify(callbacks)]):
            self._do_validate(dl)
            return self.valid_values

    def get_preds(self, ds_type: DatasetType = DatasetType.Valid, with_loss: bool = False, activ=None, dl=None):
        """[predictions, targets(, per-item losses)] on the CPU for a whole set, in order. Predictions
        go through `activ` (default: softmax for cross-entropy, sigmoid for BCE, else none)."""
        dl = self.data.dl(ds_type) if dl is None else dl
        gather = GatherPreds(per_item_loss(self.loss_func) if with_loss else None)
        with self._using([*self.callbacks, gather]):
            self._do_validate(dl)
        if not gather.preds:
            raise FastbaseError("No predictions: the data set is empty.")
        activ = ifnone(activ, loss_activation(self.loss_func))
        result = [activ(torch.cat(gather.preds)).cpu(), torch.cat(gather.targets).cpu() if gather.targets else None]
        if with_loss:
            result.append(torch.cat(gather.losses).cpu())
        return result

    def predict(self, item, thresh: float = 0.5):
        """(label item, decoded tensor, probabilities) for one raw item, as fastai v1: a `Category` and
        its class index; multi-label: a `MultiCategory` of the classes above `thresh` and its multi-hot
        tensor; regression (no classes, not cross-entropy): a `FloatItem` and the raw outputs; a task
        with its own items decodes its own (`data.decode_prediction`; segmentation: an `ImageSegment`)."""
        x, _ = self.data.one_item(item)
        self.model.eval()
        with eval_grad_mode(self.model):
            pred = self.model(*x) if isinstance(x, (list, tuple)) else self.model(x)
        probs = loss_activation(self.loss_func)(pred)[0].detach().float().cpu().clone()  # a normal tensor
        label, decoded = self.data.decode_prediction(probs, thresh, self._regression())
        return self.data.item_prediction(item, label), decoded, probs

    def _regression(self) -> bool:
        """Whether predictions are values rather than classes (no classes, not cross-entropy)."""
        ce = isinstance(self.loss_func, nn.CrossEntropyLoss)
        return self.data.classes is None and not self.data.multi_label and not ce

    def pred_batch(self, ds_type: DatasetType = DatasetType.Valid, batch=None, reconstruct: bool = False,
                   activ=None, thresh: float = 0.5):
        """The predictions for one batch, on the CPU, through `activ` (default: the loss's activation):
        `batch` (an `(x, y)` as the loaders give it, e.g. from iterating `data.fix_dl`), else the first
        of `ds_type`. `reconstruct=True` gives items instead, as `predict` decodes them (a `Category`,
        an `ImageSegment`, an `Image` with `.save(path)`...), as fastai v1."""
        xb, _ = split_batch(self.data.one_batch(ds_type, detach=False, cpu=False) if batch is None else batch)
        self.model.eval()
        with eval_grad_mode(self.model):
            pred = self.model(*xb)
        preds = ifnone(activ, loss_activation(self.loss_func))(pred).detach().float().cpu().clone()
        if not reconstruct:
            return preds
        regression = self._regression()
        return [self.data.decode_prediction(p, thresh, regression)[0] for p in preds]

    def show_results(self, ds_type: DatasetType = DatasetType.Valid, rows: int = 5, **kwargs):
        """Draw items of one `ds_type` batch titled with their prediction and target; the DataBunch
        draws (`data.show_results`), so it works for single-label, multi-label and regression alike."""
        return self.data.show_results(self, ds_type=ds_type, rows=rows, **kwargs)

    def destroy(self) -> None:
        """Free what this Learner holds (model, optimizer, data, and so GPU memory); it cannot train or
        predict afterwards. For notebooks that try several models in a row."""
        self.model = None
        self.opt = None
        self.data = None
        self.callbacks = []  # a callback may hold memory too, e.g. cached features
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def predict_folder(self, items, bs: int = 64, thresh: float = 0.5, progress: bool | None = None):
        """`Predictions(files, classes, probs)` for a folder of images or a list of items, in batches
        of `bs`; an unreadable file gets class None and NaN probabilities and is named in a warning."""
        return deploy.predict_items(self, items, bs=bs, thresh=thresh, progress=progress)

    def TTA(self, beta: float = 0.4, scale: float = 1.35, ds_type: DatasetType = DatasetType.Valid, n_aug: int = 4):
        """Test-time augmentation: (beta * plain predictions + (1 - beta) * the mean of `n_aug` passes
        over the same items through the training-time batch transforms, targets). The data give the
        augmented loader (`data.tta_dl(ds_type, scale)`; vision zooms by `scale`)."""
        preds, targets = self.get_preds(ds_type)[:2]
        aug_dl = self.data.tta_dl(ds_type, scale=scale)
        augmented = torch.stack([self.get_preds(dl=aug_dl)[0] for _ in range(n_aug)]).mean(0)
        return beta * preds + (1 - beta) * augmented, targets

    # --- saving, loading, export ----------------------------------------------------------------
    def _model_file(self, name) -> pathlib.Path:
        if isinstance(name, pathlib.PurePath):
            path = Path(name)
            # fastai v1 adds `.pth` to a path too (lesson7-superres-imagenet loads `path_pets/.../models/'2b'`,
            # which `save('2b')` wrote as 2b.pth): the path as given when it exists, else the one with `.pth`
            with_pth = path.with_name(path.name + ".pth")
            return path if path.exists() or not with_pth.exists() else with_pth
        return self.path / self.model_dir / f"{name}.pth"

    def save(self, name, with_opt: bool = True) -> pathlib.Path:
        """Write {'model': state dict, 'opt': optimizer state} to `path/model_dir/name.pth` (or to the
        Path `name`) atomically; loads back with `weights_only=True`."""
        return write_state(save_state(self.model, self.opt if with_opt else None), self._model_file(name))

    def load(self, name, with_opt: bool = True, strict: bool = True, device=None) -> Inference:
        """Load what `save` wrote (or a bare model state dict); refuses files that could run code."""
        distrib_barrier()  # under torchrun, wait until rank 0 has written the file
        state = safe_load(self._model_file(name), ifnone(device, self.data.device))
        self.model.load_state_dict(state.get("model", state), strict=strict)
        if with_opt and "opt" in state:
            if self.opt is None:
                self.create_opt()
            self.opt.load_state_dict(state["opt"])
        return self

    def export(self, fname="export.pkl") -> pathlib.Path:
        """Write what inference needs as plain data (not a pickled Learner): the model's state dict and
        `model_spec`, the DataBunch's export state, the loss name, the Learner's class (so `load_learner`
        rebuilds this kind of Learner) and the fastbase version, to `path/fname`. `load_learner` reads
        it back with `weights_only=True`."""
        file = Path(fname) if isinstance(fname, pathlib.PurePath) else self.path / fname
        state = export_state(self.model, self.model_spec, self.data, self.loss_func, learner=object_ref(type(self)))
        return write_state(state, file)

    def export_torchscript(self, fname="export.pt", probs: bool = True, **kwargs) -> pathlib.Path:
        """The model for deployment as TorchScript: raw images in (float 0..1, NCHW, any batch size),
        probabilities out (logits with `probs=False`), normalisation and classes inside (`fastbase.deploy`)."""
        return deploy.export_torchscript(self, fname, probs=probs, **kwargs)

    def export_onnx(self, fname="export.onnx", opset: int = 18, probs: bool = True, **kwargs) -> pathlib.Path:
        """The same as `export_torchscript`, as ONNX; needs `pip install 'fastbase[onnx]'`."""
        return deploy.export_onnx(self, fname, opset=opset, probs=probs, **kwargs)
