"""The documentation's code runs: every ```python block of README.md and docs/*.md, and the pages'
shape (README short and starting with the install commands, links that lead somewhere).

The convention, stated in docs/README.md:
- a block fenced ```python is runnable: the test executes it;
- a block fenced ```python no-run (it needs a download, a GPU, several processes or a long run) is
  shown with Python highlighting but not executed; so are ```bash, ```text, ```ini ... blocks;
- a page's runnable blocks run in order in one namespace, in a fresh working folder with its own
  FASTBASE_HOME, FASTBASE_NO_BAR=1 and MPLBACKEND=Agg; a failure names the page and the block's line;
- a page with no runnable block says so with `<!-- docs-test: no runnable blocks (why) -->`.

The pages run in one worker process (started once, so torch and fastbase are imported once), not in
the pytest process: a page that changes global settings (threads, determinism) cannot leak into
other tests. Run this file as a script (`python tests/test_docs.py docs/data.md`) to run pages
without pytest.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import traceback
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]
NO_RUN_MARK = "<!-- docs-test: no runnable blocks"
README_MAX_LINES = 250
INSTALL_DEMO = 'python -m pip install -e ".[dev]" && fastbase demo'
INSTALL_TEST = 'python -m pip install -e ".[dev]" && python -m pytest'
FENCE = re.compile(r"^(?P<indent> {0,3})(?P<fence>`{3,}|~{3,})(?P<info>[^`]*)$")


@dataclass
class Block:
    line: int  # 1-based line of the block's first code line
    info: str  # the fence's info string: "python", "python no-run", "bash"...
    code: str

    @property
    def language(self) -> str:
        return self.info.split()[0].lower() if self.info.split() else ""

    @property
    def runnable(self) -> bool:
        return self.language == "python" and "no-run" not in self.info.split()[1:]


def code_blocks(text: str, name: str = "page") -> list[Block]:
    """The fenced code blocks of a Markdown text (CommonMark fences: ``` or ~~~, closed by a fence of the
    same character at least as long). An unclosed fence is an error."""
    blocks, lines, i = [], text.splitlines(), 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        fence, info, start = m["fence"], m["info"].strip(), i + 1
        j = start
        while j < len(lines) and not re.match(rf"^ {{0,3}}{fence[0]}{{{len(fence)},}}\s*$", lines[j]):
            j += 1
        if j == len(lines):
            raise ValueError(f"{name}:{i + 1}: code fence {fence!r} is never closed")
        blocks.append(Block(start + 1, info, "\n".join(lines[start:j])))
        i = j + 1
    return blocks


def rel(page: Path) -> str:
    return str(page.relative_to(ROOT))


# ---------------------------------------------------------------------------------------------
# The worker: runs pages on request, one JSON line in, one JSON line out.

REPLY = "@@docs-test-reply@@ "


def run_page(request: dict) -> dict:
    """Execute a page's runnable blocks in order in one namespace, in `request['cwd']` with
    FASTBASE_HOME=`request['home']`. Line numbers in tracebacks are the Markdown file's."""
    import contextlib
    import gc
    import io
    import time

    environ = dict(os.environ)  # put back afterwards: a page may set FASTBASE_OFFLINE...
    os.environ["FASTBASE_HOME"] = request["home"]
    os.chdir(request["cwd"])
    namespace = {"__name__": "__main__"}
    output = io.StringIO()
    start = time.perf_counter()
    try:
        for block in request["blocks"]:
            # padded so that the code's line numbers are the page's
            code = compile("\n" * (block["line"] - 1) + block["code"], request["page"], "exec")
            try:
                with contextlib.redirect_stdout(output), contextlib.redirect_stderr(output):
                    exec(code, namespace)  # noqa: S102 -- running the page's own code blocks is the test
            except BaseException as e:  # noqa: BLE001 -- SystemExit from a CLI call too: the page failed
                tb = "".join(traceback.format_exception(type(e), e, e.__traceback__))
                return {"ok": False, "line": block["line"], "error": tb, "output": output.getvalue()[-3000:],
                        "seconds": time.perf_counter() - start}
    finally:
        os.environ.clear()
        os.environ.update(environ)
        if "matplotlib.pyplot" in sys.modules:
            sys.modules["matplotlib.pyplot"].close("all")
        namespace.clear()
        gc.collect()  # the page's loaders stop their worker processes now, not during the next page
    return {"ok": True, "seconds": time.perf_counter() - start, "output": output.getvalue()[-3000:]}


def worker_main() -> None:
    import torch

    # One thread: the examples' tiny models gain little from a second one, and on a shared machine a
    # 2-thread OpenMP region waits for a descheduled thread, which made the pages several times slower.
    torch.set_num_threads(1)
    channel = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # output of the pages' own child processes and C code goes to stderr, not the channel
    sys.stdout = sys.stderr
    for line in sys.stdin:
        channel.write(REPLY + json.dumps(run_page(json.loads(line))) + "\n")
        channel.flush()


class Worker:
    """The worker process, seen from the test: `run(page, tmp)` sends a page and waits for its result.
    It imports this checkout's fastbase (PYTHONPATH), whatever `pip install -e` points at."""

    def __init__(self):
        self.proc = None

    def start(self):
        env = {k: v for k, v in os.environ.items() if k not in ("FASTBASE_CONFIG", "FASTBASE_MIRROR", "FASTBASE_OFFLINE")}
        env.update(FASTBASE_NO_BAR="1", MPLBACKEND="Agg", PYTHONDONTWRITEBYTECODE="1",
                   PYTHONPATH=os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])]))
        self.proc = subprocess.Popen([sys.executable, __file__, "--worker"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, env=env, cwd=tempfile.gettempdir())

    def run(self, page: Path, tmp: Path) -> dict:
        if self.proc is None or self.proc.poll() is not None:  # first page, or the last one killed it
            self.start()
        (tmp / "work").mkdir(parents=True, exist_ok=True)
        blocks = [{"line": b.line, "code": b.code} for b in code_blocks(page.read_text(), rel(page)) if b.runnable]
        request = {"page": rel(page), "blocks": blocks, "cwd": str(tmp / "work"), "home": str(tmp / "fastbase_home")}
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        for line in self.proc.stdout:
            if line.startswith(REPLY):
                return json.loads(line[len(REPLY):])
        raise RuntimeError(f"the docs worker died (exit code {self.proc.wait()}) while running {rel(page)}")

    def close(self):
        if self.proc is None:
            return
        self.proc.stdin.close()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def failure_message(page: Path, result: dict) -> str:
    return (f"{rel(page)}: the code block at line {result['line']} failed\n\n{result['error']}\n"
            f"output of the page's blocks (last part):\n{result['output']}")


# ---------------------------------------------------------------------------------------------
# The tests.

try:
    import pytest
except ImportError:  # run as the worker or as a script without pytest
    pytest = None

if pytest is not None:

    @pytest.fixture(scope="module")
    def worker():
        w = Worker()
        yield w
        w.close()

    def test_pages_are_there():
        names = {p.name for p in PAGES if p.parent.name == "docs"}
        assert {"README.md", "data.md", "training.md", "transfer-learning.md", "cli.md", "datasets.md",
                "checkpoints.md", "distributed.md", "deployment.md", "debugging.md", "backbones.md"} <= names

    def test_readme_is_short():
        n = len(README.read_text().splitlines())
        assert n <= README_MAX_LINES, f"README.md has {n} lines; move detail into docs/ (at most {README_MAX_LINES})"

    def test_readme_starts_with_the_two_commands():
        head = "\n".join(README.read_text().splitlines()[:15])
        for command in (INSTALL_DEMO, INSTALL_TEST):
            assert command in head, f"README.md's first 15 lines should hold the command `{command}`"

    @pytest.mark.parametrize("page", PAGES, ids=rel)
    def test_page_has_runnable_code_or_says_why_not(page):
        text = page.read_text()
        blocks = code_blocks(text, rel(page))  # also: every fence is closed
        runnable = [b for b in blocks if b.runnable]
        if NO_RUN_MARK in text:
            assert not runnable, f"{rel(page)} says it has no runnable blocks but has {len(runnable)}"
        else:
            assert runnable, (f"{rel(page)} has no ```python block; add one or mark the page with "
                              f"'{NO_RUN_MARK} (why) -->'")
        for b in blocks:
            assert b.language, f"{rel(page)}:{b.line}: a code block without a language (python, bash, text...)"

    LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")

    def anchors(page: Path) -> set[str]:
        """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
        in_code, result = False, set()
        for line in page.read_text().splitlines():
            if FENCE.match(line):
                in_code = not in_code
            elif not in_code and line.startswith("#"):
                title = line.lstrip("#").strip().lower()
                result.add(re.sub(r"[^\w\- ]", "", title).replace(" ", "-"))
        return result

    @pytest.mark.parametrize("page", [*PAGES, ROOT / "bench" / "RESULTS.md", ROOT / "CHANGELOG.md",
                                      ROOT / "nbs" / "README.md"], ids=rel)
    def test_links_lead_somewhere(page):
        """Relative links name an existing file, and an anchor names a heading of the Markdown page."""
        text = re.sub(r"```.*?```", "", page.read_text(), flags=re.DOTALL)
        for target in LINK.findall(text):
            if re.match(r"^[a-z]+:", target):  # http:, https:, mailto:
                continue
            file, _, anchor = target.partition("#")
            dest = (page.parent / file).resolve() if file else page
            assert dest.exists(), f"{rel(page)}: link to {target}: {dest} does not exist"
            if anchor and dest.suffix == ".md":
                assert anchor in anchors(dest), f"{rel(page)}: link to {target}: no such heading in {dest.name}"

    def has_runnable_blocks(page: Path) -> bool:
        try:
            return any(b.runnable for b in code_blocks(page.read_text(), rel(page)))
        except ValueError:  # an unclosed fence: test_page_has_runnable_code_or_says_why_not reports it
            return True

    @pytest.mark.slow
    @pytest.mark.timeout(240)
    @pytest.mark.parametrize("page", [p for p in PAGES if has_runnable_blocks(p)], ids=rel)
    def test_page_code_blocks_run(page, worker, tmp_path):
        result = worker.run(page, tmp_path)
        if not result["ok"]:
            pytest.fail(failure_message(page, result), pytrace=False)


if __name__ == "__main__":
    if sys.argv[1:] == ["--worker"]:
        worker_main()
    else:  # python tests/test_docs.py [PAGE...]: run pages, print the time each takes (DOCS_SHOW=1: their output)
        pages = [Path(p).resolve() for p in sys.argv[1:]] or PAGES
        w, failed = Worker(), 0
        with tempfile.TemporaryDirectory() as tmp:
            for i, page in enumerate(pages):
                result = w.run(page, Path(tmp) / str(i))
                print(f"{rel(page)}: {'ok' if result['ok'] else 'FAILED'} in {result['seconds']:.1f} s", flush=True)
                if not result["ok"]:
                    failed += 1
                    print(failure_message(page, result))
                elif os.environ.get("DOCS_SHOW"):
                    print(result["output"])
        w.close()
        sys.exit(1 if failed else 0)
