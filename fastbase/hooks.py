"""Layer 0: hooks, to read what the layers of a model output (or the gradients they get back), and
the probes that push one dummy batch through a model to read its shapes.

`hook_output(module)` keeps the module's latest output in `.stored`; `hook_outputs(modules)` does so
for several. Both are context managers that remove their hooks on leaving, also when the forward
pass raised. With `grad=True` they keep the gradient of the loss with respect to the output
instead, as a list with one tensor per output (`stored[0]`), like fastai v1's backward hooks.
The gradient is read with a tensor hook on the output rather than a module backward hook, which
PyTorch refuses when an in-place layer (`ReLU(inplace=True)`) follows the module.

`model_sizes`, `dummy_eval` and `num_features_model` push one dummy batch through a model (eval
mode, no gradients, its train/eval mode put back) to read the shapes it produces. They sit beside
`fastbase.layers` because model builders use them; the callbacks built on hooks (`HookCallback`,
`ActivationStats`) are in `fastbase.callbacks.hooks`, which also re-exports these names.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import nn

from .helpers import FastbaseError
from .layers import in_channels

__all__ = ["Hook", "Hooks", "dummy_batch", "dummy_eval", "hook_output", "hook_outputs", "model_sizes",
           "num_features_model"]


def _detach(x):
    if isinstance(x, torch.Tensor):
        return x.detach()
    if isinstance(x, (list, tuple)):
        return type(x)(o.detach() if isinstance(o, torch.Tensor) else o for o in x)
    return x


def _can_track(t: torch.Tensor) -> bool:
    return torch.is_grad_enabled() and not torch.is_inference_mode_enabled() and t.is_floating_point()


class Hook:
    """Calls `hook_func(module, input, output)` after every forward pass of `m` and keeps what it
    returns in `.stored` (None until `m` runs). `detach`: the function gets tensors cut from the graph.

    With `is_forward=False` it calls `hook_func(module, input, grads)` when the gradients with
    respect to `m`'s outputs arrive in a backward pass: `grads` is a tuple with one entry per output
    tensor (None for one whose gradient has not arrived). When the outputs do not require a gradient
    (a frozen module on an input without one) while autograd is on, the forward pass goes on from a
    copy of them that does, so lesson 6's recipe works on a frozen body too. Use as a context
    manager or call `remove()`."""

    def __init__(self, m: nn.Module, hook_func: Callable, is_forward: bool = True, detach: bool = True):
        self.hook_func = hook_func
        self.detach = detach
        self.is_forward = is_forward
        self.stored, self.removed = None, False
        self.hook = m.register_forward_hook(self.hook_fn if is_forward else self._watch_grads)

    def hook_fn(self, module: nn.Module, input, output) -> None:
        """Applies `hook_func` to `module`, `input` and `output` (detached with `detach`)."""
        if self.detach:
            input, output = _detach(input), _detach(output)
        self.stored = self.hook_func(module, input, output)

    def _watch_grads(self, module: nn.Module, input, output):
        outputs = list(output) if isinstance(output, (list, tuple)) else [output]
        grads = [None] * len(outputs)
        input = _detach(input) if self.detach else input

        def arrived(i, grad):
            if self.removed:  # a graph built while hooked may run backward after remove()
                return
            grads[i] = grad.detach() if self.detach else grad
            self.stored = self.hook_func(module, input, tuple(grads))

        replaced = False
        for i, out in enumerate(outputs):
            if not isinstance(out, torch.Tensor) or not (out.requires_grad or _can_track(out)):
                continue
            if not out.requires_grad:  # a frozen module on an input without gradient: start tracking here
                outputs[i], replaced = out.detach().requires_grad_(), True
            outputs[i].register_hook(lambda grad, i=i: arrived(i, grad))
        if replaced:  # the same values; returning them makes the forward pass use the tracked ones
            return outputs[0] if isinstance(output, torch.Tensor) else type(output)(outputs)
        return None

    def remove(self) -> None:
        """Remove the hook from the model (again: nothing happens)."""
        if not self.removed:
            self.hook.remove()
            self.removed = True

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.remove()

    def __repr__(self):
        state = "removed" if self.removed else "forward" if self.is_forward else "backward"
        return f"Hook({state}, stored={type(self.stored).__name__})"


class Hooks:
    """One `Hook` per module of `ms` (a list of modules, or a module: its children) with the same
    `hook_func`; `.stored` lists what each keeps. Index, iterate and `len()` like a list of hooks."""

    def __init__(self, ms: Iterable[nn.Module] | nn.Module, hook_func: Callable, is_forward: bool = True,
                 detach: bool = True):
        modules = (list(ms.children()) or [ms]) if isinstance(ms, nn.Module) else list(ms)
        not_modules = [type(m).__name__ for m in modules if not isinstance(m, nn.Module)]
        if not_modules:
            raise FastbaseError(f"Hooks go on nn.Module objects; got {not_modules}. Pass modules, e.g. "
                                "`children(model)` or `[model[0], model[1]]`.")
        self.hooks = [Hook(m, hook_func, is_forward, detach) for m in modules]

    def __getitem__(self, i: int) -> Hook:
        return self.hooks[i]

    def __len__(self) -> int:
        return len(self.hooks)

    def __iter__(self):
        return iter(self.hooks)

    @property
    def stored(self) -> list:
        return [h.stored for h in self.hooks]

    def remove(self) -> None:
        """Remove every hook from the model."""
        for h in self.hooks:
            h.remove()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.remove()


def _output(module, input, output):
    """What `hook_output` keeps: the output, or a list of the outputs (gradients) of a module with several."""
    return output if isinstance(output, torch.Tensor) else list(output) if isinstance(output, tuple) else output


def hook_output(module: nn.Module, detach: bool = True, grad: bool = False) -> Hook:
    """A `Hook` whose `.stored` is `module`'s latest output (with `grad`: the list of gradients with
    respect to its outputs, `stored[0]` for a module with one output)."""
    return Hook(module, _output, is_forward=not grad, detach=detach)


def hook_outputs(modules: Iterable[nn.Module] | nn.Module, detach: bool = True, grad: bool = False) -> Hooks:
    """`Hooks` whose `.stored` are the latest outputs of `modules` (with `grad`: their gradients)."""
    return Hooks(modules, _output, is_forward=not grad, detach=detach)


# --- dummy batches -----------------------------------------------------------------------------
def dummy_batch(m: nn.Module, size: tuple = (64, 64)) -> torch.Tensor:
    """One random input for `m`: (1, in_channels(m), *size), uniform in [-1, 1], on `m`'s device. Drawn
    from its own generator, the same every time: the global random stream is left alone."""
    param = next(m.parameters(), None)
    batch = torch.empty(1, in_channels(m), *size).uniform_(-1.0, 1.0, generator=torch.Generator().manual_seed(0))
    return batch if param is None else batch.to(device=param.device, dtype=param.dtype)


def dummy_eval(m: nn.Module, size: tuple = (64, 64)):
    """`m`'s output for a `dummy_batch` of `size`, run in eval mode without gradients; `m`'s
    train/eval mode is put back."""
    was_training = m.training
    m.eval()
    try:
        with torch.no_grad():
            return m(dummy_batch(m, size))
    finally:
        m.train(was_training)


def _shape(stored):
    stored = stored[0] if isinstance(stored, (list, tuple)) and stored else stored
    return stored.shape if isinstance(stored, torch.Tensor) else None


def model_sizes(m: nn.Module, size: tuple = (64, 64)) -> list:
    """The output shape (torch.Size, batch of 1) of each child of `m` for a dummy input of `size`
    (None for a child the forward pass does not call)."""
    with hook_outputs(m) as hooks:
        dummy_eval(m, size)
        return [_shape(s) for s in hooks.stored]


def num_features_model(m: nn.Module) -> int:
    """Channels (features) `m` outputs: the second dimension of its last child's output for a dummy
    batch. Tries 64 px, then doubles the size (to 2048) while the model fails on too small an input."""
    size = 64
    while True:
        try:
            shapes = [s for s in model_sizes(m, size=(size, size)) if s is not None]
            return shapes[-1][1]
        except RuntimeError:
            size *= 2
            if size > 2048:
                raise
