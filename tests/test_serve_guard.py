"""`fastbase serve`'s guards on a real server (a subprocess on 127.0.0.1): the API key (401 without
it on /predict, /info and /metrics; the page and /health open), the bound on held predictions (503
with Retry-After, before the body is read), the per-request timeout (408 for a body that does not
arrive, 504 for a prediction that is not ready) and /metrics in Prometheus' text format."""
import io
import os
import socket
import time
import warnings
from pathlib import Path

import PIL.Image
import pytest
import torch
from tiny_vision import noise_folder, tiny_learner

from fastbase.cli import build_parser
from fastbase.data import DataError
from fastbase.serve import create_app, serve
from fastbase.serve_config import ServeConfig, config_from_args
from fastbase.serve_guard import API_KEY_ENV, bearer_ok, is_loopback, resolve_api_key

pytest.importorskip("starlette", reason="fastbase serve needs pip install 'fastbase[serve]'")
pytest.importorskip("prometheus_client", reason="fastbase serve needs pip install 'fastbase[serve]'")
requests = pytest.importorskip("requests", reason="the tests talk HTTP with requests")

from serve_helpers import ServerProcess

KEY = "s3cret-key"
TESTS = Path(__file__).parent


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    root = noise_folder(tmp_path_factory.mktemp("guard"), per_class=(4, 2))
    return tiny_learner(root, pretrained=False).export()


@pytest.fixture(scope="module")
def server(export):
    before = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(TESTS), before]))  # the export names tiny_vision
    try:
        server = ServerProcess(export, "--api-key", KEY, "--max-queue", "2", "--timeout", "2", "--threads", "1",
                               timeout=240)  # a starved CPU can take minutes to import torch
    finally:
        if before is None:
            del os.environ["PYTHONPATH"]
        else:
            os.environ["PYTHONPATH"] = before
    yield server
    server.stop()


def png() -> bytes:
    buf = io.BytesIO()
    PIL.Image.new("RGB", (16, 16), (200, 30, 30)).save(buf, "PNG")
    return buf.getvalue()


def auth(key=KEY) -> dict:
    return {"Authorization": f"Bearer {key}"}


def predict(server, headers):
    return requests.post(server.url + "/predict", data=png(), headers={"Content-Type": "image/png", **headers},
                         timeout=30)


# --- the key ----------------------------------------------------------------------------------------
def test_the_key_closes_predict_info_and_metrics_and_leaves_the_page_and_health_open(server):
    assert requests.get(server.url + "/", timeout=10).status_code == 200
    assert requests.get(server.url + "/health", timeout=10).status_code == 200
    for headers in ({}, auth("wrong"), {"Authorization": KEY}, {"Authorization": f"Basic {KEY}"}):
        refused = predict(server, headers)
        assert refused.status_code == 401 and "Authorization: Bearer" in refused.json()["error"]
        assert refused.headers["WWW-Authenticate"].startswith("Bearer")
        for path in ("/info", "/metrics"):
            assert requests.get(server.url + path, headers=headers, timeout=10).status_code == 401
    answer = predict(server, auth())
    assert answer.status_code == 200 and answer.json()["label"] in ("ants", "bees")
    info = requests.get(server.url + "/info", headers=auth(), timeout=10)
    assert info.status_code == 200 and info.json()["server"]["api_key"] is True and KEY not in info.text
    assert info.json()["server"]["max_queue"] == 2 and info.json()["server"]["timeout"] == 2


def test_bearer_check_and_key_sources(monkeypatch):
    assert bearer_ok(f"Bearer {KEY}", KEY) and bearer_ok(f"bearer {KEY}", KEY)
    assert not any(bearer_ok(h, KEY) for h in (None, "", KEY, f"Bearer {KEY}x", f"Bearer {KEY[:-1]}", "Bearer "))
    monkeypatch.setenv(API_KEY_ENV, "from-env")
    assert resolve_api_key(None) == "from-env" and resolve_api_key("flag") == "flag"
    monkeypatch.setenv(API_KEY_ENV, "")
    assert resolve_api_key(None) is None
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost") and is_loopback("127.1.2.3")
    assert not any(is_loopback(h) for h in ("0.0.0.0", "::", "192.168.1.4", "example.com"))


def test_listening_beyond_loopback_without_a_key_warns(export, monkeypatch):
    import uvicorn

    monkeypatch.syspath_prepend(str(TESTS))
    monkeypatch.setattr(uvicorn, "run", lambda *args, **kwargs: None)  # check and announce, do not listen
    monkeypatch.delenv(API_KEY_ENV, raising=False)
    with pytest.warns(UserWarning, match="listens on 0.0.0.0, beyond this machine, without an API key"):
        serve(ServeConfig(str(export), host="0.0.0.0", threads=1))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        serve(ServeConfig(str(export), host="0.0.0.0", threads=1, api_key=KEY))
        serve(ServeConfig(str(export), host="127.0.0.1", threads=1))


@pytest.mark.parametrize("flags", [["--max-queue", "0"], ["--timeout", "0"]])
def test_bad_limits_are_usage_errors(flags):
    args = build_parser().parse_args(["serve", "export.pkl", *flags])
    with pytest.raises(DataError):
        config_from_args(args)


# --- the bound and the timeout on the real server ---------------------------------------------------------
def slow_sender(server) -> socket.socket:
    """A client that sends the headers of a 100 kB upload and 4 bytes of it, then nothing."""
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=30)
    sock.sendall(b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\n" + f"Authorization: Bearer {KEY}\r\n".encode() +
                 b"Content-Type: image/png\r\nContent-Length: 100000\r\n\r\n\x89PNG")
    return sock


def read_reply(sock: socket.socket) -> str:
    """The whole HTTP reply on `sock`: headers and body can arrive in separate packets."""
    data = b""
    while True:
        chunk = sock.recv(4096)
        data += chunk
        head, sep, body = data.partition(b"\r\n\r\n")
        if not chunk or (sep and b"content-length:" in head.lower() and len(body) >= int(
                head.lower().split(b"content-length:")[1].split(b"\r\n")[0])):
            return data.decode()


def held(server) -> int:
    return requests.get(server.url + "/health", timeout=10).json()["held"]


def test_past_max_queue_requests_get_503_and_slow_senders_time_out_with_408(server):
    senders = [slow_sender(server) for _ in range(2)]
    deadline = time.monotonic() + 10
    while held(server) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    busy = predict(server, auth())
    assert busy.status_code == 503 and busy.headers["Retry-After"] == "1" and "--max-queue" in busy.json()["error"]
    for sock in senders:
        reply = read_reply(sock)
        sock.close()
        assert reply.startswith("HTTP/1.1 408") and "did not arrive within the server's --timeout of 2 s" in reply
    assert held(server) == 0 and predict(server, auth()).status_code == 200  # the server keeps serving
    metrics = requests.get(server.url + "/metrics", headers=auth(), timeout=10).text
    assert 'fastbase_requests_total{path="/predict",status="503"} 1.0' in metrics
    assert 'fastbase_requests_total{path="/predict",status="408"} 2.0' in metrics
    assert "fastbase_rejected_total 1.0" in metrics


def test_metrics_are_prometheus_text(server):
    predict(server, auth())
    assert predict(server, {}).status_code == 401  # counted too (tests may run on other workers, in any order)
    answer = requests.get(server.url + "/metrics", headers=auth(), timeout=10)
    assert answer.status_code == 200 and answer.headers["Content-Type"].startswith("text/plain")
    text = answer.text
    expected = ['fastbase_requests_total{path="/predict",status="200"}',
                'fastbase_requests_total{path="/predict",status="401"}',
                'fastbase_request_seconds_bucket{le="0.005",path="/predict"}',
                "fastbase_batch_size_count", "fastbase_queue_depth 0.0", "fastbase_model_load_seconds "]
    for line in expected:
        assert line in text, line
    load = float(next(li for li in text.splitlines() if li.startswith("fastbase_model_load_seconds ")).split()[1])
    assert 0 < load < 120


class SlowModel:
    """A stand-in for ServedModel whose forward pass takes `seconds`."""
    classes, load_seconds, takes_text = ["a", "b"], 0.0, False  # takes_text: image uploads, as ServedModel says

    def __init__(self, seconds):
        self.seconds = seconds

    def decode(self, body, name):
        return torch.zeros(1, 1)

    def predict(self, xs):
        time.sleep(self.seconds)
        return [{"label": "a", "probability": 1.0, "probabilities": {"a": 1.0, "b": 0.0}} for _ in xs]


def test_a_prediction_not_ready_within_the_timeout_gets_504_and_a_later_one_is_served():
    from starlette.testclient import TestClient

    model = SlowModel(0.6)
    app = create_app(ServeConfig("unused", timeout=0.3, max_wait_ms=0), model=model)
    with TestClient(app) as client:
        late = client.post("/predict", content=b"x", headers={"Content-Type": "image/png"})
        assert late.status_code == 504 and late.headers["Retry-After"] == "1"
        assert "No prediction within the server's --timeout of 0.3 s" in late.json()["error"]
        time.sleep(0.5)  # the abandoned batch finishes
        model.seconds = 0.0
        assert client.post("/predict", content=b"x", headers={"Content-Type": "image/png"}).json()["label"] == "a"
