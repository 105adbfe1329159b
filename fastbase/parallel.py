"""Layer 0: `parallel(func, items, max_workers=)`, fastai v1's helper for preparing data with several
processes (lesson 7 crappifies its photos with it): `func(item, index)` for every item, with a
progress bar; a failure names the item that raised it."""
from __future__ import annotations

import multiprocessing
import pickle
from concurrent.futures import ProcessPoolExecutor, as_completed

from .helpers import FastbaseError, num_cpus
from .progress import progress_bar, progress_disabled

__all__ = ["ParallelError", "parallel"]


class ParallelError(FastbaseError):
    """`func` raised on one of the items given to `parallel`; the message names the item."""


def _failed(func, item, index: int, error: BaseException) -> ParallelError:
    name = getattr(func, "__name__", type(func).__name__)
    hint = ""
    if isinstance(error, (pickle.PicklingError, AttributeError, TypeError)) and "pickle" in str(error):
        hint = (" The function goes to the worker processes by pickling: define it at the top level of a module or "
                "notebook (not a lambda or a nested function), or pass max_workers=0 to run here.")
    return ParallelError(f"parallel: {name} raised {type(error).__name__}: {error} on item #{index}, {item!r}.{hint}")


def _ticks(n: int, leave: bool):
    """`range(n)` under a progress bar (none when bars are off): one tick per finished call."""
    return range(n) if progress_disabled() else progress_bar(range(n), leave=leave)


def parallel(func, items, max_workers: int | None = None, leave: bool = False) -> list:
    """`[func(item, index) for index, item in enumerate(items)]`, the calls spread over `max_workers`
    processes (default: the CPUs this process may use; 0 or 1: here, one after the other), with a
    progress bar. Results come back in the items' order. When a call raises, the calls not started
    are cancelled and a `ParallelError` names the item (the original error is its cause).

    Processes are forked where the platform can, so `func` may be a class or function defined in a
    notebook (the course's `crappifier`)."""
    items = list(items)
    workers = num_cpus() if max_workers is None else int(max_workers)
    if workers < 2 or len(items) < 2:
        results = []
        for i in _ticks(len(items), leave):
            try:
                results.append(func(items[i], i))
            except Exception as e:
                raise _failed(func, items[i], i, e) from e
        return results
    methods = multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("fork" if "fork" in methods else None)
    with ProcessPoolExecutor(max_workers=min(workers, len(items)), mp_context=context) as pool:
        futures = [pool.submit(func, item, i) for i, item in enumerate(items)]
        index = {future: i for i, future in enumerate(futures)}
        for _, future in zip(_ticks(len(items), leave), as_completed(futures)):
            error = future.exception()
            if error is not None:
                for other in futures:
                    other.cancel()
                i = index[future]
                raise _failed(func, items[i], i, error) from error
        return [future.result() for future in futures]
