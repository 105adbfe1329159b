"""Layer 0: the small helpers every other layer shares.

What lives here: list/None helpers, the fastbase error types, a `Path` with `ls()`,
seeding, the default device and worker count, and the configuration of where
fastbase keeps its data, models and archives. Nothing here knows about datasets,
images, models or training.
"""
from __future__ import annotations

import configparser
import multiprocessing
import os
import pathlib
import random
import shutil
import sys
from collections.abc import Iterable
from types import SimpleNamespace

import numpy as np
import torch
from torch import nn

__all__ = [
    "BN_TYPES",
    "Config",
    "ConfigError",
    "FastbaseError",
    "Path",
    "default_device",
    "default_num_workers",
    "defaults",
    "distrib_barrier",
    "get_config",
    "ifnone",
    "import_ref",
    "is_listy",
    "is_main_process",
    "listify",
    "num_cpus",
    "num_distrib",
    "object_ref",
    "rank_distrib",
    "rank_zero_only",
    "seed_worker",
    "set_seed",
    "shm_size",
    "to_device",
]


BN_TYPES = (nn.modules.batchnorm._BatchNorm,)  # the layers that keep running statistics


class FastbaseError(Exception):
    """Base class of the errors fastbase raises for bad input: the message says what to do."""


class ConfigError(FastbaseError, ValueError):
    """The configuration file or an environment variable holds a value fastbase cannot use."""


class Path(type(pathlib.Path())):
    """A `pathlib.Path` with `ls()`, as course notebooks expect (`path.ls()`).

    A subclass rather than a patch of `pathlib`: joining with `/` keeps the subclass.
    """

    def ls(self) -> list[Path]:
        """The folder's entries, sorted by name."""
        if not self.is_dir():
            raise FastbaseError(f"{self} is not a folder, so it has nothing to list.")
        return sorted(self.iterdir())


def is_listy(x) -> bool:
    """True for lists, tuples and other sequences that are not strings or tensors."""
    return isinstance(x, (list, tuple, range)) or (
        isinstance(x, Iterable) and not isinstance(x, (str, bytes, dict, torch.Tensor, np.ndarray))
        and not hasattr(x, "read"))


def listify(p=None, q=None) -> list:
    """Make `p` a list; with `q`, repeat a single `p` to the length of `q` (fastai v1 semantics).

    `None` -> `[]`, a string or scalar -> `[p]`, an iterable -> `list(p)`; `q` may be an int or a
    collection. A list whose length differs from `q`'s raises, naming both lengths.
    """
    if p is None:
        p = []
    elif isinstance(p, (str, bytes)) or not isinstance(p, Iterable) or isinstance(p, torch.Tensor) and p.dim() == 0:
        p = [p]
    else:
        p = list(p)
    if q is None:
        return p
    n = q if isinstance(q, int) else len(listify(q))
    if len(p) == 1:
        p = p * n
    if len(p) != n:
        raise FastbaseError(f"Expected {n} values to match, got {len(p)}: {p!r}.")
    return p


def noop(x=None, *args, **kwargs):
    """Give back `x`: a do-nothing default for a function argument (fastai v1's `noop`)."""
    return x


def ifnone(a, b):
    """`a` unless it is None, then `b`."""
    return b if a is None else a


def to_device(batch, device):
    """Move a tensor, or the tensors inside nested lists/tuples/dicts, to `device` (non-blocking)."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(b, device) for b in batch)
    return batch


def num_cpus() -> int:
    """The CPUs this process may run on (respects affinity masks and container limits)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def default_device() -> torch.device:
    """CUDA when a GPU is visible (under torchrun, the GPU `cuda:LOCAL_RANK` of this process), else
    Apple's MPS when available, else the CPU."""
    if torch.cuda.is_available():
        local_rank = os.environ.get("LOCAL_RANK", "")
        if local_rank.isdigit() and int(local_rank) < torch.cuda.device_count():
            return torch.device("cuda", int(local_rank))
        return torch.device("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def shm_size() -> int | None:
    """Bytes of shared memory (`/dev/shm`) free, or None where there is no such folder."""
    try:
        return shutil.disk_usage("/dev/shm").free
    except (FileNotFoundError, OSError):
        return None


_MIN_SHM = 256 * 2**20  # below this, worker processes die with 'Bus error' on large batches


def default_num_workers(device: torch.device | str | None = None) -> int:
    """DataLoader workers that suit this machine and the device the model trains on.

    Decoding and augmentation run in the workers, so even when the model trains on the CPU two
    workers keep the first epoch fed; once a loader's items are in fastbase's item cache it loads
    in the main process (`DeviceDataLoader.in_memory`). On 2 cores this default is as fast as the
    best fixed choice for a compute-bound and a loading-bound model, while 1 worker is slower than 0
    (`python bench/data_loader.py`; bench/RESULTS.md). With a GPU the cores are free for decoding. Spawn-based
    platforms (Windows, macOS) and a tiny `/dev/shm` (Docker's 64 MB default) get 0, where workers
    are known to hang or die.
    """
    device = torch.device(device) if device is not None else default_device()
    cpus = num_cpus()
    if multiprocessing.get_start_method(allow_none=True) == "spawn" or sys.platform in ("win32", "darwin"):
        return 0
    if cpus < 2:
        return 0
    workers = min(4, max(2, cpus // 2)) if device.type == "cpu" else min(8, cpus - 1)
    shm = shm_size()
    if workers > 0 and shm is not None and shm < _MIN_SHM:
        import warnings  # imported here: the only function in core that warns
        warnings.warn(f"/dev/shm has only {shm / 2**20:.0f} MB free, too little for DataLoader workers, so fastbase "
                      "loads data in the main process (num_workers=0), which is slower. Give the container more "
                      "shared memory (e.g. `docker run --shm-size=1g`).", RuntimeWarning, stacklevel=2)
        return 0
    return workers


def set_seed(seed: int, deterministic: bool = False) -> int:
    """Seed Python, NumPy and torch (CPU and CUDA); with `deterministic`, also ask torch for
    deterministic algorithms (slower, and some operations then raise instead of running).

    Returns the seed. DataLoaders built by fastbase derive their shuffling and worker seeds from it.
    """
    seed = int(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    # Switching costs seconds (torch imports its compiler stack), so only when the setting changes.
    if deterministic != torch.are_deterministic_algorithms_enabled():
        torch.use_deterministic_algorithms(deterministic, warn_only=False)
    torch.backends.cudnn.deterministic = deterministic
    if deterministic:
        torch.backends.cudnn.benchmark = False
    return seed


def _process_group():
    """torch.distributed when its default process group is initialised, else None."""
    dist = torch.distributed
    return dist if dist.is_available() and dist.is_initialized() else None


def rank_distrib() -> int:
    """This process's rank among the training processes (fastai v1's name): torch.distributed's once
    initialised, else `$RANK` (set by torchrun before the group exists), else 0."""
    dist = _process_group()
    if dist is not None:
        return dist.get_rank()
    rank = os.environ.get("RANK", "")
    return int(rank) if rank.isdigit() else 0


def num_distrib() -> int:
    """How many training processes there are (fastai v1's name): torch.distributed's world size once
    initialised, else `$WORLD_SIZE` (torchrun), else 1."""
    dist = _process_group()
    if dist is not None:
        return dist.get_world_size()
    size = os.environ.get("WORLD_SIZE", "")
    return int(size) if size.isdigit() and int(size) > 0 else 1


def is_main_process() -> bool:
    """True in the process that prints, plots, logs and writes files: rank 0, or the only process."""
    return rank_distrib() == 0


def rank_zero_only(func):
    """Decorator: run `func` only in the main process (rank 0); elsewhere the call does nothing and
    returns None. For output and files that all processes would otherwise write at once."""
    import functools

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        return func(*args, **kwargs) if is_main_process() else None
    return wrapper


def distrib_barrier() -> None:
    """Wait until every training process gets here (e.g. before reading a file rank 0 wrote); a no-op
    in a single process. Every process must call it, or the others wait forever."""
    dist = _process_group()
    if dist is not None and dist.get_world_size() > 1:
        dist.barrier()


def seed_worker(worker_id: int) -> None:
    """`worker_init_fn` for DataLoaders: seed NumPy and `random` in each worker from torch's seed."""
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def object_ref(obj) -> str:
    """'module:qualname' of a function or class that can be imported again by `import_ref`; a clear
    error for lambdas, nested functions and objects defined in `__main__` (they cannot be re-imported)."""
    module, qualname = getattr(obj, "__module__", None), getattr(obj, "__qualname__", None)
    if not module or not qualname or "<" in qualname or module == "__main__":
        raise FastbaseError(f"{obj!r} cannot be referred to by name (a lambda, a nested function or something "
                            "defined in __main__): define it at the top level of an importable module.")
    if import_ref(f"{module}:{qualname}") is not obj:
        raise FastbaseError(f"{module}:{qualname} does not import back to {obj!r}.")
    return f"{module}:{qualname}"


def import_ref(ref: str):
    """The object named by 'module:qualname' (as written by `object_ref`)."""
    import importlib

    module, _, qualname = ref.partition(":")
    if not qualname:
        raise FastbaseError(f"{ref!r} is not a reference of the form 'module:qualname'.")
    try:
        obj = importlib.import_module(module)
        for part in qualname.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as e:
        raise FastbaseError(f"Cannot import {ref!r}: {e}") from e
    return obj


class _CallablePath(Path):
    """A Path that calling gives back, so `Config().data_path()` (fastai v1) and `cfg.data_path / x` both work."""

    def __call__(self) -> Path:
        return Path(self)


class _FolderPath:
    """One of Config's folders: `cfg.data_path` is the Path of that Config (callable as fastai v1's
    `Config().data_path()`); `Config.data_path()`, on the class, the Path the current environment and
    config file give."""

    def __init__(self, kind: str):
        self.kind = kind

    def __get__(self, obj, owner):
        if obj is None:
            return lambda: owner().path(self.kind)
        return _CallablePath(obj.path(self.kind))


class Config:
    """Where fastbase keeps data, models and archives, and how it reaches the network.

    The home folder is `~/.fastbase`, or `$FASTBASE_HOME`. An optional `config.ini` in it (or the
    file named by `$FASTBASE_CONFIG`) overrides single folders and network settings::

        [paths]
        data = /big/disk/datasets      ; absolute, or relative to the home folder
        models = models
        archive = archive
        [network]
        mirror = https://mirror.example.org/fast-ai/
        offline = false

    `$FASTBASE_MIRROR` and `$FASTBASE_OFFLINE` win over the file. Read afresh by `get_config()`,
    so a changed environment takes effect without restarting Python.
    """

    folders = ("data", "models", "archive")

    def __init__(self, home=None, config_file=None):
        self.home = Path(ifnone(home, os.environ.get("FASTBASE_HOME") or "~/.fastbase")).expanduser()
        self.config_file = Path(ifnone(config_file, os.environ.get("FASTBASE_CONFIG") or self.home / "config.ini"))
        self._parser = configparser.ConfigParser()
        if self.config_file.is_file():
            try:
                self._parser.read(self.config_file)
            except configparser.Error as e:
                raise ConfigError(f"Cannot read the fastbase config file {self.config_file}: {e}") from e
        unknown = set(self._parser.options("paths")) - set(self.folders) if self._parser.has_section("paths") else set()
        if unknown:
            raise ConfigError(f"Unknown key(s) {sorted(unknown)} in [paths] of {self.config_file}; "
                              f"expected some of {list(self.folders)}.")

    def path(self, kind: str) -> Path:
        """The folder for `kind` ('data', 'models' or 'archive'); not created here."""
        if kind not in self.folders:
            raise ConfigError(f"Unknown folder kind {kind!r}; expected one of {list(self.folders)}.")
        value = self._parser.get("paths", kind, fallback=kind)
        p = Path(value).expanduser()
        return p if p.is_absolute() else self.home / p

    data_path = _FolderPath("data")
    model_path = _FolderPath("models")
    archive_path = _FolderPath("archive")

    @property
    def mirror(self) -> str | None:
        """Base URL replacing the default host for catalogue datasets, or None."""
        value = os.environ.get("FASTBASE_MIRROR") or self._parser.get("network", "mirror", fallback="")
        return value.strip() or None

    @property
    def offline(self) -> bool:
        """True when fastbase must never touch the network."""
        env = os.environ.get("FASTBASE_OFFLINE")
        if env is not None and env.strip() != "":
            return _parse_bool(env, "FASTBASE_OFFLINE")
        return _parse_bool(self._parser.get("network", "offline", fallback="false"), f"offline in {self.config_file}")

    def __repr__(self):
        return (f"Config(home={str(self.home)!r}, data={str(self.data_path)!r}, models={str(self.model_path)!r}, "
                f"archive={str(self.archive_path)!r}, mirror={self.mirror!r}, offline={self.offline})")


def _parse_bool(value: str, what: str) -> bool:
    v = value.strip().lower()
    if v in ("1", "true", "yes", "on"):
        return True
    if v in ("0", "false", "no", "off", ""):
        return False
    raise ConfigError(f"{what} must be a boolean (1/0, true/false, yes/no), got {value!r}.")


def get_config() -> Config:
    """The configuration as the environment and the config file say now."""
    return Config()


# The one piece of global mutable state besides the config: what a user may change for a session.
defaults = SimpleNamespace(
    device=default_device(),
    silent=False,  # no progress bars or per-epoch tables
    cmap=None,  # the colour map of one-channel images (`Image.show`); None: gray. Lesson 7 sets 'binary'
)
