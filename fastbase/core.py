"""Layer 0: the names every other layer shares, gathered from the modules that define them.

`fastbase.helpers` (list/None helpers, errors, `Path`, devices, seeding, importable references),
`fastbase.config` (where data, models and archives live; `defaults`) and `fastbase.distrib` (which
process of a distributed run this is). `BN_TYPES` lives with the model building blocks in
`fastbase.layers`; the DataLoader worker count with the data layer (`fastbase.data.workers`).
Library modules and user code may import any of these names from here, as fastai v1's
`fastai.core` allowed.
"""
from __future__ import annotations

from .config import Config, ConfigError, defaults, get_config
from .distrib import (
    distrib_barrier,
    is_main_process,
    num_distrib,
    rank_distrib,
    rank_zero_only,
)
from .helpers import (
    FastbaseError,
    Path,
    PrettyString,
    default_device,
    ifnone,
    import_ref,
    is_listy,
    listify,
    noop,
    num_cpus,
    object_ref,
    seed_worker,
    set_seed,
    to_device,
)
from .layers import BN_TYPES

__all__ = [
    "BN_TYPES",
    "Config",
    "ConfigError",
    "FastbaseError",
    "Path",
    "PrettyString",
    "default_device",
    "defaults",
    "distrib_barrier",
    "get_config",
    "ifnone",
    "import_ref",
    "is_listy",
    "is_main_process",
    "listify",
    "noop",
    "num_cpus",
    "num_distrib",
    "object_ref",
    "rank_distrib",
    "rank_zero_only",
    "seed_worker",
    "set_seed",
    "to_device",
]
