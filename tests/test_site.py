"""The documentation site builds: `mkdocs build --strict` (mkdocs.yml, the hooks in docs/_site/hooks.py)
with no warning, so no broken link, anchor or API reference; every public fastbase name of the notebook
namespaces has its entry in the generated reference; repository links are rewritten to the site.

Needs the `docs` extra (`pip install -e ".[docs]"`, part of `dev`); skipped without it.
"""
from __future__ import annotations

import importlib
import importlib.util
import inspect
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

for _package in ("mkdocs", "material", "mkdocstrings", "mkdocstrings_handlers.python"):
    pytest.importorskip(_package, reason=f"{_package} is not installed: pip install -e '.[docs]' builds the site")

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("site_hooks", ROOT / "docs" / "_site" / "hooks.py")
hooks = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(hooks)


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)], cwd=ROOT,
                          env=env, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - start
    log = done.stdout + done.stderr
    assert done.returncode == 0, f"mkdocs build --strict failed (exit {done.returncode}):\n{log[-5000:]}"
    print(f"mkdocs build --strict: {seconds:.0f} s")
    return out, log


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_site_builds_strict_without_warnings(site):
    out, log = site
    assert "WARNING" not in log, log
    assert (out / "index.html").is_file() and (out / "data" / "index.html").is_file()
    index = json.loads((out / "search" / "search_index.json").read_text())  # the search plugin's index
    assert any(doc["location"].startswith("training/") for doc in index["docs"])


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_every_public_name_has_a_reference_entry(site):
    out, _ = site
    html = "".join(p.read_text() for p in (out / "reference").rglob("index.html"))
    missing = []
    for namespace in hooks.NAMESPACES:
        module = importlib.import_module(namespace)
        for name in module.__all__:
            obj = getattr(module, name)
            if inspect.ismodule(obj):
                path = obj.__name__
            elif inspect.isclass(obj) or inspect.isroutine(obj):
                path = f"{obj.__module__}.{obj.__qualname__}"
            else:
                continue
            if path.startswith("fastbase.") and f'id="{path}"' not in html:
                missing.append(f"{namespace}.{name}")
    assert not missing, f"no reference entry for {missing}"


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_repository_links_lead_into_the_site(site):
    out, _ = site
    page = (out / "data" / "index.html").read_text()
    assert 'href="../repo/bench/RESULTS/' in page  # docs/data.md links ../bench/RESULTS.md
    assert (out / "repo" / "bench" / "RESULTS" / "index.html").is_file()
    assert (out / "repo" / "index.html").is_file()  # README.md, linked from docs/README.md


def test_links_are_rewritten_to_the_sites_paths():
    text = "See [results](../bench/RESULTS.md#fastbase-demo), [data](data.md) and [web](https://x.org/a.md).\n"
    assert hooks._rewrite(text, "training.md") == (
        "See [results](repo/bench/RESULTS.md#fastbase-demo), [data](data.md) and [web](https://x.org/a.md).\n")
    readme = "[the data page](docs/data.md)\n"
    assert hooks._rewrite(readme, "repo/README.md") == "[the data page](../data.md)\n"


def test_a_link_to_a_missing_file_is_left_for_mkdocs_to_report():
    text = "[gone](../no/such/file.md)\n"
    assert hooks._rewrite(text, "training.md") == text


def test_code_is_left_alone_and_no_run_fences_render_as_python():
    text = "```python no-run\nx = [a](../bench/RESULTS.md)\n```\n"
    assert hooks._rewrite(text, "training.md") == "```python\nx = [a](../bench/RESULTS.md)\n```\n"
