"""Layer 5 (helper of the Learner): a trained model leaves the framework, and predictions in bulk.

`export_torchscript` and `export_onnx` write one file holding the model *with its input
normalisation*: it takes raw images, float in [0, 1], `(batch, 3, h, w)` at the training size (any
batch size), and returns probabilities (softmax, or sigmoid for multi-label; `probs=False` gives
the logits). What a program needs to use it (classes, mean/std, input size, resize method, what
the output means) travels inside the file as JSON: TorchScript `_extra_files['metadata.json']`,
ONNX `metadata_props`; `read_metadata(path)` reads either. Each export is checked against the
model in PyTorch at batch sizes 1 and 3 before it is kept.

`predict_items` predicts over a folder or a list of files in batches, decoding the next batch in
threads while the model runs; a file that cannot be read gets no prediction and is named in a
warning, and does not stop the others. It takes the Learner duck-typed (`model`, `data`,
`loss_func`), so it needs nothing above this layer.
"""
from __future__ import annotations

import copy
import importlib.util
import json
import os
import pathlib
import warnings
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from functools import partial
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from . import __version__
from .core import FastbaseError, Path, num_cpus
from .data import BadFilesError, DataError, DatasetType
from .files import atomic_write
from .metrics import loss_activation
from .progress import progress_bar, progress_disabled, progress_mode

__all__ = ["Denormalize", "DeployError", "DeployModel", "Predictions", "deploy_metadata", "export_onnx",
           "export_torchscript", "item_files", "predict_batch", "predict_items", "read_metadata"]

METADATA_FILE = "metadata.json"  # the TorchScript extra file that holds the metadata


class DeployError(FastbaseError):
    """A model that cannot be exported for deployment, or an export that does not reproduce it."""


class Denormalize(nn.Module):
    """`y * std + mean` channel-wise, clamped to [0, 1]: the outputs of a model whose targets were
    normalised (`normalize(stats, do_y=True)`, images as targets) back to images, as `predict` gives them."""

    def __init__(self, mean, std, n_dims: int = 4):
        super().__init__()
        shape = (1, -1) + (1,) * (n_dims - 2)
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32).view(shape))
        self.register_buffer("std", torch.as_tensor(std, dtype=torch.float32).view(shape))

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return (y * self.std + self.mean).clamp(0.0, 1.0)


class DeployModel(nn.Module):
    """`model` with the input normalisation before it and the activation after it: raw inputs
    (images float in [0, 1], `(n, 3, h, w)`) -> `output(activation(model((x - mean) / std)))`.
    `output` is the identity, or a `Denormalize` when the targets were normalised (image outputs)."""

    def __init__(self, model: nn.Module, mean, std, activation: nn.Module, n_dims: int = 4,
                 output: nn.Module | None = None):
        super().__init__()
        shape = (1, -1) + (1,) * (n_dims - 2)  # broadcast over dim 1 (channels), as `Normalizer`
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32).view(shape))
        self.register_buffer("std", torch.as_tensor(std, dtype=torch.float32).view(shape))
        self.model, self.activation = model, activation
        self.output = nn.Identity() if output is None else output

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.output(self.activation(self.model((x - self.mean) / self.std)))


def _activation_module(learn, probs: bool) -> tuple[nn.Module, str]:
    """The Learner's prediction activation as a module that exports, and its name for the metadata."""
    if not probs:
        return nn.Identity(), "none"
    act = loss_activation(learn.loss_func)
    if isinstance(act, partial) and act.func is F.softmax:
        return nn.Softmax(dim=act.keywords.get("dim", -1)), "softmax"
    if act is torch.sigmoid:
        return nn.Sigmoid(), "sigmoid"
    probe = torch.zeros(1)
    if act(probe) is probe:  # the identity: the loss compares raw outputs (e.g. regression)
        return nn.Identity(), "none"
    if isinstance(act, nn.Module):
        return act, type(act).__name__
    raise DeployError(f"The loss {learn.loss_func!r} turns outputs into predictions with {act!r}, which cannot be "
                      "exported; pass probs=False to export the raw outputs (logits).")


def _input_shape(learn, shape=None) -> tuple[int, ...]:
    """One input without the batch axis: `shape` when given, else a validation batch's, else
    (3, h, w) from an image bunch's `size` (a Learner from `load_learner` has no loaders)."""
    data = learn.data
    if shape is not None:
        return tuple(int(s) for s in shape)
    if not data.inference_only and data.valid_dl is not None and len(data.valid_dl):
        return tuple(data.one_batch(DatasetType.Valid)[0].shape[1:])
    size = data.input_spec()["size"]
    if size is not None:
        return (3, *size)
    raise DeployError("Cannot tell the input size of this model: pass input_shape=(3, h, w), the size of one "
                      "input without the batch axis.")


def _norm_xy(data) -> tuple[bool, bool]:
    """Whether the data normalise their inputs (`do_x`) and their targets (`do_y`)."""
    norm = data.norm
    return (True, False) if norm is None else (norm.do_x, norm.do_y)


def deploy_metadata(learn, shape, activation: str) -> dict:
    """What a program needs to feed the exported model and read its output, as plain data. With
    `normalize(do_x=False)` the inputs go in unnormalised ("normalization": None); with `do_y=True`
    the export denormalises its outputs ("output"."denormalized": the targets' mean/std)."""
    data = learn.data
    stats, spec = data.stats, data.input_spec()
    do_x, do_y = _norm_xy(data)
    out_norm = {"mean": list(stats[0]), "std": list(stats[1])} if stats is not None and do_y else None
    return {
        "format": "fastbase-deploy/1", "fastbase_version": __version__,
        "classes": None if data.classes is None else [str(c) for c in data.classes],
        "multi_label": bool(data.multi_label),
        "input": {"name": "input", "shape": ["batch", *shape], "dtype": "float32", "range": [0.0, 1.0],
                  "layout": "NCHW" if len(shape) == 3 else None,
                  "size": spec["size"], "resize_method": spec["resize_method"],
                  "padding_mode": spec["padding_mode"]},
        "normalization": None if stats is None or not do_x else {"mean": list(stats[0]), "std": list(stats[1])},
        "output": {"name": "output", "activation": activation, "denormalized": out_norm,
                   "meaning": "images in [0, 1], the targets' scale" if out_norm else
                   {"softmax": "class probabilities", "sigmoid": "per-class probabilities"}.get(
                       activation, "raw model outputs (logits)")},
    }


def _deploy_model(learn, probs: bool, shape) -> tuple[DeployModel, dict]:
    shape = _input_shape(learn, shape)
    activation, name = _activation_module(learn, probs)
    stats = learn.data.stats
    do_x, do_y = _norm_xy(learn.data)
    n_in = shape[0] if shape else 1
    mean, std = (stats[0], stats[1]) if stats is not None and do_x else ([0.0] * n_in, [1.0] * n_in)
    output = Denormalize(stats[0], stats[1], n_dims=len(shape) + 1) if stats is not None and do_y else None
    model = copy.deepcopy(learn.model).cpu().eval()  # the Learner's own model stays where it is
    wrapper = DeployModel(model, mean, std, activation, n_dims=len(shape) + 1, output=output).eval()
    return wrapper, deploy_metadata(learn, shape, name)


def _target(learn, fname) -> pathlib.Path:
    return Path(fname) if isinstance(fname, pathlib.PurePath) else learn.path / fname


def _check(run, wrapper: DeployModel, shape, file) -> None:
    """The exported file gives the PyTorch model's outputs at batch sizes 1 and 3 (the batch axis is free)."""
    for n in (1, 3):
        x = torch.rand(n, *shape, generator=torch.Generator().manual_seed(n))
        with torch.no_grad():
            expected = wrapper(x)
        got = torch.as_tensor(run(x))
        if got.shape != expected.shape or not torch.allclose(got, expected, atol=1e-4, rtol=1e-3):
            diff = (got - expected).abs().max().item() if got.shape == expected.shape else f"shape {tuple(got.shape)}"
            raise DeployError(f"The exported {file.name} does not reproduce the model at batch size {n} "
                              f"(difference {diff}); it was not kept. Report this with the model's definition.")


def _checked(file: pathlib.Path, check) -> None:
    """Run `check`; an export that fails it is deleted, so no wrong file is left to deploy."""
    try:
        check()
    except DeployError:
        file.unlink(missing_ok=True)
        raise


# --- TorchScript ---------------------------------------------------------------------------------
@contextmanager
def _quiet_jit():
    """TorchScript works, but PyTorch marks it deprecated on every call: the docs say it once."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*torch\.jit.*deprecated", category=FutureWarning)
        yield


def export_torchscript(learn, fname="export.pt", probs: bool = True, input_shape=None,
                       check: bool = True) -> pathlib.Path:
    """Write the model, normalisation and activation as TorchScript to `fname` (relative to
    `learn.path`). Scripted when the model allows it (any input size works), else traced at the
    training size. Load with `torch.jit.load(path)`; `read_metadata(path)` gives the metadata."""
    file = _target(learn, fname)
    wrapper, meta = _deploy_model(learn, probs, input_shape)
    shape = meta["input"]["shape"][1:]
    with _quiet_jit():
        try:
            module = torch.jit.script(wrapper)
        except Exception:  # noqa: BLE001 -- scripting rejects Python it cannot compile in many ways
            module = torch.jit.trace(wrapper, (torch.rand(2, *shape),), check_trace=False)
        extra = {METADATA_FILE: json.dumps(meta)}
        atomic_write(file, lambda tmp: torch.jit.save(module, str(tmp), _extra_files=extra))
        if check:
            _checked(file, lambda: _check(torch.jit.load(str(file)), wrapper, shape, file))
    return file


# --- ONNX ----------------------------------------------------------------------------------------
def _need(module: str) -> None:
    if importlib.util.find_spec(module) is None:
        raise DeployError(f"ONNX export needs the package {module!r}: pip install 'fastbase[onnx]' (onnx, "
                          "onnxscript and onnxruntime).")


def export_onnx(learn, fname="export.onnx", opset: int = 18, probs: bool = True, input_shape=None,
                dynamo: bool | None = None, check: bool = True) -> pathlib.Path:
    """Write the model, normalisation and activation as ONNX (`opset`) to `fname`, with a free batch
    axis; input 'input', output 'output'. `dynamo` None uses PyTorch's torch.export-based exporter
    when `onnxscript` is installed, else its older TorchScript-based one. Checked with onnxruntime
    against PyTorch when onnxruntime is installed."""
    _need("onnx")
    file = _target(learn, fname)
    wrapper, meta = _deploy_model(learn, probs, input_shape)
    shape = meta["input"]["shape"][1:]
    dynamo = importlib.util.find_spec("onnxscript") is not None if dynamo is None else dynamo
    if dynamo:
        _need("onnxscript")
    atomic_write(file, lambda tmp: _onnx_export(wrapper, shape, tmp, opset, dynamo, meta))
    if check and importlib.util.find_spec("onnxruntime") is not None:
        import onnxruntime

        session = onnxruntime.InferenceSession(str(file), providers=["CPUExecutionProvider"])
        _checked(file, lambda: _check(lambda x: session.run(None, {"input": x.numpy()})[0], wrapper, shape, file))
    return file


def _onnx_export(wrapper, shape, tmp, opset: int, dynamo: bool, meta: dict) -> None:
    import onnx

    example = (torch.rand(2, *shape),)  # not 1: the exporter would take a batch of 1 for a constant
    names = {"input_names": ["input"], "output_names": ["output"], "opset_version": opset}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", (DeprecationWarning, FutureWarning))  # the legacy exporter's notice
        if dynamo:
            torch.onnx.export(wrapper, example, str(tmp), dynamo=True, external_data=False, verbose=False,
                              dynamic_shapes=({0: torch.export.Dim("batch")},), **names)
        else:
            torch.onnx.export(wrapper, example, str(tmp), dynamo=False,
                              dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}}, **names)
    model = onnx.load(str(tmp))
    del model.metadata_props[:]
    for key, value in meta.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, json.dumps(value)
    onnx.save(model, str(tmp))


def read_metadata(path) -> dict:
    """The metadata dict an export wrote into a TorchScript (.pt) or ONNX (.onnx) file."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise DeployError(f"No file {path}.")
    with open(path, "rb") as f:
        zipped = f.read(2) == b"PK"  # TorchScript files are zip archives
    if zipped:
        files = {METADATA_FILE: ""}
        with _quiet_jit():
            torch.jit.load(str(path), map_location="cpu", _extra_files=files)
        return json.loads(files[METADATA_FILE] or "{}")
    _need("onnx")
    import onnx

    return {p.key: json.loads(p.value) for p in onnx.load(str(path), load_external_data=False).metadata_props}


# --- predictions in bulk ---------------------------------------------------------------------------
class Predictions(NamedTuple):
    """`files` in order; `classes[i]` the predicted label (a list of labels for multi-label data, the
    index when the data have no class names, None when the file could not be read); `probs` the
    `(n_files, c)` probabilities on the CPU, a row of NaN for an unreadable file."""
    files: list
    classes: list
    probs: torch.Tensor


def item_files(data, items) -> list:
    """A folder -> its item files as `data.item_files` finds them (for images: `get_image_files`, the
    files training would read), sorted; one file -> [file]; anything else -> the list of its items
    (files, PIL images, tensors)."""
    if isinstance(items, (str, os.PathLike)):
        path = Path(items)
        if path.is_file():
            return [path]
        if not path.is_dir():
            raise DataError(f"{path} is neither a folder nor a file.")
        files = data.item_files(path)
        if not files:
            raise DataError(f"No item files in {path} (or its subfolders).")
        return files
    return list(items)


def _load(data, item):
    """(batch of one, None), or (None, why it cannot be read): one bad file must not stop the others."""
    try:
        return data.one_item(item)[0], None
    except Exception as e:  # noqa: BLE001 -- decoders raise OSError, ValueError, SyntaxError, struct.error...
        return None, f"{type(e).__name__}: {e}"


def predict_batch(model: nn.Module, activation, xs: list) -> torch.Tensor:
    """The probabilities `(n, c)`, float on the CPU, of the inputs `xs` (batches of one, as
    `DataBunch.one_item` makes them) in one forward pass of `model` under `torch.inference_mode`;
    `activation` is the loss's (`metrics.loss_activation`). `predict_items` and `fastbase serve` use it."""
    with torch.inference_mode():
        return activation(model(torch.cat(xs))).float().cpu()


def predict_items(learn, items, bs: int = 64, thresh: float = 0.5, progress: bool | None = None,
                  num_threads: int | None = None, errors: dict | None = None) -> Predictions:
    """Predictions for every item (see `item_files`) in batches of `bs`, as `Learner.predict` makes
    them one by one. `progress` (default: on unless the Learner is silent) shows a bar. An item that
    cannot be read gets no prediction; why goes into `errors` (index -> reason) when it is given,
    else into a warning."""
    data, model = learn.data, learn.model
    files = item_files(data, items)
    if not files:
        raise DataError("Nothing to predict: the list of items is empty.")
    activation = loss_activation(learn.loss_func)
    chunks = [files[i:i + bs] for i in range(0, len(files), bs)]
    show = not (progress_disabled() if learn.silent is None else learn.silent) if progress is None else progress
    bar = _bar(len(chunks)) if show and chunks else None
    probs, unread = [None] * len(files), {}
    model.eval()
    with ThreadPoolExecutor(num_threads or min(8, num_cpus())) as pool:
        pending = [pool.submit(_load, data, item) for item in chunks[0]] if chunks else []
        for k, chunk in enumerate(chunks):
            loaded = [job.result() for job in pending]
            nxt = chunks[k + 1] if k + 1 < len(chunks) else []  # decode the next batch while the model runs
            pending = [pool.submit(_load, data, item) for item in nxt]
            ok = [i for i, (x, _) in enumerate(loaded) if x is not None]
            unread.update({k * bs + i: why for i, (x, why) in enumerate(loaded) if x is None})
            if ok:
                out = predict_batch(model, activation, [loaded[i][0] for i in ok])
                for i, row in zip(ok, out):
                    probs[k * bs + i] = row
            if bar is not None:
                bar.update(k + 1)
    if bar is not None:
        bar.on_iter_end()
    if errors is not None:
        errors.update(unread)
    return _collect(learn, files, probs, unread, thresh, warn=errors is None)


def _bar(n: int):
    """A bar over `n` batches, or None where output is plain lines (a log file, CI)."""
    if progress_mode() == "plain":
        return None
    bar = progress_bar(range(n))
    bar.update(0)
    return bar


def _collect(learn, files, probs, errors, thresh, warn: bool = True) -> Predictions:
    if len(errors) == len(files):
        bad = [(files[i], why) for i, why in sorted(errors.items())]
        listing = "\n".join(f"  {fn}: {why}" for fn, why in bad[:10])
        raise BadFilesError(f"None of the {len(files)} items could be read:\n{listing}", bad)
    width = next(p for p in probs if p is not None).shape
    nan = torch.full(width, float("nan"))
    table = torch.stack([nan if p is None else p for p in probs]) if probs else torch.empty(0)
    labels = learn.data.decode_preds(table, thresh)
    classes = [None if i in errors else label for i, label in enumerate(labels)]
    if errors and warn:
        listing = "\n".join(f"  {files[i]}: {why}" for i, why in sorted(errors.items()))
        warnings.warn(f"{len(errors)} of {len(files)} items could not be read; they have no prediction (class "
                      f"None, probabilities NaN):\n{listing}", stacklevel=3)
    return Predictions(files, classes, table)
