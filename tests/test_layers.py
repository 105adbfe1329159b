"""The package's layering: every module states its purpose and imports only from its own layer or
those below it (core -> datasets -> data -> callback -> callbacks -> learner -> vision -> interpret
-> cli); no `import *`; every module imports on its own (no circular imports)."""
import ast
import subprocess
import sys
from pathlib import Path

import pytest

import fastbase

ROOT = Path(fastbase.__file__).parent

# Module (or package prefix) -> layer. A new module must be placed here on purpose.
LAYERS = {
    "fastbase": 0,
    "fastbase.core": 0,
    "fastbase.figures": 0,
    "fastbase.files": 0,
    "fastbase.state": 0,
    "fastbase.layers": 0,  # model building blocks: they need only torch and core
    "fastbase.datasets": 1,
    "fastbase.archives": 1,
    "fastbase.download": 1,
    "fastbase.data": 2,
    "fastbase.data.items": 2,
    "fastbase.data.labels": 2,
    "fastbase.data.label_lists": 2,
    "fastbase.data.splits": 2,
    "fastbase.data.item_list": 2,
    "fastbase.callback": 3,
    "fastbase.recorder": 3,
    "fastbase.losses": 3,
    "fastbase.callbacks": 4,
    "fastbase.optimizer": 5,
    "fastbase.metrics": 5,
    "fastbase.loop": 5,
    "fastbase.export": 5,
    "fastbase.learner": 5,
    "fastbase.debug": 5,
    "fastbase.sanity": 5,
    "fastbase.deploy": 5,
    "fastbase.train": 5,
    "fastbase.finetune": 5,
    "fastbase.basics": 5,
    "fastbase.vision": 6,
    "fastbase.vision.feature_cache": 6,
    "fastbase.vision.feature_store": 6,
    "fastbase.vision.unet": 6,
    "fastbase.vision.timm_models": 6,
    "fastbase.vision.label_table": 6,
    "fastbase.vision.show": 6,
    "fastbase.vision.sizing": 6,
    "fastbase.vision.data_checks": 6,
    "fastbase.vision.segment": 6,
    "fastbase.vision.segmentation": 6,
    "fastbase.vision.rand_pad": 6,
    "fastbase.vision.web_images": 6,
    "fastbase.vision.inference": 6,
    "fastbase.collab": 6,  # collaborative filtering (lesson 4); its namespace gathers basics (layer 5) and itself
    "fastbase.tabular": 6,  # tables (pandas): processors, TabularList/DataBunch, the model, importance
    "fastbase.tabular.procs": 6,
    "fastbase.tabular.loader": 6,
    "fastbase.tabular.data": 6,
    "fastbase.tabular.models": 6,
    "fastbase.tabular.transform": 6,
    "fastbase.tabular.importance": 6,
    "fastbase.interpret": 7,
    "fastbase.seg_interpret": 7,
    "fastbase.compare": 7,
    "fastbase.widgets": 8,  # notebook widgets for cleaning data: they use interpretation and hooks
    "fastbase.cli": 8,
    "fastbase.serve": 8,
    "fastbase.workflow": 8,
    "fastbase.report": 8,
}
# The notebook namespace re-exports the whole public API, so it sits above every layer it gathers.
FACADES = {"fastbase.vision": 8}


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def layer_of(name: str) -> int | None:
    while name:
        if name in LAYERS:
            return LAYERS[name]
        name = name.rpartition(".")[0]
    return None


MODULES = sorted(p for p in ROOT.rglob("*.py"))


def imports_of(path: Path, name: str | None = None) -> list[tuple[str, int, bool]]:
    """(absolute module imported, line, is_star) for every fastbase import in the file."""
    name = name or module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            star = any(a.name == "*" for a in node.names)
            if target.startswith("fastbase"):
                # `from . import x` imports the submodule x
                if not node.module:
                    found += [(f"{target}.{a.name}", node.lineno, star) for a in node.names]
                else:
                    found.append((target, node.lineno, star))
            elif star:
                found.append((target, node.lineno, star))
        elif isinstance(node, ast.Import):
            found += [(a.name, node.lineno, False) for a in node.names if a.name.startswith("fastbase")]
    return found


@pytest.mark.parametrize("path", MODULES, ids=lambda p: module_name(p))
def test_module_has_docstring(path):
    assert ast.get_docstring(ast.parse(path.read_text())), f"{path} needs a docstring saying what its layer is for"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: module_name(p))
def test_module_is_placed_in_a_layer(path):
    assert layer_of(module_name(path)) is not None, f"add {module_name(path)} to LAYERS in {__file__}"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: module_name(p))
def test_imports_only_from_same_or_lower_layers(path):
    name = module_name(path)
    own = FACADES.get(name, layer_of(name))
    for target, line, _ in imports_of(path):
        if not target.startswith("fastbase"):
            continue
        assert layer_of(target) is not None, f"{name}:{line} imports unknown module {target}"
        assert layer_of(target) <= own, (
            f"{name} (layer {own}) imports {target} (layer {layer_of(target)}) at line {line}: "
            "a layer may only import from itself and the layers below it")


@pytest.mark.parametrize("path", MODULES, ids=lambda p: module_name(p))
def test_no_star_imports_inside_package(path):
    stars = [(t, line) for t, line, star in imports_of(path) if star]
    assert not stars, f"{module_name(path)} uses import * at {stars}"


def test_checker_resolves_relative_imports_and_sees_upward_ones(tmp_path):
    fake = tmp_path / "module.py"
    fake.write_text("from .learner import Learner\nfrom . import core\nfrom .vision.data import x\n")
    found = [t for t, _, _ in imports_of(fake, "fastbase.data")]
    assert found == ["fastbase.learner", "fastbase.core", "fastbase.vision.data"]
    assert layer_of(found[0]) > layer_of("fastbase.data")
    assert layer_of("fastbase.vision.data") == 6 and layer_of("fastbase.callbacks.lr_finder") == 4


_IMPORT_EACH_FRESH = """
import importlib, sys
for name in sys.argv[1:]:
    for loaded in [m for m in sys.modules if m == "fastbase" or m.startswith("fastbase.")]:
        del sys.modules[loaded]
    try:
        importlib.import_module(name)
    except Exception as e:
        print(f"import {name} failed: {type(e).__name__}: {e}")
        sys.exit(1)
"""


def test_every_module_imports_alone():
    """Each module imports first, with no other fastbase module loaded: a circular import fails here."""
    names = [module_name(p) for p in MODULES]
    result = subprocess.run([sys.executable, "-c", _IMPORT_EACH_FRESH, *names],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr[-2000:]
