"""The package's layering: every module states its purpose, is listed below with its layer, and
imports only from its own layer or those below it:

    core -> datasets -> data -> callback -> callbacks -> learner
         -> task packages (vision and its task folders, text, tabular, collab) -> cli/serve

A task package imports the shared layers and never another task: tabular does not import collab
or vision, collab does not import tabular, vision does not import tabular or collab; the task
folders inside vision (`fastbase.vision.segmentation`, later points, detection...) may import the
shared `fastbase.vision` modules but not each other, and the shared vision modules import no task
folder. A task never imports a private name (`_x`) from the shared layers. Inference (`deploy`,
`serve`, `export`) does not import the training callbacks. No `import *`; every module imports on
its own (no circular imports).
"""
import ast
import subprocess
import sys
from pathlib import Path

import pytest

import fastbase

ROOT = Path(fastbase.__file__).parent

# Module -> layer. Every module is listed by its full name: a new module must be placed here on purpose.
LAYERS = {
    # layer 0: what every layer shares; `core` gathers helpers, config and distrib for `from fastbase.core import`
    "fastbase": 0,
    "fastbase.core": 0,
    "fastbase.helpers": 0,
    "fastbase.config": 0,
    "fastbase.distrib": 0,
    "fastbase.namespace": 0,
    "fastbase.parallel": 0,  # parallel(func, items): data preparation over processes, with a progress bar
    "fastbase.progress": 0,  # the one progress path: training, inference and downloads draw through it
    "fastbase.figures": 0,
    "fastbase.files": 0,
    "fastbase.file_checks": 0,  # digests and damage diagnosis of the files fastbase reads back
    "fastbase.state": 0,
    "fastbase.layers": 0,  # model building blocks: they need only torch and core
    "fastbase.hooks": 0,  # hooks and shape probes on models, beside the layers
    "fastbase.utils": 0,  # fastai v1's fastai.utils: memory of the GPU and the process
    "fastbase.utils.mem": 0,
    # layer 1: datasets on disk
    "fastbase.datasets": 1,
    "fastbase.archives": 1,
    "fastbase.download": 1,
    # layer 2: the generic data layer and the data block API
    "fastbase.data": 2,
    "fastbase.data.base": 2,
    "fastbase.data.bunch": 2,
    "fastbase.data.categories": 2,
    "fastbase.data.items": 2,
    "fastbase.data.item_list": 2,
    "fastbase.data.labels": 2,
    "fastbase.data.label_lists": 2,
    "fastbase.data.loader": 2,
    "fastbase.data.splits": 2,
    "fastbase.data.task": 2,  # the task contract: what the engine asks of a task's data
    "fastbase.data.workers": 2,
    # layer 3: the callback machinery
    "fastbase.callback": 3,
    "fastbase.recorder": 3,
    "fastbase.losses": 3,
    # layer 4: the optional parts of training, each a callback
    "fastbase.callbacks": 4,
    "fastbase.callbacks.bn_stats": 4,
    "fastbase.callbacks.channels_last": 4,
    "fastbase.callbacks.checkpoint": 4,
    "fastbase.callbacks.distributed": 4,
    "fastbase.callbacks.general_sched": 4,
    "fastbase.callbacks.gradients": 4,
    "fastbase.callbacks.hooks": 4,
    "fastbase.callbacks.loggers": 4,
    "fastbase.callbacks.loss_metrics": 4,
    "fastbase.callbacks.lr_finder": 4,
    "fastbase.callbacks.mem": 4,
    "fastbase.callbacks.misc": 4,
    "fastbase.callbacks.mlflow": 4,
    "fastbase.callbacks.mixed_precision": 4,
    "fastbase.callbacks.mixup": 4,
    "fastbase.callbacks.one_cycle": 4,
    "fastbase.callbacks.oversampling": 4,
    "fastbase.callbacks.progress": 4,
    "fastbase.callbacks.show_graph": 4,
    "fastbase.callbacks.tensorboard": 4,
    "fastbase.callbacks.trackers": 4,
    # layer 5: the Learner, its loop, export and inference
    "fastbase.optimizer": 5,
    "fastbase.metric_base": 5,  # the metric protocol and its accumulators
    "fastbase.metric_regression": 5,
    "fastbase.metric_scores": 5,  # whole-set classification scores (torchmetrics)
    "fastbase.metrics": 5,
    "fastbase.loop": 5,
    "fastbase.inference": 5,  # the Learner's evaluation, inference and files (its base class)
    "fastbase.interpret": 5,  # interpretation's numbers for any classifier; drawing is the task's
    "fastbase.export": 5,
    "fastbase.learner": 5,
    "fastbase.debug": 5,
    "fastbase.sanity": 5,
    "fastbase.deploy": 5,
    "fastbase.train": 5,
    "fastbase.finetune": 5,
    "fastbase.basics": 5,
    # layer 6: the task packages
    "fastbase.vision": 6,
    "fastbase.vision.activations": 6,
    "fastbase.vision.data": 6,
    "fastbase.vision.data_checks": 6,
    "fastbase.vision.dataset": 6,
    "fastbase.vision.encoder": 6,  # the one body interface: Encoder, SequentialEncoder, PyramidEncoder
    "fastbase.vision.detection": 6,  # object detection: boxes data, FCOS detector, mAP, interpretation
    "fastbase.vision.detection.data": 6,
    "fastbase.vision.detection.interpret": 6,
    "fastbase.vision.detection.learner": 6,
    "fastbase.vision.detection.metrics": 6,
    "fastbase.vision.detection.model": 6,
    "fastbase.vision.detection.items": 6,
    "fastbase.vision.detection.show": 6,
    "fastbase.vision.feature_cache": 6,
    "fastbase.vision.feature_store": 6,
    "fastbase.vision.compare": 6,
    "fastbase.vision.coords": 6,  # points and boxes as targets: placed and moved with their images
    "fastbase.vision.image": 6,
    "fastbase.vision.interpret": 6,
    "fastbase.vision.item_cache": 6,
    "fastbase.vision.label_table": 6,
    "fastbase.vision.learner": 6,
    "fastbase.vision.models": 6,
    "fastbase.vision.points": 6,  # the points task: ImagePoints, PointsItemList/LabelList, PointsDataBunch, drawing
    "fastbase.vision.points.data": 6,
    "fastbase.vision.points.items": 6,
    "fastbase.vision.points.show": 6,
    "fastbase.vision.rand_pad": 6,
    "fastbase.vision.gan": 6,  # GANs (lesson 7): models, noise data, losses, trainer callbacks, GANLearner
    "fastbase.vision.gan.data": 6,
    "fastbase.vision.gan.learner": 6,
    "fastbase.vision.gan.losses": 6,
    "fastbase.vision.gan.models": 6,
    "fastbase.vision.gan.trainer": 6,
    "fastbase.vision.image2image": 6,  # images as targets (lesson 7's super-resolution): data, show
    "fastbase.vision.image2image.data": 6,
    "fastbase.vision.image2image.show": 6,
    "fastbase.vision.segmentation": 6,  # the segmentation task, whole: data, unet, metrics, interpret, show
    "fastbase.vision.segmentation.data": 6,
    "fastbase.vision.segmentation.interpret": 6,
    "fastbase.vision.segmentation.metrics": 6,
    "fastbase.vision.segmentation.show": 6,
    "fastbase.vision.segmentation.unet": 6,
    "fastbase.vision.sampling": 6,
    "fastbase.vision.show": 6,
    "fastbase.vision.sizing": 6,
    "fastbase.vision.timm_models": 6,
    "fastbase.vision.transforms": 6,
    "fastbase.vision.augments": 6,
    "fastbase.vision.pixel_tfms": 6,
    "fastbase.vision.tfm_base": 6,
    "fastbase.vision.tfm_funcs": 6,
    "fastbase.vision.warps": 6,
    "fastbase.vision.web_images": 6,
    "fastbase.vision.xresnet": 6,  # XResNet and the wide ResNet, from random weights
    "fastbase.collab": 6,  # collaborative filtering (lesson 4); its namespace gathers basics (layer 5) and itself
    "fastbase.collab.data": 6,
    "fastbase.collab.learner": 6,
    "fastbase.collab.models": 6,
    "fastbase.tabular": 6,  # tables (pandas): processors, TabularList/DataBunch, the model, importance
    "fastbase.tabular.data": 6,
    "fastbase.tabular.importance": 6,
    "fastbase.tabular.loader": 6,
    "fastbase.tabular.models": 6,
    "fastbase.tabular.procs": 6,
    "fastbase.tabular.processor": 6,
    "fastbase.tabular.transform": 6,
    "fastbase.text": 6,  # text and ULMFiT: tokenizer, vocab, TextList, LM and classifier data, AWD-LSTM, learners
    "fastbase.text.bunch": 6,
    "fastbase.text.data": 6,
    "fastbase.text.interpret": 6,
    "fastbase.text.learner": 6,
    "fastbase.text.loaders": 6,
    "fastbase.text.models": 6,
    "fastbase.text.pretrain": 6,
    "fastbase.text.pretrained": 6,
    "fastbase.text.rules": 6,
    "fastbase.text.tokenizer": 6,
    "fastbase.text.vocab": 6,
    # layer 8: the applications: widgets, command line, server, reports
    "fastbase.widgets": 8,  # notebook widgets for cleaning data: they use interpretation and hooks
    "fastbase.widgets.cleaning": 8,
    "fastbase.widgets.formatter": 8,
    "fastbase.widgets.image_cleaner": 8,
    "fastbase.cli": 8,
    "fastbase.cli_commands": 8,
    "fastbase.serve": 8,
    "fastbase.serve_config": 8,  # the server's settings and flags
    "fastbase.serve_guard": 8,  # the server's API key, request bound and metrics
    "fastbase.serve_text": 8,  # the server's reading of a text classifier's JSON request
    "fastbase.workflow": 8,
    "fastbase.workflow_detection": 8,
    "fastbase.report": 8,
}
# The notebook namespace re-exports the whole public API, so it sits above every layer it gathers.
FACADES = {"fastbase.vision": 8}
# The task packages; inside vision, each subpackage (a folder) is a task of its own.
TASKS = ("fastbase.vision", "fastbase.text", "fastbase.tabular", "fastbase.collab")
# Modules that run a trained model; they never need the training callbacks.
INFERENCE = ("fastbase.deploy", "fastbase.serve", "fastbase.serve_config", "fastbase.serve_guard", "fastbase.serve_text",
             "fastbase.export")


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def layer_of(name: str) -> int | None:
    """The layer of a module, or of the closest package above it that is listed."""
    while name:
        if name in LAYERS:
            return LAYERS[name]
        name = name.rpartition(".")[0]
    return None


def task_of(name: str, root: Path = ROOT) -> str | None:
    """The task a module belongs to: a task package, or a task folder inside vision (a subpackage of
    `fastbase.vision`); None for the shared layers."""
    for task in TASKS:
        if name == task or name.startswith(task + "."):
            if task == "fastbase.vision":
                sub = name.split(".")[:3]
                if len(sub) == 3 and (root.parent.joinpath(*sub) / "__init__.py").is_file():
                    return ".".join(sub)
            return task
    return None


def task_may_import(importer: str | None, target: str | None) -> bool:
    """A task imports the shared layers, itself, and (for a task folder in vision) the shared vision
    modules. A shared module above the tasks (cli, serve, widgets) may use any; the layers rule it."""
    if importer is None or target is None or importer == target:
        return True
    return target == "fastbase.vision" and importer.startswith("fastbase.vision.")


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
    assert module_name(path) in LAYERS, f"add {module_name(path)} to LAYERS in {__file__}"


def test_every_listed_module_exists():
    names = {module_name(p) for p in MODULES}
    assert not [n for n in LAYERS if n not in names], "LAYERS lists modules that are gone: remove them"


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


def names_imported(path: Path) -> list[tuple[str, str, int]]:
    """(absolute module, name, line) for every name a `from fastbase... import name` brings in."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module != "__future__":
            if node.level:
                base = package.split(".")
                target = ".".join(base[: len(base) - node.level + 1] + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.startswith("fastbase"):
                found += [(target, a.name, node.lineno) for a in node.names]
    return found


@pytest.mark.parametrize("path", MODULES, ids=lambda p: module_name(p))
def test_a_task_imports_the_shared_layers_and_never_another_task(path):
    name = module_name(path)
    own = task_of(name)
    for target, line, _ in imports_of(path):
        other = task_of(target)
        if name in FACADES and other is not None and other.startswith(name + "."):
            continue  # a notebook namespace gathers its task folders
        assert task_may_import(own, other), (
            f"{name} (task {own or 'shared'}) imports {target} (task {other}) at line {line}: a task imports the "
            "shared layers and never another task; move what both need into a shared layer")


@pytest.mark.parametrize("path", MODULES, ids=lambda p: module_name(p))
def test_a_task_imports_no_private_name_from_the_shared_layers(path):
    name = module_name(path)
    if task_of(name) is None:
        return
    private = [(target, imported, line) for target, imported, line in names_imported(path)
               if task_of(target) is None and imported.startswith("_") and not imported.startswith("__")]
    assert not private, f"{name} imports private names of the shared layers {private}: make a public helper"


@pytest.mark.parametrize("name", INFERENCE)
def test_inference_does_not_import_the_training_callbacks(name):
    path = ROOT.joinpath(*name.split(".")[1:]).with_suffix(".py")
    training = [(t, line) for t, line, _ in imports_of(path) if t == "fastbase.callbacks" or
                t.startswith("fastbase.callbacks.")]
    assert not training, f"{name} imports training callbacks {training}; inference draws through fastbase.progress"


def test_hook_tools_come_from_fastbase_hooks_inside_the_package():
    """`fastbase.callbacks.hooks` re-exports the hook tools for fastai v1's import line; inside the
    package only the callbacks namespace imports it."""
    users = [(module_name(p), line) for p in MODULES for t, line, _ in imports_of(p)
             if t == "fastbase.callbacks.hooks" and module_name(p) != "fastbase.callbacks"]
    assert not users, f"import the hook tools from fastbase.hooks: {users}"


def test_task_rules_tell_tasks_and_vision_task_folders_apart(tmp_path):
    (tmp_path / "fastbase" / "vision" / "points").mkdir(parents=True)
    (tmp_path / "fastbase" / "vision" / "points" / "__init__.py").write_text('"""points"""')
    root = tmp_path / "fastbase"
    assert task_of("fastbase.collab.data", root) == "fastbase.collab" and task_of("fastbase.data.splits", root) is None
    assert task_of("fastbase.vision.points.data", root) == "fastbase.vision.points"
    assert task_of("fastbase.vision.image", root) == "fastbase.vision"
    assert task_may_import("fastbase.collab", None) and task_may_import("fastbase.vision.points", "fastbase.vision")
    assert task_may_import(None, "fastbase.collab")  # cli, serve: the layers decide
    assert not task_may_import("fastbase.collab", "fastbase.tabular")
    assert not task_may_import("fastbase.vision", "fastbase.vision.points")
    assert not task_may_import("fastbase.vision.points", "fastbase.vision.segmentation")


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


_ENGINE = ["learner", "inference", "interpret", "export", "deploy", "serve", "metrics", "loop", "sanity"]


@pytest.mark.parametrize("name", _ENGINE)
def test_the_engine_asks_the_task_contract_instead_of_probing_the_data(name):
    """What the engine needs from a task's data is a method with a default (`fastbase.data.task`)."""
    import re

    source = (ROOT / f"{name}.py").read_text()
    probes = re.findall(r"(?:hasattr|getattr)\([^)]*data\b[^)]*\)", source)
    assert not probes, f"fastbase/{name}.py probes the data: {probes}"


@pytest.mark.parametrize("importer, forbidden", [
    ("fastbase.collab.data", "fastbase.tabular"),  # collaborative filtering is not a table task
    ("fastbase.deploy", "fastbase.callbacks"),  # inference draws progress through fastbase.progress
    ("fastbase.vision.data", "fastbase.vision.segmentation"),  # classification data know nothing of masks
])
def test_collab_deploy_and_classification_keep_off_what_they_must_not_import(importer, forbidden):
    path = ROOT.joinpath(*importer.split(".")[1:]).with_suffix(".py")
    found = [(t, line) for t, line, _ in imports_of(path) if t == forbidden or t.startswith(forbidden + ".")]
    assert not found, f"{importer} imports {found}: {forbidden} is off limits to it"
    private = [(t, n, line) for t, n, line in names_imported(path) if n.startswith("_") and not n.startswith("__")]
    assert not private, f"{importer} imports private names {private}"
