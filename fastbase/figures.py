"""Layer 0: how every fastbase plot makes and hands back its matplotlib Figure.

`subplots` imports pyplot only when a plot is drawn (importing fastbase never loads matplotlib).
`finish_figure` is the one rule for what a plot returns: the Figure, detached from pyplot so that a
notebook shows it once (as the cell's value) and scripts do not pile up open figures; `save_to`
writes it to a file first. Both work headless (the Agg backend; `MPLBACKEND=Agg` on servers).
"""
from __future__ import annotations

import os

from .core import Path

__all__ = ["finish_figure", "save_figure", "subplots"]


def subplots(*args, **kwargs):
    """`matplotlib.pyplot.subplots`, imported on first use."""
    import matplotlib.pyplot as plt

    return plt.subplots(*args, **kwargs)


def finish_figure(fig, return_fig: bool | None = None, save_to: str | os.PathLike | None = None, dpi: int = 100):
    """What a `plot_*`/`show_*` method returns.

    `save_to`: write the figure there (PNG unless the suffix names another format matplotlib
    knows, e.g. '.svg'), creating the parent folder. `return_fig` None or True (the default):
    return the Figure, closed in pyplot. `return_fig=False` is fastai v1's behaviour: the figure
    stays with pyplot, which shows it at the end of a notebook cell or on `plt.show()`, and the
    method returns None.
    """
    if save_to is not None:
        save_figure(fig, save_to, dpi=dpi, close=False)
    if return_fig is False:
        return None
    import matplotlib.pyplot as plt

    plt.close(fig)
    return fig


def save_figure(fig, path, dpi: int = 100, close: bool = True) -> Path:
    """Write `fig` to `path` (PNG unless the suffix names another format matplotlib knows, e.g.
    '.svg'), creating the parent folder; `close` lets pyplot forget it (scripts draw many)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(target, dpi=dpi, bbox_inches="tight", format=None if target.suffix else "png")
    if close:
        import matplotlib.pyplot as plt

        plt.close(fig)
    return target
