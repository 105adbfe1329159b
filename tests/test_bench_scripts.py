"""The benchmark scripts stay runnable: each imports (they import helpers from one another) and
parses its options. What they measure is not asserted here (see bench/)."""
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"
SCRIPTS = sorted(p for p in BENCH.glob("*.py") if not p.name.startswith("_"))


def test_there_are_benchmark_scripts():
    assert {"transfer.py", "vs_fastai.py", "data_loader.py"} <= {p.name for p in SCRIPTS}


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_a_benchmark_script_imports_and_shows_its_help(script):
    proc = subprocess.run([sys.executable, str(script), "--help"], cwd=BENCH, capture_output=True, text=True,
                          timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "usage:" in proc.stdout
