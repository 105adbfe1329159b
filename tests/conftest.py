"""Shared test settings: headless plotting, a private fastbase home, few threads."""
import os

os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("FASTBASE_NO_BAR", "1")
# subprocesses (scripts, torchrun, notebook kernels) import the fastbase under test, not another installed copy
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (_ROOT, os.environ.get("PYTHONPATH")) if p)

import pytest
import torch

# under pytest-xdist (`-n 2`) each worker process takes one core's thread
torch.set_num_threads(1 if os.environ.get("PYTEST_XDIST_WORKER") else min(2, torch.get_num_threads()))

SHARED = os.path.join(os.path.dirname(__file__), "..", "..", "shared")


@pytest.fixture(autouse=True)
def fastbase_home(tmp_path_factory, monkeypatch):
    """Every test gets its own FASTBASE_HOME, so nothing touches ~/.fastbase, and no mirror/offline
    settings leak in from the environment."""
    home = tmp_path_factory.mktemp("fastbase_home")
    monkeypatch.setenv("FASTBASE_HOME", str(home))
    for var in ("FASTBASE_CONFIG", "FASTBASE_MIRROR", "FASTBASE_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    return home


@pytest.fixture
def one_thread():
    """One torch thread for the test (tiny models: a second thread only adds contention on a busy
    machine, and bitwise comparisons want the same reductions everywhere)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def shared_path(*parts) -> str:
    """Path inside ../shared (benchmark data and weights), or skip the test when it is absent."""
    path = os.path.abspath(os.path.join(SHARED, *parts))
    if not os.path.exists(path):
        pytest.skip(f"needs {path} (the shared data folder beside the checkout), which is absent")
    return path
