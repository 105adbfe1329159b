"""Layer 4: `PeakMemMetric` (fastai v1's `fastai.callbacks.mem`): the memory each epoch used and
peaked at, as extra columns of the progress table and the Recorder.
"""
from __future__ import annotations

import threading

import torch

from ..callback import Callback, Order
from ..utils.mem import b2mb, cpu_rss_mb, gpu_mem_get_used_fast, have_cuda

__all__ = ["PeakMemMetric"]


class _PeakSampler:
    """Polls this process's resident memory every `interval` seconds on a thread and keeps the highest."""

    def __init__(self, interval: float = 0.01):
        self.interval, self.peak = interval, 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="fastbase-peak-mem")
        self._thread.start()

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, cpu_rss_mb())
            self._stop.wait(self.interval)

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        return max(self.peak, cpu_rss_mb())


class PeakMemMetric(Callback):
    """Per epoch (training and validation), in MB: 'cpu used' (change of the process's resident
    memory) and 'cpu peak' (its highest point above the start, polled every 10 ms); with CUDA also
    'gpu used' and 'gpu peak' (PyTorch's allocator: change of allocated memory, and the peak above
    the start). Runs after the Recorder has reset (its columns join the metrics) and after the
    validation statistics (its values follow theirs)."""
    order = Order.RECORDER + 5

    def __init__(self, learn=None):
        self._sampler = None

    @property
    def column_names(self) -> list[str]:
        return ["cpu used", "cpu peak"] + (["gpu used", "gpu peak"] if have_cuda() else [])

    def before_fit(self):
        self.learn.recorder.add_metric_names(self.column_names)

    def before_epoch(self):
        self._stop_sampler()  # an epoch cancelled before its validation left one running
        self._cpu_start = cpu_rss_mb()
        if have_cuda():
            torch.cuda.reset_peak_memory_stats()
            self._gpu_start = gpu_mem_get_used_fast()
        self._sampler = _PeakSampler()

    def after_validate(self):
        values = self.epoch_values()
        if self.learn.valid_values is not None:
            self.learn.valid_values = [*self.learn.valid_values, *values]

    def epoch_values(self) -> list[float]:
        """[cpu used, cpu peak(, gpu used, gpu peak)] since `before_epoch`, in MB."""
        peak = self._stop_sampler()
        now = cpu_rss_mb()
        values = [round(now - self._cpu_start, 1), round(max(peak, now) - self._cpu_start, 1)]
        if have_cuda():
            values += [float(gpu_mem_get_used_fast() - self._gpu_start),
                       float(b2mb(torch.cuda.max_memory_allocated()) - self._gpu_start)]
        return values

    def _stop_sampler(self) -> float:
        sampler, self._sampler = self._sampler, None
        return sampler.stop() if sampler is not None else 0.0

    def cleanup_fit(self):
        self._stop_sampler()
