"""Layer 0: the configuration: where fastbase keeps data, models and archives (`Config`,
`get_config`), how it reaches the network, and `defaults`, the settings a user may change for a
session (device, silence, colour map)."""
from __future__ import annotations

import configparser
import os
from types import SimpleNamespace

from .helpers import FastbaseError, Path, default_device, ifnone

__all__ = ["Config", "ConfigError", "defaults", "get_config"]


class ConfigError(FastbaseError, ValueError):
    """The configuration file or an environment variable holds a value fastbase cannot use."""


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
