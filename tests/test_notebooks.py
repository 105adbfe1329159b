"""The course notebooks in nbs/ run from top to bottom without an error (on the embedded digits,
in a fresh python3 kernel with a private FASTBASE_HOME and headless plotting), start with the
notebook import, and are committed without outputs."""
import json
import os
from pathlib import Path

import pytest

NBS = Path(__file__).resolve().parent.parent / "nbs"
NOTEBOOKS = sorted(NBS.glob("*.ipynb"))


def test_the_course_notebooks_are_there():
    assert [nb.stem for nb in NOTEBOOKS] == ["00_quickstart", "01_pets", "02_lr_find", "03_interpretation",
                                             "04_data_block", "05_segmentation"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_committed_without_outputs_and_starts_with_the_import(path):
    cells = json.loads(path.read_text())["cells"]
    code = [c for c in cells if c["cell_type"] == "code"]
    assert "".join(code[0]["source"]).startswith("from fastbase.vision import *")
    assert all(not c["outputs"] and c["execution_count"] is None for c in code)


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_without_errors(path, tmp_path):
    nbformat = pytest.importorskip("nbformat", reason="running notebooks needs nbformat (pip install -e '.[dev]')")
    nbclient = pytest.importorskip("nbclient", reason="running notebooks needs nbclient (pip install -e '.[dev]')")
    pytest.importorskip("ipykernel", reason="running notebooks needs ipykernel (pip install -e '.[dev]')")
    nb = nbformat.read(path, as_version=4)
    # The kernel's environment: a private fastbase home, no progress bars, headless plots.
    env = {k: v for k, v in os.environ.items() if k not in ("FASTBASE_CONFIG", "FASTBASE_MIRROR", "FASTBASE_OFFLINE")}
    env.update(FASTBASE_HOME=str(tmp_path / "fastbase_home"), FASTBASE_NO_BAR="1", MPLBACKEND="Agg")
    # the kernel runs in tmp_path: it imports this checkout's fastbase, not another installed one
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(NBS.parent), env.get("PYTHONPATH", "")) if p)
    client = nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute(env=env)  # raises CellExecutionError, naming the cell and its traceback, on any error
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors
