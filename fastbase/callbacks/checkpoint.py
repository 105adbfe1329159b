"""Layer 4: checkpoints that let a run killed at any moment continue exactly where it stopped.

`Checkpoint` saves, every epoch or every n batches, all that the rest of a fit depends on: weights,
optimizer state, the state of every callback (the one-cycle position, the recorder's history...),
the epoch and batch reached, and the random state: Python, NumPy, torch (CPU and CUDA) and the
generators of the training loader (its shuffling) and of its batch transforms (augmentation).
`Learner.fit(..., resume=file)` / `fit_one_cycle(..., resume=file)` reads it back (`ResumeCallback`).

Why a mid-epoch resume can repeat the same batches: a DataLoader draws an epoch's order from its
generator (or from torch's global generator when it has none) when the epoch's iterator starts, so
the checkpoint keeps the random state of that moment too. The resumed run puts it back, starts the
iterator, fetches and drops the batches already trained on, then puts back the state of the moment
of the save. Persistent worker processes draw a seed from the generator only when they start: the
checkpoint records which loaders had them running, and the resumed run starts those first.

Files are written to a temporary file in the same folder, fsynced, then renamed (`os.replace`), and
framed by a header with their size and SHA-256: a file that is cut short or damaged is never loaded;
the previous one (`keep` > 1) is used instead, or the error says what was found.
"""
from __future__ import annotations

import hashlib
import io
import os
import pathlib
import pickle
import re
import warnings

import numpy as np
import torch

from .. import __version__
from ..callback import Callback, Order
from ..core import FastbaseError, Path, is_main_process
from ..files import atomic_write
from ..state import loader_generators, rng_states, set_rng_states

__all__ = ["Checkpoint", "CheckpointError", "ResumeCallback", "checkpoint_file", "load_checkpoint", "save_checkpoint"]

FORMAT = 1
_HEADER = re.compile(rb"FASTBASE-CHECKPOINT v(\d+) sha256=([0-9a-f]{64}) size=(\d+)\n")


class CheckpointError(FastbaseError):
    """A checkpoint that cannot be used: missing, incomplete, damaged, or from a different run setup."""


def _live_loaders(data) -> list[str]:
    """Loaders whose persistent worker processes are running (their DataLoader keeps its iterator in
    `_iterator`): starting them drew a seed from the loader's generator, which the next epochs do not."""
    live = []
    for name, loader in data.named_dls.items():
        raw = loader.dl
        if raw.persistent_workers and raw.num_workers > 0 and \
                getattr(raw, "_iterator", None) is not None:
            live.append(name)
    return live


def _epoch_start(learn) -> dict:
    """What the next training iterator will start from: the random state and the running workers."""
    return {"rng": rng_states(loader_generators(learn.data.train_dl)), "live": _live_loaders(learn.data)}


# --- files ------------------------------------------------------------------------------------
def checkpoint_file(name, folder) -> pathlib.Path:
    """A Path is used as it is; a name becomes `folder/name.pth` (as `Learner.save` does); True is
    the Checkpoint callback's default name, 'checkpoint'."""
    if name is True:
        name = "checkpoint"
    if isinstance(name, pathlib.PurePath):
        return Path(name)
    name = str(name)
    return Path(folder) / (name if name.endswith(".pth") else f"{name}.pth")


def _older(path: pathlib.Path, i: int) -> pathlib.Path:
    """checkpoint.pth -> checkpoint.1.pth (the previous one), checkpoint.2.pth..."""
    return path if i == 0 else path.with_name(f"{path.stem}.{i}{path.suffix}")


def _older_files(path: pathlib.Path) -> list[pathlib.Path]:
    found = []
    for p in path.parent.glob(f"{path.stem}.*{path.suffix}"):
        middle = p.name[len(path.stem) + 1:len(p.name) - len(path.suffix)]
        if middle.isdigit():
            found.append((int(middle), p))
    return [p for _, p in sorted(found)]


def _write_payload(f, header: bytes, payload) -> None:
    f.write(header)
    f.write(payload)


def save_checkpoint(state: dict, path, keep: int = 1) -> pathlib.Path:
    """Write `state` (plain data and tensors) to `path` atomically, framed by its size and SHA-256.
    With `keep` > 1 the previous files move to `name.1.pth`, `name.2.pth`... (newest first)."""
    path = Path(path)
    buffer = io.BytesIO()
    torch.save(state, buffer)
    payload = buffer.getbuffer()
    header = b"FASTBASE-CHECKPOINT v%d sha256=%s size=%d\n" % (
        FORMAT, hashlib.sha256(payload).hexdigest().encode(), len(payload))

    def write(tmp):
        with open(tmp, "wb") as f:
            _write_payload(f, header, payload)

    def rotate():  # the oldest kept first, so nothing is overwritten
        for i in range(keep - 1, 0, -1):
            if _older(path, i - 1).exists():
                os.replace(_older(path, i - 1), _older(path, i))

    atomic_write(path, write, before_replace=rotate, size=len(header) + len(payload))
    for stale in _older_files(path)[max(0, keep - 1):]:
        stale.unlink()
    return path


def _read(file: pathlib.Path) -> dict:
    try:
        with open(file, "rb") as f:
            header, payload = f.readline(256), f.read()
    except OSError as e:
        raise CheckpointError(f"{file}: cannot be read ({e}).") from e
    where = f"{file} ({len(header) + len(payload):,} bytes)"
    match = _HEADER.fullmatch(header)
    if match is None:
        what = "it is empty" if not header else f"it starts {header[:20]!r}, not a checkpoint header"
        raise CheckpointError(f"{where} is not a fastbase checkpoint ({what}): write checkpoints with the Checkpoint "
                              "callback; Learner.load reads files written by Learner.save.")
    version = int(match[1])
    digest = match[2].decode()
    size = int(match[3])
    if version > FORMAT:
        raise CheckpointError(f"{where} was written by a newer fastbase (checkpoint format {version}); upgrade.")
    if len(payload) != size:
        raise CheckpointError(f"{where} is incomplete: {len(payload)} of its {size} bytes are there (a copy cut "
                              "short, or a disk that filled up).")
    if hashlib.sha256(payload).hexdigest() != digest:
        raise CheckpointError(f"{where} is damaged: its content does not match the SHA-256 in its header.")
    try:
        return torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(f"Refused to load {where}: it holds Python objects beyond tensors and plain data "
                              f"({str(e).splitlines()[0][:200]}).") from e


def load_checkpoint(path) -> tuple[dict, pathlib.Path]:
    """(state, file) of the newest complete checkpoint: `path`, else the older ones `keep` left
    (`name.1.pth`, ...), with a warning that says why the newer ones were passed over."""
    path = Path(path)
    problems = []
    for file in [path, *_older_files(path)]:
        if not file.exists():
            problems.append(f"{file} does not exist")
            continue
        try:
            state = _read(file)
        except CheckpointError as e:
            problems.append(str(e))
            continue
        if problems:
            warnings.warn(f"Resuming from the older checkpoint {file}: " + "; ".join(problems), stacklevel=3)
        return state, file
    near = sorted(p.name for p in path.parent.glob("*.pth")) if path.parent.is_dir() else []
    raise CheckpointError("No complete checkpoint to resume from: " + "; ".join(problems) +
                          (f". {path.parent} holds {near[:10]}." if near else "."))


def _plain(value):
    """NumPy values as Python numbers or tensors, so callback states load with `weights_only=True`."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, tuple):  # a named tuple too: weights_only loads plain tuples only
        return tuple(_plain(v) for v in value)
    if isinstance(value, np.ndarray):
        return torch.from_numpy(value.copy())
    if isinstance(value, np.generic):
        return value.item()
    return value


def _named(callbacks) -> dict:
    """{name: callback}; a repeated name gets `_1`, `_2`..."""
    named, counts = {}, {}
    for cb in callbacks:
        n = counts[cb.name] = counts.get(cb.name, -1) + 1
        named[cb.name if n == 0 else f"{cb.name}_{n}"] = cb
    return named


# --- the callbacks -------------------------------------------------------------------------------
class Checkpoint(Callback):
    """Saves what `fit(..., resume=path)` needs to continue this fit exactly: at the end of every
    epoch (after validation), and with `every=n` also after every n-th training batch. `path` is a
    name (`learn.path/models/<name>.pth`, default 'checkpoint') or a Path; `keep` files are kept,
    the newest under `path`. On the Learner (`callbacks=[...]`) it saves every fit, probe runs
    (`lr_find`, `overfit`, `sanity_check`) excepted. Saving does not touch the random state."""
    order = Order.CHECKPOINT

    def __init__(self, path=None, every="epoch", keep: int = 1):
        if every != "epoch" and not (isinstance(every, int) and every > 0):
            raise CheckpointError(f"every must be 'epoch' or a number of batches > 0, got {every!r}.")
        if not (isinstance(keep, int) and keep >= 1):
            raise CheckpointError(f"keep must be an int >= 1, got {keep!r}.")
        self.path = path
        self.every = every
        self.keep = keep
        self.file = self.last_saved = None

    def before_fit(self):
        learn = self.learn
        self.file = checkpoint_file(self.path or "checkpoint", learn.path / learn.model_dir)

    def before_train(self):
        # a resumed epoch starts from the state of the original one, which ResumeCallback put on learn.dl
        self._start = getattr(self.learn.dl, "epoch_start", None) or _epoch_start(self.learn)

    def after_batch(self):
        learn = self.learn
        if self.every == "epoch" or not learn.training:
            return
        done = learn.iter + 1
        if (learn.epoch * len(learn.data.train_dl) + done) % self.every == 0:
            self.save(batch=done, start=self._start)

    def after_epoch(self):
        self.save(batch=None, start=_epoch_start(self.learn))

    def save(self, batch: int | None, start: dict) -> pathlib.Path:
        """Write the checkpoint: `batch` training batches of `learn.epoch` done, or the whole epoch (None).
        Under torchrun only rank 0 writes (the weights are the same on every rank); a resume restores
        its random state on every rank, so a resumed multi-process run is not bitwise the same."""
        learn = self.learn
        if not is_main_process():
            return self.file
        state = {"format": FORMAT, "fastbase_version": __version__, "epoch": learn.epoch, "batch": batch,
                 "n_epochs": learn.n_epochs, "n_batches": len(learn.data.train_dl),
                 "model": learn.model.state_dict(), "opt": learn.opt.state_dict(),
                 "callbacks": {name: _plain(cb.state_dict()) for name, cb in _named(learn.cb.callbacks).items()
                               if cb.state_dict()},
                 "rng": rng_states(loader_generators(learn.data.train_dl)), "start": start}
        self.last_saved = save_checkpoint(state, self.file, self.keep)
        return self.last_saved


class ResumeCallback(Callback):
    """Continues a fit from a checkpoint (added by `fit(..., resume=path)`): restores weights,
    optimizer, callback states and random state, starts at the saved epoch (`start_epoch`) and
    skips the batches of that epoch already trained on: its loader drops them, and `learn.start_iter`
    tells the loop which batch number comes first. Reads and checks the file when created."""
    order = Order.RESUME

    def __init__(self, path, learn=None, n_epochs: int | None = None):
        """`path`: a file, a name in `learn.path/models`, or True for the default 'checkpoint'. With
        `learn` and `n_epochs`, checks now that the checkpoint fits that Learner and fit, so that a wrong
        one fails before anything changes."""
        if learn is not None:
            path = checkpoint_file(path, learn.path / learn.model_dir)
        self.state, self.file = load_checkpoint(path)
        state = self.state
        if state.get("format") != FORMAT or "model" not in state:
            raise CheckpointError(f"{self.file} is not a checkpoint written by fastbase's Checkpoint callback.")
        if n_epochs is not None and n_epochs != state["n_epochs"]:
            raise CheckpointError(f"{self.file} was saved during a fit of {state['n_epochs']} epochs; resume with the "
                                  f"same number (got {n_epochs}): the learning-rate schedule depends on it.")
        if learn is not None:
            self._check(learn)
        self.skip = state["batch"] or 0
        self.start_epoch = state["epoch"] if state["batch"] is not None else state["epoch"] + 1

    def _check(self, learn) -> None:
        state, n_batches = self.state, len(learn.data.train_dl)
        if n_batches != state["n_batches"]:
            raise CheckpointError(f"{self.file} was saved with {state['n_batches']} training batches per epoch; this "
                                  f"data gives {n_batches}. Resume with the same data and batch size.")
        mine = {k: tuple(v.shape) for k, v in learn.model.state_dict().items()}
        saved = {k: tuple(v.shape) for k, v in state["model"].items()}
        if mine != saved:
            diff = sorted(set(mine.items()) ^ set(saved.items()))[:5]
            raise CheckpointError(f"The model does not match the one saved in {self.file}: parameters differ in "
                                  f"name or shape, e.g. {diff}.")

    def before_fit(self):
        learn, state = self.learn, self.state
        self._check(learn)
        learn.model.load_state_dict(state["model"])
        learn.opt.load_state_dict(state["opt"])
        self._load_callbacks(state["callbacks"])
        data = learn.data
        for name in state["start"]["live"]:  # start the workers the original run had running
            iter(data.named_dls[name].dl)
        set_rng_states(state["rng"], loader_generators(data.train_dl))
        self._first = True

    def _load_callbacks(self, states: dict) -> None:
        named = _named(self.learn.cb.callbacks)
        missing = sorted(set(states) - set(named))
        if missing:
            warnings.warn(f"{self.file} holds the state of callbacks {missing}, which this fit does not have: they "
                          "do not continue (resume with the same fit call and callbacks).", stacklevel=2)
        for name, state in states.items():
            if name in named:
                named[name].load_state_dict(state)

    def before_train(self):
        if not self._first:
            return
        self._first, learn = False, self.learn
        learn.dl = _ResumedLoader(learn.dl, self.skip, self.state["rng"] if self.skip else None, self.state["start"])
        learn.start_iter = self.skip  # the loop numbers the batches from there, in this epoch only

    def cleanup_fit(self):
        self.state = None  # let go of the weights it holds
        if self.learn is not None:
            self.learn.start_iter = 0  # in case the resumed epoch never got to its batches


class _ResumedLoader:
    """The training loader of the epoch a run resumes in. Mid-epoch (`after`: the random state of the
    save), it starts its iterator from the epoch's saved random state, fetches and drops the first
    `skip` batches, restores `after` and yields the rest. `epoch_start` is what the next Checkpoint
    of this epoch saves."""

    def __init__(self, dl, skip: int, after: dict | None, start: dict):
        self.dl = dl
        self.skip = skip
        self.after = after
        self.epoch_start = start

    def __len__(self):
        return len(self.dl)

    def __getattr__(self, name):  # the rest is the wrapped DeviceDataLoader's
        if name == "dl":
            raise AttributeError(name)
        return getattr(self.dl, name)

    def __iter__(self):
        raw = self.dl.dl
        if self.after is not None:  # mid-epoch: replay the epoch from its start
            set_rng_states(self.epoch_start["rng"], loader_generators(self.dl))
        if "train" not in self.epoch_start["live"] and getattr(raw, "_iterator", None) is not None:
            # the original run started its workers here, drawing their base seed first: draw it too
            torch.empty((), dtype=torch.int64).random_(generator=raw.generator)
        batches = iter(raw)
        for i in range(self.skip):
            try:
                next(batches)
            except StopIteration:
                raise CheckpointError(f"The training loader gave only {i} batches; the checkpoint was saved "
                                      f"after batch {self.skip}.") from None
        if self.after is not None:
            set_rng_states(self.after, loader_generators(self.dl))
        for batch in batches:
            yield self.dl.proc_batch(batch)
