"""Layer 0: saving and putting back the state a run changes: the random generators (Python, NumPy,
torch, CUDA, and a loader's own generators) and copies of weights and optimizer state. Checkpoints,
lr_find, overfit and sanity_check all use these, so each is written once."""
from __future__ import annotations

import copy
import random

import numpy as np
import torch

__all__ = ["copy_state", "loader_generators", "rng_states", "set_rng_states"]


def copy_state(obj) -> dict:
    """A copy of `obj.state_dict()` (a module's or an optimizer's) that later training does not change:
    tensors cloned, nested containers copied. Put it back with `obj.load_state_dict(...)`."""
    state = obj.state_dict()
    if isinstance(obj, torch.nn.Module):
        return {k: v.detach().clone() for k, v in state.items()}
    return copy.deepcopy(state)


def loader_generators(dl) -> dict[str, torch.Generator]:
    """The generators a training epoch draws from, by name: those of the training loader `dl` (a
    DeviceDataLoader: its base seed), of its sampler (the order) and of its batch transforms
    (augmentation). Each object once."""
    if dl is None:
        return {}
    raw = getattr(dl, "dl", dl)
    found = {"train_loader": getattr(raw, "generator", None),
             "train_sampler": getattr(getattr(raw, "sampler", None), "generator", None)}
    found.update({f"train_tfm{i}": getattr(t, "generator", None) for i, t in enumerate(getattr(dl, "tfms", []))})
    gens, seen = {}, set()
    for name, gen in found.items():
        if isinstance(gen, torch.Generator) and id(gen) not in seen:
            seen.add(id(gen))
            gens[name] = gen
    return gens


def rng_states(generators=None) -> dict:
    """The state of Python's, NumPy's and torch's global generators (CUDA too, once initialised) and of
    `generators` (name -> torch.Generator), as plain data that loads with `weights_only=True`."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {"python": random.getstate(),
            "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                      "has_gauss": int(has_gauss), "gauss": float(gauss)},
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None,
            "generators": {name: gen.get_state() for name, gen in (generators or {}).items()}}


def set_rng_states(state: dict, generators=None) -> None:
    """Put back what `rng_states` returned; generators are matched by name."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    npy = state["numpy"]
    np.random.set_state((npy["kind"], npy["keys"].numpy().astype(np.uint32), npy["pos"], npy["has_gauss"],
                         npy["gauss"]))
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    for name, gen in (generators or {}).items():
        if name in state["generators"]:
            gen.set_state(state["generators"][name])
