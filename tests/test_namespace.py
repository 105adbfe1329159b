"""The notebook namespace: `from fastbase.vision import *` gives the course API and the usual
helpers through an explicit `__all__`, without loading pyplot or pandas at import time."""
import ast
import importlib.util
import inspect
import os
import subprocess
import sys

import pytest

from fastbase import vision

COURSE_NAMES = [
    "untar_data", "URLs", "download_data", "get_image_files", "open_image", "ImageDataBunch", "get_transforms",
    "imagenet_stats", "cifar_stats", "mnist_stats", "models", "cnn_learner", "create_cnn", "Learner", "load_learner",
    "DatasetType", "ClassificationInterpretation", "error_rate", "accuracy", "OneCycleScheduler", "EarlyStopping",
    "SaveModelCallback", "np", "torch", "nn", "F", "plt", "Path", "re", "doc",
]


def test_star_import_gives_the_course_names():
    namespace = {}
    exec("from fastbase.vision import *", namespace)  # noqa: S102 -- the statement under test, on a fixed string
    missing = [name for name in COURSE_NAMES if name not in namespace]
    assert not missing
    assert namespace["models"].resnet34 and namespace["Path"]("/").ls()
    assert set(namespace) - {"__builtins__"} == set(vision.__all__)


def test_all_is_an_explicit_list_and_every_entry_resolves():
    tree = ast.parse(inspect.getsource(vision))
    for node in ast.walk(tree):
        if isinstance(node, (ast.Assign, ast.AugAssign)) and "__all__" in ast.unparse(node).split("=")[0]:
            assert isinstance(node.value, ast.List) and all(isinstance(e, ast.Constant) for e in node.value.elts)
    assert len(vision.__all__) == len(set(vision.__all__))
    for name in vision.__all__:
        assert getattr(vision, name) is not None, name


@pytest.mark.skipif(importlib.util.find_spec("pandas") is None, reason="pandas is not installed")
def test_pd_is_pandas_when_installed():
    assert "pd" in vision.__all__ and vision.pd.DataFrame({"a": [1]}).shape == (1, 1)


_FRESH_IMPORT = """
import sys
import fastbase.vision
eager = [m for m in ("matplotlib.pyplot", "pandas") if m in sys.modules]
assert not eager, f"import fastbase.vision loaded {eager}"
from fastbase.vision import *
fig, ax = plt.subplots()
ax.plot([1, 2])
assert type(fig).__name__ == "Figure"
if "pd" in fastbase.vision.__all__:
    assert pd.DataFrame({"a": [1]}).shape == (1, 1)
print("ok")
"""


def test_import_loads_pyplot_and_pandas_only_when_asked():
    result = subprocess.run([sys.executable, "-c", _FRESH_IMPORT], capture_output=True, text=True, check=False,
                            env={**os.environ, "MPLBACKEND": "Agg"})
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-2000:]


def test_doc_prints_signature_docstring_and_source(capsys):
    vision.doc(vision.ClassificationInterpretation.top_losses)
    out = capsys.readouterr().out
    assert out.startswith("ClassificationInterpretation.top_losses(self, k: 'int | None' = None, largest")
    assert "torch.topk" in out and "fastbase/interpret.py:" in out
    vision.doc(vision.Path("."))  # an instance: its class
    assert "ls()" in capsys.readouterr().out
