"""Layer 8: what keeps `fastbase serve` answerable: an API key, a bound on the requests it holds, and
Prometheus metrics.

- **Key**: with `--api-key` (or `FASTBASE_API_KEY` in the environment) `/predict`, `/info` and
  `/metrics` answer only requests with `Authorization: Bearer KEY`, compared in constant time
  (`hmac.compare_digest`); others get 401. The page and `/health` stay open (load balancers probe
  them). Listening beyond loopback without a key is allowed, with a warning at start.
- **Bound**: at most `max_queue` predictions are held at once (reading, decoding, waiting for or in a
  batch); past that a request gets 503 with `Retry-After` before its body is read, so memory stays
  flat under any burst.
- **Metrics**: `ServeMetrics` keeps its own prometheus-client registry (one per app, not the
  process-wide default): requests by path and status, latency by path, batch sizes, the number of
  predictions held now, and how long the model took to load. `/metrics` renders it in Prometheus'
  text format. Under `--workers N` each process answers with its own figures.
"""
from __future__ import annotations

import hmac
import ipaddress
import os

__all__ = ["API_KEY_ENV", "ClientError", "ServeMetrics", "bearer_ok", "is_loopback", "resolve_api_key"]

API_KEY_ENV = "FASTBASE_API_KEY"
# latency buckets (seconds): from a cached small image to a slow CPU batch behind a queue
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class ClientError(Exception):
    """A request the server refuses: `status` (4xx) and a message for the client."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def resolve_api_key(flag: str | None) -> str | None:
    """The key from `--api-key`, else from the `FASTBASE_API_KEY` environment variable; None when
    neither is set (an empty value counts as unset)."""
    key = flag if flag is not None else os.environ.get(API_KEY_ENV)
    return key or None


def bearer_ok(header: str | None, key: str) -> bool:
    """True when `header` (the request's Authorization value) is `Bearer <key>`; compared in constant
    time so that the answer's timing does not tell how much of a guess was right."""
    scheme, _, given = (header or "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), key.encode())


def is_loopback(host: str) -> bool:
    """True for addresses only this machine reaches: 127.0.0.0/8, ::1, 'localhost'."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to any interface


class ServeMetrics:
    """The server's counters and histograms, in a registry of its own."""

    def __init__(self):
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = registry = CollectorRegistry()
        self.requests = Counter("fastbase_requests", "HTTP requests answered, by path and status",
                                ["path", "status"], registry=registry)
        self.latency = Histogram("fastbase_request_seconds", "Time from request to answer, by path", ["path"],
                                 buckets=LATENCY_BUCKETS, registry=registry)
        self.batch_size = Histogram("fastbase_batch_size", "Images per forward pass", buckets=BATCH_BUCKETS,
                                    registry=registry)
        self.queue_depth = Gauge("fastbase_queue_depth", "Predictions held now (reading, decoding, queued, running)",
                                 registry=registry)
        self.rejected = Counter("fastbase_rejected", "Requests refused with 503 because the queue was full",
                                registry=registry)
        self.model_load = Gauge("fastbase_model_load_seconds", "Seconds the export took to load and check",
                                registry=registry)

    def observe(self, path: str, status: int, seconds: float) -> None:
        self.requests.labels(path, str(status)).inc()
        self.latency.labels(path).observe(seconds)

    def render(self) -> tuple[bytes, str]:
        """(body, content type) of the metrics in Prometheus' text format."""
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST
