"""The package's shape, checked by the suite: ruff (with the line-length rule of pyproject.toml,
120 characters) passes on `fastbase/`, and no module is over 400 lines (a longer one has two jobs:
split it at a seam)."""
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import fastbase

ROOT = Path(fastbase.__file__).parent
MAX_LINES = 400


def _ruff() -> list[str] | None:
    """The command that runs ruff: the executable on PATH, or the module of this Python."""
    if shutil.which("ruff"):
        return ["ruff"]
    try:
        import ruff  # noqa: F401 -- only asking whether it is installed
    except ImportError:
        return None
    return [sys.executable, "-m", "ruff"]


def test_ruff_passes_on_the_package():
    command = _ruff()
    if command is None:
        pytest.skip("ruff is not installed (it is in the dev extra: pip install -e '.[dev]')")
    result = subprocess.run([*command, "check", "--no-cache", "--output-format", "concise", str(ROOT)],
                            capture_output=True, text=True, check=False, cwd=ROOT.parent)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]


def test_ruff_config_limits_lines_to_120_characters():
    config = (ROOT.parent / "pyproject.toml").read_text()
    assert "line-length = 120" in config and '"E501"' in config


@pytest.mark.parametrize("path", sorted(ROOT.rglob("*.py")), ids=lambda p: str(p.relative_to(ROOT.parent)))
def test_module_is_at_most_400_lines(path):
    lines = len(path.read_text().splitlines())
    assert lines <= MAX_LINES, f"{path} has {lines} lines: split it at a seam (one job per module)"
