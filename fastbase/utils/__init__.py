"""Layer 0: fastai v1's `fastai.utils` helpers: `fastbase.utils.mem` (GPU and CPU memory)."""
from . import mem

__all__ = ["mem"]
