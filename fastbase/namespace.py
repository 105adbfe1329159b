"""Layer 0: the one way a notebook namespace (`fastbase.basics`, `fastbase.vision`,
`fastbase.tabular`, `fastbase.collab`) is finished, so that `from fastbase.<x> import *` gives
fastai v1's vocabulary without `import *` inside the package and without an `__all__` read from
`dir()`.

A namespace module imports its names explicitly and writes them in a literal `__all__`; then

    __getattr__, __dir__ = notebook_namespace(__name__, __all__, lazy=PLOTTING, base=basics)

adds to that `__all__` the names of `lazy` (loaded on first use, PEP 562) and those of the `base`
namespace the module does not define itself (read from `base` on first use), and leaves out a
lazy name whose module is not installed (`pd` without pandas), since `import *` fails on a name
that does not resolve. `doc(obj)`, which every namespace gives, is here too.
"""
from __future__ import annotations

import importlib
import importlib.util
import inspect
import sys

__all__ = ["PLOTTING", "doc", "notebook_namespace"]

# pyplot and pandas as notebooks name them, loaded on first use: importing fastbase pays for neither
PLOTTING = {"plt": "matplotlib.pyplot", "pd": "pandas"}


def _installed(ref: str) -> bool:
    top = ref.partition(":")[0].split(".")[0]
    return top in sys.modules or importlib.util.find_spec(top) is not None


def _load(ref: str):
    """The module 'package.module', or the object 'package.module:name'."""
    module, _, attr = ref.partition(":")
    value = importlib.import_module(module)
    return getattr(value, attr) if attr else value


def notebook_namespace(module_name: str, names: list, lazy: dict | None = None, base=None):
    """Complete `names` (the namespace module's `__all__`, changed in place) and return the module's
    `__getattr__` and `__dir__`.

    `lazy` maps a name to 'module' or 'module:attribute', loaded on its first use; `base` is a
    namespace module whose `__all__` this one extends. Names `names` already holds stay first and win.
    """
    lazy = dict(lazy or {})
    module = sys.modules[module_name]
    own = set(names)
    for name, ref in lazy.items():
        if name not in own and _installed(ref):
            names.append(name)
        elif name in own and not _installed(ref):
            names.remove(name)
    inherited = [] if base is None else [n for n in base.__all__ if n not in set(names)]
    names.extend(inherited)
    inherited = set(inherited)

    def __getattr__(name: str):
        if name in lazy:
            value = _load(lazy[name])
        elif name in inherited:
            value = getattr(base, name)
        else:
            raise AttributeError(f"module {module_name!r} has no attribute {name!r}")
        setattr(module, name, value)  # later uses find it without this function
        return value

    def __dir__():
        return sorted(set(vars(module)) | set(names))

    return __getattr__, __dir__


def doc(obj) -> None:
    """Print `obj`'s signature, its docstring and the file and line where it is defined (for an
    instance, those of its class)."""
    target = obj if callable(obj) or inspect.ismodule(obj) else type(obj)
    target = getattr(target, "__wrapped__", target)
    name = getattr(target, "__qualname__", None) or getattr(target, "__name__", None) or type(target).__name__
    try:
        signature = str(inspect.signature(target))
    except (TypeError, ValueError):
        signature = ""
    lines = [f"{name}{signature}", "", inspect.getdoc(target) or "(no docstring)"]
    try:
        file, line = inspect.getsourcefile(target), inspect.getsourcelines(target)[1]
        lines += ["", f"Defined in {getattr(target, '__module__', None) or target.__name__}, {file}:{line}"]
    except (TypeError, OSError):
        pass
    print("\n".join(lines))
