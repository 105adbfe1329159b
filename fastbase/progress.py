"""Layer 0: the one progress path of fastbase, built on fastprogress: whether bars are shown
(`progress_disabled`), where the output goes (`progress_mode`), and the bars themselves
(`master_bar`, `progress_bar`). Training (`fastbase.callbacks.progress.ProgressCallback`),
inference (`deploy.predict_items`) and downloads (`fastbase.download`) all draw through here,
so `defaults.silent`, `$FASTBASE_NO_BAR` and rank 0 of a distributed run mean the same everywhere.
"""
from __future__ import annotations

import os
import sys

from .config import defaults
from .distrib import is_main_process

__all__ = ["master_bar", "progress_bar", "progress_disabled", "progress_mode"]

def progress_disabled() -> bool:
    """True when `fastbase.core.defaults.silent` is set, `FASTBASE_NO_BAR` is 1/true/yes, or this is
    not the main process of a distributed run (only rank 0 prints)."""
    no_bar = os.environ.get("FASTBASE_NO_BAR", "").strip().lower() in ("1", "true", "yes")
    return bool(defaults.silent) or no_bar or not is_main_process()


def progress_mode() -> str:
    """'notebook' inside Jupyter/IPython kernels, 'console' when stdout is a terminal, else 'plain'."""
    from fastprogress import fastprogress
    if fastprogress.IN_NOTEBOOK:
        return "notebook"
    isatty = getattr(sys.stdout, "isatty", None)
    return "console" if isatty is not None and isatty() else "plain"


def master_bar(gen, mode: str | None = None):
    """fastprogress's bar over epochs for `mode` (default `progress_mode()`): HTML in a notebook,
    one line in a terminal (also for 'plain': callers that print lines instead do not draw it)."""
    from fastprogress.fastprogress import ConsoleMasterBar, NBMasterBar
    return (NBMasterBar if (mode or progress_mode()) == "notebook" else ConsoleMasterBar)(gen)


def progress_bar(gen, parent=None, leave: bool = False, mode: str | None = None):
    """fastprogress's bar over `gen` for `mode` (default `progress_mode()`), under the master bar
    `parent` when given: HTML in a notebook, one redrawn line elsewhere."""
    from fastprogress.fastprogress import ConsoleProgressBar, NBProgressBar
    bar = NBProgressBar if (mode or progress_mode()) == "notebook" else ConsoleProgressBar
    return bar(gen, parent=parent, leave=leave)
