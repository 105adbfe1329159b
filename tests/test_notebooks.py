"""The course notebooks in nbs/ run from top to bottom without an error (on the embedded digits,
in a fresh python3 kernel each, with headless plotting), start with the notebook import, and are
committed without outputs. They run in order in one FASTBASE_HOME and one working folder, as a user
runs them: what one notebook writes must not break the next (no plots inside a data set's folder)."""
import json
import os
from pathlib import Path

import pytest
from conftest import SHARED

NBS = Path(__file__).resolve().parent.parent / "nbs"
NOTEBOOKS = sorted(NBS.glob("*.ipynb"))
# under pytest-xdist (setup.cfg's `-n auto --dist loadgroup`) every test of this module runs on one
# worker, in order, so the notebooks share their home and folder as they do for a user
pytestmark = pytest.mark.xdist_group("notebooks")
# notebooks that read ../shared's data (else they would download it): skipped, with a reason, without it
NEEDS_SHARED = {"09_imdb", "10_human_numbers", "11_superres_gan", "12_wgan", "13_head_pose", "14_detection"}
TEXT_NOTEBOOKS = {"09_imdb", "10_human_numbers"}  # these start with `from fastbase.text import *`


def test_the_course_notebooks_are_there():
    assert [nb.stem for nb in NOTEBOOKS] == ["00_quickstart", "01_pets", "02_lr_find", "03_interpretation", "04_data_block",
                                             "05_segmentation", "06_tabular", "07_collab", "08_cleaning",
                                             "09_imdb", "10_human_numbers", "11_superres_gan", "12_wgan",
                                             "13_head_pose", "14_detection"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_committed_without_outputs_and_starts_with_the_import(path):
    cells = json.loads(path.read_text())["cells"]
    code = [c for c in cells if c["cell_type"] == "code"]
    namespace = next((n for n in ("collab", "tabular") if path.stem.endswith(n)), "vision")
    if path.stem in TEXT_NOTEBOOKS:
        namespace = "text"
    assert "".join(code[0]["source"]).startswith(f"from fastbase.{namespace} import *")
    assert all(not c["outputs"] and c["execution_count"] is None for c in code)


@pytest.fixture(scope="module")
def user_folders(tmp_path_factory):
    """(FASTBASE_HOME, working folder) shared by the notebooks of this module, which run in nbs/'s order."""
    root = tmp_path_factory.mktemp("notebook_user")
    (root / "work").mkdir()
    return root / "fastbase_home", root / "work"


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_without_errors(path, user_folders):
    nbformat = pytest.importorskip("nbformat", reason="running notebooks needs nbformat (pip install -e '.[dev]')")
    nbclient = pytest.importorskip("nbclient", reason="running notebooks needs nbclient (pip install -e '.[dev]')")
    pytest.importorskip("ipykernel", reason="running notebooks needs ipykernel (pip install -e '.[dev]')")
    if path.stem in NEEDS_SHARED and not os.path.isdir(SHARED):
        pytest.skip(f"{path.name} reads its data from ../shared, which is absent here")
    nb = nbformat.read(path, as_version=4)
    # The kernel's environment: a private fastbase home, no progress bars, headless plots.
    env = {k: v for k, v in os.environ.items() if k not in ("FASTBASE_CONFIG", "FASTBASE_MIRROR", "FASTBASE_OFFLINE")}
    home, work = user_folders
    env.update(FASTBASE_HOME=str(home), FASTBASE_NO_BAR="1", MPLBACKEND="Agg")
    env["FASTBASE_NB_QUICK"] = "1"  # a notebook's settings cell shrinks its sizes, epochs and samples
    if os.path.isdir(SHARED):  # notebooks read data from ../shared when present (07_collab: movie_lens_sample)
        env.setdefault("FASTBASE_SHARED", os.path.abspath(SHARED))
    # the kernel runs in the working folder: it imports this checkout's fastbase, not another installed one
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(NBS.parent), env.get("PYTHONPATH", "")) if p)
    client = nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                                     resources={"metadata": {"path": str(work)}})
    client.execute(env=env)  # raises CellExecutionError, naming the cell and its traceback, on any error
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors
    digits = home / "data" / "digits"
    if digits.is_dir():  # a later notebook reads every image under it as data: nothing else may add any
        foreign = [p for p in digits.rglob("*.png") if p.relative_to(digits).parts[0] not in ("train", "valid")]
        assert not foreign, f"{path.name} wrote images into the digits data set: {foreign[:3]}"
