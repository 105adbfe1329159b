"""Layer 5: a Learner's files: model saves (`Learner.save`/`load`) and the export for inference
(`Learner.export`, `load_learner`), written as plain data (tensors, str, numbers, lists, dicts) and
read back with `torch.load(weights_only=True)`, so no file fastbase reads can run code, and an
export does not break when the code that trained it moves (nothing is pickled by class).

This module does not import the Learner: `learner.py` calls `save_state`, `read_state`,
`export_state` and `read_export` here, and builds the Learner itself in `load_learner`.
"""
from __future__ import annotations

import pickle
import re

import torch
from torch import nn

from . import __version__
from .core import FastbaseError, Path, import_ref, is_main_process, object_ref
from .file_checks import DamagedFileError, check_digest, check_format, file_size, read_problem, with_digest
from .files import atomic_write

__all__ = ["DamagedFileError", "ExportError", "UnsafeFileError", "checked_model_spec", "export_state", "loss_ref",
           "model_spec", "read_export", "safe_load", "save_state", "write_state"]


class ExportError(FastbaseError):
    """The Learner cannot be exported so that it loads elsewhere; the message says what to set."""


class UnsafeFileError(FastbaseError):
    """A model file holds Python objects beyond tensors and plain data, so fastbase refuses to load it."""


def write_state(state: dict, file) -> Path:
    """`torch.save(state)` to `file` atomically, with the digest `safe_load` checks
    (`file_checks.with_digest`); under torchrun only rank 0 writes (every process gets the path back)."""
    file = Path(file)
    if not is_main_process():
        return file
    state = with_digest(state)
    return atomic_write(file, lambda tmp: torch.save(state, tmp), size=_tensor_bytes(state))


def save_state(model: nn.Module, opt=None) -> dict:
    """What `Learner.save` writes: {'model': state dict, 'opt': optimizer state (when given), version}."""
    state = {"model": model.state_dict(), "fastbase_version": __version__}
    if opt is not None:
        state["opt"] = opt.state_dict()
    return state


def model_spec(factory, kwargs: dict, **extra) -> dict:
    """How `load_learner` rebuilds a model: {'factory': 'module:qualname' of `factory` (`object_ref`),
    'kwargs': the plain arguments to call it with, **extra} (e.g. `layer_group_split`)."""
    return {"factory": object_ref(factory), "kwargs": kwargs, **extra}


def export_state(model: nn.Module, model_spec, data, loss_func, learner: str | None = None) -> dict:
    """What `Learner.export` writes: the model's state dict (on the CPU) and how to rebuild it
    (`model_spec`), the DataBunch's export state, the loss by name, the Learner's class as
    'module:qualname' (`learner`; None: the plain Learner) and the fastbase version."""
    return {"fastbase_version": __version__, "model_spec": checked_model_spec(model_spec),
            "data": data.export_state(), "loss_func": loss_ref(loss_func), "learner": learner,
            "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()}}


def read_export(file, device=None) -> tuple[nn.Module, object, object, dict, type | None]:
    """(model, inference-only DataBunch, loss function or None, model_spec, Learner class or None for
    the plain Learner) from what `export_state` wrote; a clear error when `file` is not an export or
    names code that is not installed."""
    state = safe_load(file, "cpu")
    if not isinstance(state, dict) or not {"model_spec", "state_dict", "data"} <= set(state):
        raise DamagedFileError(f"{file} ({file_size(file)}) is not a fastbase export: it holds "
                               f"{_outline(state)}, not the dict that Learner.export writes.")
    spec = state["model_spec"]
    try:
        factory, data_cls = import_ref(spec["factory"]), import_ref(state["data"]["type"])
        learner_cls = import_ref(state["learner"]) if state.get("learner") else None
    except FastbaseError as e:
        raise ExportError(f"Cannot rebuild the Learner in {file}: {e}. Install the package that defines it.") from e
    except (KeyError, TypeError) as e:
        raise DamagedFileError(f"{file} ({file_size(file)}) is not a complete fastbase export: no {e} in "
                               "it.") from e
    model = factory(**spec.get("kwargs", {}))
    model.load_state_dict(state["state_dict"])
    data = data_cls.load_export_state(state["data"], device=device)
    loss = state.get("loss_func")
    loss = import_ref(loss) if loss else None
    loss = loss() if isinstance(loss, type) else loss
    return model, data, loss, spec, learner_cls


def safe_load(file, map_location):
    """`torch.load(file, weights_only=True)`, checked: a missing, empty, cut short, foreign, damaged
    (digest mismatch) or newer file raises `DamagedFileError` naming it and its size; one holding
    Python objects beyond plain data raises `UnsafeFileError`."""
    file = Path(file)
    if not file.is_file():
        near = sorted(p.name for p in file.parent.glob("*")) if file.parent.is_dir() else []
        raise FastbaseError(f"No file {file}" + (f"; that folder holds {near[:10]}." if near else "."))
    problem = read_problem(file)
    if problem:
        raise DamagedFileError(f"Cannot load {file} ({file_size(file)}): {problem}.")
    try:
        state = torch.load(file, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        reason = _unpickler_reason(e)
        name = re.search(r"GLOBAL (\S+)", reason)
        if name is None or not all(part.isidentifier() for part in name[1].split(".")):
            # not a reference to code that could exist: bytes the unpickler cannot read
            raise DamagedFileError(f"Cannot load {file} ({file_size(file)}): it is damaged ({reason}).") from e
        raise UnsafeFileError(f"Refused to load {file} ({file_size(file)}): it names Python code ({name[1]}), which "
                              "a file of plain tensors and data never does: it was not written by fastbase, or it is "
                              "damaged. If you trust it completely, open it with torch.load(..., weights_only=False) "
                              "yourself.") from e
    except Exception as e:  # torch's zip reader and unpickler fail on damage in many ways
        problem = read_problem(file, e) or f"it is damaged ({type(e).__name__}: {str(e).splitlines()[0][:160]})"
        raise DamagedFileError(f"Cannot load {file} ({file_size(file)}): {problem}.") from e
    check_format(state, file)
    check_digest(state, file)
    return state


def _tensor_bytes(obj) -> int:
    """The bytes of the tensors in a nested state: about the size of its file, for a disk-full error."""
    if isinstance(obj, torch.Tensor):
        return obj.nelement() * obj.element_size()
    if isinstance(obj, dict):
        return sum(_tensor_bytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(_tensor_bytes(v) for v in obj)
    return 0


def _unpickler_reason(error: Exception) -> str:
    """The line of torch's weights-only error that says what it refused (its first lines are advice)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    found = [line for line in lines if "WeightsUnpickler error" in line or "GLOBAL" in line]
    reason = (found or lines or [type(error).__name__])[0].replace("WeightsUnpickler error: ", "")
    return reason.split(" was not an allowed")[0][:200]


def _outline(state) -> str:
    """A short description of what a file held, for the error when it is not what was expected."""
    if isinstance(state, dict):
        return f"a dict with keys {sorted(map(str, state))[:8]}"
    return f"a {type(state).__name__}"


def loss_ref(loss_func) -> str | None:
    """'module:name' of the loss (its class for an nn.Module), or None when it cannot be imported back."""
    try:
        return object_ref(type(loss_func) if isinstance(loss_func, nn.Module) else loss_func)
    except FastbaseError:
        return None


_PLAIN = (str, int, float, bool, type(None))


def _is_plain(value) -> bool:
    if isinstance(value, _PLAIN):
        return True
    if isinstance(value, (list, tuple)):
        return all(_is_plain(v) for v in value)
    return isinstance(value, dict) and all(isinstance(k, str) and _is_plain(v) for k, v in value.items())


def checked_model_spec(spec) -> dict:
    how = ("Set learn.model_spec = {'factory': 'package.module:function', 'kwargs': {...}} naming an importable "
           "function or class that builds this model from plain arguments (cnn_learner sets it for you).")
    if spec is None:
        raise ExportError(f"This Learner has no model_spec, so export cannot say how to rebuild the model. {how}")
    factory = spec.get("factory") if isinstance(spec, dict) else None
    if callable(factory):
        try:
            factory = object_ref(factory)
        except FastbaseError as e:
            raise ExportError(f"The model factory {factory!r} cannot be imported by another program: {e} {how}") from e
    if not isinstance(factory, str):
        raise ExportError(f"model_spec needs a 'factory'; got {spec!r}. {how}")
    module, _, qualname = factory.partition(":")
    if module == "__main__" or "<" in qualname:
        raise ExportError(f"The model factory {factory!r} is a lambda, a local function or defined in __main__, so "
                          f"another program cannot import it. Move it into an importable module. {how}")
    try:
        found = import_ref(factory)
    except FastbaseError as e:
        raise ExportError(f"The model factory {factory!r} cannot be imported ({e}). {how}") from e
    if not callable(found):
        raise ExportError(f"The model factory {factory!r} is not callable. {how}")
    spec = {**spec, "factory": factory, "kwargs": spec.get("kwargs", {})}
    if not _is_plain(spec):
        raise ExportError(f"model_spec for {factory!r} must hold plain data only (str, numbers, bools, None, lists, "
                          f"dicts); got {spec!r}.")
    return spec
