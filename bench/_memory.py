"""Peak resident memory for the benchmarks (imported by scripts run as `python bench/NAME.py`)."""
from __future__ import annotations

import resource
import sys


def reset_peak_rss() -> None:
    """Forget the resident-memory peak so far (Linux >= 4.0), so that what ran before (imports, an
    earlier variant) does not count; elsewhere the peak stays the process's."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def peak_rss_mb() -> float:
    """Peak resident memory in MiB since `reset_peak_rss` (VmHWM), else since the process started."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 2**10
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10  # bytes on macOS, KiB on Linux
