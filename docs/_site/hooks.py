"""MkDocs hooks that turn docs/ and the repository's own Markdown into the fastbase site.

The pages are written to be read on GitHub as well as on the site, so three things are done at build
time rather than in the pages:

- API reference: one page per notebook namespace (`NAMESPACES`), generated from the namespace's
  `__all__` when the site is built, so a name added to or moved behind a namespace is documented
  without editing a list. Each object is documented once, on the first namespace page that exports
  it, under the path where it is defined (found at build time, so modules can move); later pages link
  to it. Names a namespace re-exports from Python, NumPy or PyTorch (`np`, `torch`, `Path`...) are
  listed, not documented.
- Repository links: a page links files by their place in the repository (`../bench/RESULTS.md`,
  `docs/data.md` from README.md). Markdown files outside docs/ that the pages link to are added to the
  site under `repo/` (README.md, CHANGELOG.md, bench/RESULTS.md...), other linked files are copied
  there, and every relative link is rewritten to the target's place in the site. A link to a file
  that does not exist is left as it is, so `mkdocs build --strict` reports it.
- Code fences: ```` ```python no-run ```` (shown, not run by tests/test_docs.py) is rendered as a
  Python block: Markdown's fence parsers accept one word there.
"""
from __future__ import annotations

import importlib
import inspect
import posixpath
import re
import sys
from pathlib import Path

from mkdocs.structure.files import File, Files

ROOT = Path(__file__).resolve().parents[2]
DOCS = "docs"
SITE_REPO = "repo"  # where files from outside docs/ go in the site
REFERENCE = "reference"
# The notebook namespaces, in the order their pages are written: an object several of them export is
# documented on the first, so the generic namespaces come before the task ones.
NAMESPACES = ["fastbase.basics", "fastbase.callbacks.hooks", "fastbase.vision", "fastbase.tabular",
              "fastbase.collab", "fastbase.text", "fastbase.widgets"]
FENCE = re.compile(r"^(?P<indent> {0,3})(?P<fence>`{3,}|~{3,})(?P<info>[^`]*)$")
LINK = re.compile(r"(?P<head>!?\[[^\]]*\]\()(?P<target>[^)\s]+)(?P<tail>\))")

# --- Markdown text: fences and links ------------------------------------------------------------------------------
def _split_fences(text: str) -> list[tuple[bool, str]]:
    """The text as (is_code, chunk) pieces, code fences (with their fence lines) as code."""
    pieces, chunk, fence = [], [], None
    for line in text.splitlines(keepends=True):
        m = FENCE.match(line.rstrip("\n"))
        if fence is None and m:
            pieces.append((False, "".join(chunk)))
            chunk, fence = [line], m["fence"]
        elif fence is not None and re.match(rf"^ {{0,3}}{fence[0]}{{{len(fence)},}}\s*$", line.rstrip("\n")):
            pieces.append((True, "".join(chunk) + line))
            chunk, fence = [], None
        else:
            chunk.append(line)
    pieces.append((fence is not None, "".join(chunk)))
    return pieces


def _relative_targets(text: str):
    """The relative link targets of a Markdown text, outside code: (path, anchor) pairs."""
    for is_code, chunk in _split_fences(text):
        if is_code:
            continue
        for m in LINK.finditer(chunk):
            target = m["target"]
            if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith(("#", "/")):
                continue
            path, _, anchor = target.partition("#")
            yield path, anchor


def _repo_target(page_repo_path: str, link_path: str) -> str:
    """The repository path a relative link of a page leads to (a folder: its README.md when it has one)."""
    target = posixpath.normpath(posixpath.join(posixpath.dirname(page_repo_path), link_path))
    if (ROOT / target).is_dir() and (ROOT / target / "README.md").is_file():
        target = posixpath.join(target, "README.md")
    return target


def _site_path(repo_path: str) -> str | None:
    """Where a file of the repository is in the site; None for a path that is no file of it."""
    if repo_path.startswith(DOCS + "/"):
        return repo_path[len(DOCS) + 1:]
    if repo_path.startswith("..") or not (ROOT / repo_path).is_file():
        return None
    return f"{SITE_REPO}/{repo_path}"


def _repo_path(src_uri: str) -> str:
    if src_uri.startswith(SITE_REPO + "/"):
        return src_uri[len(SITE_REPO) + 1:]
    return posixpath.join(DOCS, src_uri)


def _rewrite(text: str, src_uri: str) -> str:
    """`text` of the page at `src_uri` with links leading to their target's place in the site, and fence
    info strings cut to their first word."""
    page_repo_path, out = _repo_path(src_uri), []

    def link(m: re.Match) -> str:
        target = m["target"]
        if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith(("#", "/")):
            return m[0]
        path, hash_, anchor = target.partition("#")
        site = _site_path(_repo_target(page_repo_path, path))
        if site is None:  # not a file of the repository: left for mkdocs to report
            return m[0]
        new = posixpath.relpath(site, posixpath.dirname(src_uri) or ".") + hash_ + anchor
        return m["head"] + new + m["tail"]

    for is_code, chunk in _split_fences(text):
        if is_code:
            first, _, rest = chunk.partition("\n")
            m = FENCE.match(first)
            words = m["info"].split() if m else []
            if words:
                first = f"{m['indent']}{m['fence']}{words[0]}"
            out.append(first + "\n" + rest)
        else:
            out.append(LINK.sub(link, chunk))
    return "".join(out)


# --- API reference ----------------------------------------------------------------------------------------------------
def _defined_at(obj) -> str | None:
    """The dotted path where a fastbase class or function is defined, or of a fastbase module; None for
    anything else."""
    if inspect.ismodule(obj):
        return obj.__name__ if obj.__name__.split(".")[0] == "fastbase" else None
    if not (inspect.isclass(obj) or inspect.isroutine(obj)):
        return None
    module, qualname = getattr(obj, "__module__", None) or "", getattr(obj, "__qualname__", "")
    if module.split(".")[0] != "fastbase" or "<" in qualname:
        return None
    return f"{module}.{qualname}"


def _data_defined_at(namespace: str, name: str) -> str | None:
    """The dotted path where a fastbase constant (a tuple, a string, a config object) is assigned: the
    fastbase module that holds the same object under that name and whose source assigns it (a module
    that imports it holds it too, but does not assign it)."""
    value = getattr(sys.modules[namespace], name)
    for module_name, module in sorted(sys.modules.items()):
        if module_name.split(".")[0] != "fastbase" or module is None:
            continue
        if getattr(module, name, None) is value and re.search(rf"^{re.escape(name)}\s*[:=]",
                                                              inspect.getsource(module), re.MULTILINE):
            return f"{module_name}.{name}"
    return None


def _summary(obj) -> str:
    """The first sentence of an object's docstring, for a table cell."""
    paragraph = (inspect.getdoc(obj) or "").split("\n\n")[0].replace("\n", " ").strip()
    sentence = re.split(r"(?<=\.)\s+(?=[A-Z])", paragraph, maxsplit=1)[0]
    return sentence.replace("|", "\\|")


def reference_pages() -> dict[str, str]:
    """{site path: Markdown} for the reference index and one page per namespace."""
    documented: set[str] = set()  # dotted paths documented on a page already
    intro = ("One page per notebook namespace: what `from NAMESPACE import *` gives. Generated from each "
             "namespace's `__all__` when the site is built. An object several namespaces export is documented on "
             "the first page below that exports it.")
    pages, index = {}, ["# API reference", "", intro, "", "| namespace | what it is for |", "|---|---|"]
    for namespace in NAMESPACES:
        module = importlib.import_module(namespace)
        page = f"{REFERENCE}/{namespace.removeprefix('fastbase.')}.md"
        index.append(f"| [`{namespace}`]({posixpath.basename(page)}) | {_summary(module)} |")
        own, external, rows = [], [], []
        for name in sorted(module.__all__, key=str.lower):
            obj = getattr(module, name)
            path = _defined_at(obj)
            if path is None and not inspect.ismodule(obj) and not inspect.isclass(obj) and not callable(obj):
                path = _data_defined_at(namespace, name)
            if path is None:
                external.append(name)
                continue
            real_name = path.rsplit(".", 1)[1]
            summary = _summary(obj) if path == _defined_at(obj) else ""
            if real_name != name:  # fastai v1's other name for it (AccumulateScheduler...)
                summary = f"another name for `{real_name}`. {summary}"
            rows.append(f"| [`{name}`][{path}] | {summary} |")
            if path not in documented:
                documented.add(path)
                own.append(path)
        text = [f"# `{namespace}`", "", inspect.getdoc(module) or "", "", "## Names", "",
                "| name | summary |", "|---|---|", *rows, ""]
        if external:
            text += ["Also exported for notebooks, from Python and the libraries fastbase builds on (NumPy, PyTorch, "
                     "Pillow, matplotlib, pandas): "
                     + ", ".join(f"`{n}`" for n in external) + ".", ""]
        for path in own:  # a module (`models`): its docstring, not every member again
            options = "\n    options:\n      members: false" if inspect.ismodule(sys.modules.get(path)) else ""
            text.append(f"::: {path}{options}\n")
        pages[page] = "\n".join(text)
    pages[f"{REFERENCE}/README.md"] = "\n".join(index) + "\n"
    return pages


# --- the hooks --------------------------------------------------------------------------------------------------------
def on_files(files: Files, config) -> Files:
    """Add the reference pages and the repository files that the pages link to outside docs/."""
    for path, text in reference_pages().items():
        files.append(File.generated(config, path, content=text))
    added = set()
    queue = [(f.src_uri, Path(f.abs_src_path).read_text(encoding="utf-8"))
             for f in files.documentation_pages() if f.abs_src_path]
    while queue:
        src_uri, text = queue.pop()
        for link_path, _ in _relative_targets(text):
            target = _repo_target(_repo_path(src_uri), link_path)
            site = _site_path(target)
            if site is None or target.startswith(DOCS + "/") or target in added:
                continue
            added.add(target)
            files.append(File.generated(config, site, abs_src_path=str(ROOT / target)))
            if target.endswith(".md"):
                queue.append((site, (ROOT / target).read_text(encoding="utf-8")))
    return files


def on_page_markdown(markdown: str, page, config, files) -> str:
    return _rewrite(markdown, page.file.src_uri)
