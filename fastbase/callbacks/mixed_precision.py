"""Layer 4: mixed-precision training as a callback (`learn.to_fp16()`): the forward pass runs under
`torch.autocast`, the weights, the optimizer and the loss stay in float32.

On CUDA the default is float16 with dynamic loss scaling (`torch.amp.GradScaler`: the loss is
multiplied before backward so small gradients survive in float16, the gradients are divided back
before the step, and a step whose gradients overflowed is skipped and the scale halved). On the
CPU the default is bfloat16 (float32's range, so no scaling) and it only pays on CPUs with native
bfloat16 (AVX512-BF16/AMX): elsewhere it is slower; see `bench/mixed_precision.py`. A device
without autocast gets a warning and full precision, never a crash.
"""
from __future__ import annotations

import warnings

import torch
from torch import nn

from ..callback import Callback, Order
from ..core import FastbaseError

__all__ = ["MixedPrecision", "as_fp32", "autocast_dtype", "cpu_has_native_bf16"]

_DTYPES = {"fp16": torch.float16, "float16": torch.float16, "half": torch.float16,
           "bf16": torch.bfloat16, "bfloat16": torch.bfloat16}


def autocast_dtype(device_type: str, dtype=None) -> torch.dtype:
    """The low-precision dtype for `device_type`: `dtype` if given (a torch dtype or 'fp16', 'bf16'...),
    else float16 on CUDA and Apple's MPS (bfloat16 there only when asked and supported) and bfloat16
    elsewhere (the CPU)."""
    if isinstance(dtype, str):
        if dtype.lower() not in _DTYPES:
            raise FastbaseError(f"Unknown mixed-precision dtype {dtype!r}: use one of {sorted(_DTYPES)} or a "
                                "torch dtype.")
        dtype = _DTYPES[dtype.lower()]
    if dtype is None:
        return torch.float16 if device_type in ("cuda", "mps") else torch.bfloat16
    if dtype not in (torch.float16, torch.bfloat16):
        raise FastbaseError(f"Mixed precision runs in torch.float16 or torch.bfloat16, not {dtype}.")
    if dtype == torch.bfloat16 and device_type == "cuda" and not torch.cuda.is_bf16_supported():
        warnings.warn("This GPU has no bfloat16: using float16 with loss scaling instead.", stacklevel=2)
        return torch.float16
    return dtype


def _autocast_available(device_type: str) -> bool:
    check = getattr(torch.amp, "is_autocast_available", None)
    return check(device_type) if check is not None else device_type in ("cuda", "cpu")


def cpu_has_native_bf16() -> bool:
    """Whether oneDNN reports native bfloat16 on this CPU (AVX512-BF16/AMX); False when it cannot say."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def _to_float(pred):
    """Predictions back in float32 (tensors nested in tuples, lists and dicts too), so the loss,
    the metrics and `get_preds` never see half precision."""
    if isinstance(pred, torch.Tensor):
        return pred.float() if pred.is_floating_point() and pred.dtype != torch.float32 else pred
    if isinstance(pred, (list, tuple)):
        values = [_to_float(p) for p in pred]
        named = isinstance(pred, tuple) and type(pred) is not tuple  # a NamedTuple takes its fields one by one
        return type(pred)(*values) if named else type(pred)(values)
    if isinstance(pred, dict):
        return {k: _to_float(v) for k, v in pred.items()}
    return pred


def as_fp32(model: nn.Module) -> nn.Module:
    """Make every floating parameter and buffer of `model` float32 (in place, the same Parameter
    objects, so an optimizer keeps working), then check it; raises if one is left behind."""
    if any(t.is_floating_point() and t.dtype != torch.float32 for t in (*model.parameters(), *model.buffers())):
        model.float()
    left = [n for n, p in model.named_parameters() if p.is_floating_point() and p.dtype != torch.float32]
    if left:
        raise FastbaseError(f"Parameters {left[:5]} are still not float32 after model.float(): they were replaced "
                            "by tensors the module does not own. Convert them yourself with .float().")
    return model


class MixedPrecision(Callback):
    """Runs the forward pass under `torch.autocast(device, dtype)` and gives float32 predictions to
    the loss. `dtype` None: float16 on CUDA, bfloat16 elsewhere. `loss_scale` None: dynamic loss
    scaling (GradScaler, starting at `init_scale`, doubling after `growth_interval` good steps)
    exactly when the dtype is float16. The scaler's state is in `state_dict()`."""
    order = Order.MIXED_PRECISION
    changes_step = True

    def __init__(self, dtype=None, loss_scale: bool | None = None, init_scale: float = 2.0 ** 16,
                 growth_interval: int = 2000):
        self.dtype_arg, self.loss_scale = dtype, loss_scale
        self.init_scale, self.growth_interval = init_scale, growth_interval
        self.device_type = None
        self.dtype = None
        self.enabled = False
        self.scaler = None
        self._pending, self._unscaled = None, False
        if isinstance(dtype, str):
            autocast_dtype("cpu", dtype)  # a bad name fails here, not in the middle of fit

    def _setup(self) -> None:
        """Pick device type, dtype and scaler for where the model is (once per device)."""
        param = next(self.learn.model.parameters(), None)
        device_type = param.device.type if param is not None else torch.device(self.learn.data.device).type
        if device_type == self.device_type:
            return
        self.device_type, self.enabled = device_type, _autocast_available(device_type)
        if not self.enabled:
            warnings.warn(f"torch.autocast does not support the '{device_type}' device: training in full precision.",
                          stacklevel=3)
            self.dtype, self.scaler = torch.float32, torch.amp.GradScaler(enabled=False)
            return
        self.dtype = autocast_dtype(device_type, self.dtype_arg)
        if device_type == "cpu" and self.dtype == torch.bfloat16 and not cpu_has_native_bf16():
            warnings.warn("This CPU has no native bfloat16 (no AVX512-BF16/AMX), so mixed precision emulates it "
                          "and trains several times slower than float32 (see bench/mixed_precision.py). Keep it "
                          "for memory or for testing; learn.to_fp32() goes back.", stacklevel=3)
        scale = self.dtype == torch.float16 if self.loss_scale is None else self.loss_scale
        try:
            self.scaler = torch.amp.GradScaler(device_type, init_scale=self.init_scale,
                                               growth_interval=self.growth_interval, enabled=scale)
        except (RuntimeError, ValueError) as e:  # a device without a scaler: no scaling rather than no training
            warnings.warn(f"No loss scaling on '{device_type}' ({e}): float16 gradients may underflow.", stacklevel=3)
            self.scaler = torch.amp.GradScaler(device_type, enabled=False)
        if self._pending and self.scaler.is_enabled():
            self.scaler.load_state_dict(self._pending)
        self._pending = None

    @property
    def skips_nonfinite_steps(self) -> bool:
        """True when a GradScaler skips steps whose gradients overflowed (TerminateOnNaN reads it)."""
        return self.scaler is not None and self.scaler.is_enabled()

    def before_fit(self):
        self._setup()
        self._finish_unscaled()

    # the replaced parts of the inner step
    def forward(self):
        learn = self.learn
        self._setup()
        if not self.enabled:
            return learn.model(*learn.model_args())
        with torch.autocast(self.device_type, dtype=self.dtype):
            pred = learn.model(*learn.model_args())
        return _to_float(pred)

    def backward(self):
        self.scaler.scale(self.learn.loss_grad).backward()

    def before_step(self):
        if self.scaler.is_enabled():  # real gradients for clipping, NaN checks and user callbacks
            self.scaler.unscale_(self.learn.opt)
            self._unscaled = True

    def optimizer_step(self):
        opt = self.learn.opt
        self.scaler.step(opt)  # skipped when the gradients overflowed
        self.scaler.update()
        self._unscaled = False
        opt.zero_grad()

    def _finish_unscaled(self) -> None:
        """A step cancelled after unscaling leaves the scaler waiting for it: close that step."""
        if self._unscaled:
            self.scaler.update()
            self._unscaled = False

    after_cancel_step = _finish_unscaled

    def state_dict(self) -> dict:
        state = self.scaler.state_dict() if self.scaler is not None else (self._pending or {})
        return {"scaler": dict(state)}

    def load_state_dict(self, state: dict) -> None:
        scaler_state = state.get("scaler") or {}
        if self.scaler is not None and self.scaler.is_enabled() and scaler_state:
            self.scaler.load_state_dict(scaler_state)
        else:
            self._pending = scaler_state or None

    def __repr__(self):
        dtype = self.dtype if self.dtype is not None else self.dtype_arg or "auto"
        loss_scale = self.skips_nonfinite_steps if self.scaler else self.loss_scale
        return f"MixedPrecision(dtype={dtype}, loss_scale={loss_scale})"
