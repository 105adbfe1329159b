"""Start `fastbase serve` in a subprocess on 127.0.0.1 (a free port) for tests and `bench/serve.py`.

`ServerProcess(export, *flags)` runs the command with this checkout first on the path, waits until
`GET /health` answers, and `stop()`s it (SIGINT, then kill); its stderr goes to a file so a failed
start can say why.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_command(export, *flags) -> list[str]:
    return [sys.executable, "-m", "fastbase.cli", "serve", str(export), *map(str, flags)]


def child_env() -> dict:
    """The environment for a child `fastbase`: this checkout's package first on the path."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    return env


class ServerProcess:
    def __init__(self, export, *flags, timeout: float = 90.0):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = tempfile.NamedTemporaryFile("w+", suffix=".log", delete=False)  # noqa: SIM115 -- kept open
        self.proc = subprocess.Popen(serve_command(export, "--port", self.port, *flags), env=child_env(),
                                     cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"fastbase serve exited {self.proc.returncode}:\n{self.output()}")
            try:
                if requests.get(self.url + "/health", timeout=2).status_code == 200:
                    return
            except requests.ConnectionError:
                pass
            if time.monotonic() > deadline:
                output = self.output()
                self.stop()
                raise RuntimeError(f"fastbase serve did not answer within {timeout} s:\n{output}")
            time.sleep(0.1)

    def output(self, tail: int | None = 4000) -> str:
        """What the server printed (stdout and stderr), its last `tail` characters (None: all)."""
        text = Path(self.log.name).read_text()
        return text[-tail:] if tail else text

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        Path(self.log.name).unlink(missing_ok=True)


class Chromium:
    """Headless Chromium driven over the DevTools protocol on a pipe (`--remote-debugging-pipe`:
    commands go to its fd 3, answers come from its fd 4, NUL-separated JSON), so no driver package
    is needed. `open(url)` attaches to a page; `send(method, **params)` runs one command there."""

    def __init__(self, binary: str, profile):
        import fcntl

        cmd_r, self._cmd_w = os.pipe()
        self._res_r, res_w = os.pipe()
        # above the low fds, so that putting them on 3 and 4 cannot overwrite one with the other
        ends = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10) for fd in (cmd_r, res_w)]
        for fd in (cmd_r, res_w):
            os.close(fd)
        flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--remote-debugging-pipe", f"--user-data-dir={profile}", "about:blank"]
        script = f'exec "$0" "$@" 3<&{ends[0]} 4>&{ends[1]} {ends[0]}<&- {ends[1]}>&-'
        self.proc = subprocess.Popen([shutil.which("bash") or "/bin/bash", "-c", script, binary, *flags], pass_fds=ends,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        cmd_r, res_w = ends
        os.close(cmd_r)
        os.close(res_w)
        self._buffer, self._id, self.session = b"", 0, None

    def _call(self, method: str, session=None, timeout: float = 30.0, **params) -> dict:
        import json
        import select

        self._id += 1
        message = {"id": self._id, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        os.write(self._cmd_w, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            while b"\0" in self._buffer:
                raw, self._buffer = self._buffer.split(b"\0", 1)
                answer = json.loads(raw)
                if answer.get("id") == self._id:
                    if "error" in answer:
                        raise RuntimeError(f"{method}: {answer['error']}")
                    return answer["result"]
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._res_r], [], [], left)[0]:
                raise TimeoutError(f"Chromium did not answer {method} within {timeout} s")
            chunk = os.read(self._res_r, 1 << 16)
            if not chunk:
                raise RuntimeError("Chromium closed its DevTools pipe")
            self._buffer += chunk

    def open(self, url: str) -> None:
        target = self._call("Target.createTarget", url=url)["targetId"]
        self.session = self._call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]

    def send(self, method: str, **params) -> dict:
        return self._call(method, self.session, **params)

    def evaluate(self, expression: str):
        result = self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression[:80]}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 30.0):
        """The value of `expression` once it is truthy."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = self.evaluate(expression)
            if value:
                return value
            time.sleep(0.1)
        raise TimeoutError(f"{expression} stayed false for {timeout} s")

    def close(self) -> None:
        try:
            self._call("Browser.close", timeout=5)
        except (RuntimeError, TimeoutError, OSError):
            pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._cmd_w)
        os.close(self._res_r)
