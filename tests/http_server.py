"""A local HTTP file server for download tests that can misbehave on request.

`FileServer` serves byte strings registered with `add(path, data)` from a threaded `http.server`
on 127.0.0.1 (a free port). Its `Behaviour` can make it drop the connection half-way, answer given
statuses first (500 then 200), always answer one status (404), ignore `Range`, send wrong bytes, or
stall before the body (a slow network). It records every request (path and headers) and the body
bytes it sent, so tests can assert on resumes and retries. Also used by `bench/download.py`.
"""
from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Behaviour:
    drop_after: int | None = None  # close the connection after this many body bytes...
    drop_times: int = 1  # ...on this many requests
    statuses: list[int] = field(default_factory=list)  # answered first, one per request, before serving
    status: int | None = None  # answer every request with this status
    ignore_range: bool = False  # always send the whole file with 200
    corrupt: bool = False  # flip the bits of every body byte
    stall: float = 0.0  # seconds to wait before sending the body...
    stall_times: int = 1  # ...on this many requests


@dataclass
class Request:
    path: str
    headers: dict[str, str]
    status: int = 0


class FileServer:
    """Start with `FileServer()`, register files with `add`, stop with `stop()` (idempotent)."""

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.behaviour = Behaviour()
        self.requests: list[Request] = []
        self._bytes_sent = 0
        self._active = 0  # handlers still running: the client may finish reading before they record
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.httpd.daemon_threads = True
        self.httpd.owner = self
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        self._stopped = False

    def add(self, path: str, data: bytes) -> str:
        """Serve `data` at `path` ('/dir/name.tgz'); returns its full URL."""
        self.files[path] = data
        return self.url + path

    @property
    def bytes_sent(self) -> int:
        """Body bytes sent, once every handler in flight has finished (waits up to 5 s)."""
        with self._idle:
            self._idle.wait_for(lambda: self._active == 0, timeout=5)
            return self._bytes_sent

    def count(self, path: str | None = None) -> int:
        return sum(1 for r in self.requests if path is None or r.path == path)

    def stop(self) -> None:
        if not self._stopped:
            self._stopped = True
            self.httpd.shutdown()
            self.httpd.server_close()

    def _record(self, request: Request, nbytes: int = 0) -> None:
        with self._lock:
            if request is not None:
                self.requests.append(request)
            self._bytes_sent += nbytes

    def _enter(self) -> None:
        with self._lock:
            self._active += 1

    def _leave(self) -> None:
        with self._idle:
            self._active -= 1
            self._idle.notify_all()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"  # one request per connection: a dropped connection is unambiguous

    def log_message(self, *args):  # keep test output quiet
        pass

    def do_GET(self):
        owner: FileServer = self.server.owner
        owner._enter()
        try:
            self._serve(owner)
        finally:
            owner._leave()

    def _serve(self, owner: FileServer):
        b = owner.behaviour
        request = Request(self.path, dict(self.headers.items()))
        owner._record(request)
        n = len(owner.requests)
        status = b.statuses.pop(0) if b.statuses else b.status
        data = owner.files.get(self.path)
        if status is None and data is None:
            status = 404
        if status is not None:
            request.status = status
            body = f"status {status}".encode()
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        start = 0
        m = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range", ""))
        if m and not b.ignore_range and int(m.group(1)) < len(data):
            start = int(m.group(1))
            request.status = 206
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        elif m and not b.ignore_range:
            request.status = 416
            self.send_response(416)
            self.send_header("Content-Range", f"bytes */{len(data)}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        else:
            request.status = 200
            self.send_response(200)
        body = data[start:]
        if b.corrupt:
            body = bytes(x ^ 0xFF for x in body)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Accept-Ranges", "none" if b.ignore_range else "bytes")
        self.end_headers()
        if b.stall and n <= b.stall_times:
            time.sleep(b.stall)
        if b.drop_after is not None and n <= b.drop_times:
            body = body[: b.drop_after]
        try:
            view, sent = memoryview(body), 0
            while sent < len(body):
                self.wfile.write(view[sent: sent + 2**20])
                sent = min(sent + 2**20, len(body))
        except (BrokenPipeError, ConnectionResetError):
            return
        finally:
            owner._record(None, len(body))
        self.close_connection = True
