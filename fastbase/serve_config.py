"""Layer 8: the settings of `fastbase serve`: `ServeConfig`, the command's flags, and the checks that
turn the flags into a config (a bad value is a usage error, exit 2)."""
from __future__ import annotations

from dataclasses import dataclass, field

from .data import DataError
from .serve_guard import resolve_api_key

__all__ = ["ServeConfig", "add_serve_flags", "config_from_args"]


@dataclass
class ServeConfig:
    """The server's settings, as `fastbase serve` takes them."""
    export: str
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 1
    max_batch: int = 32
    max_wait_ms: float = 10.0
    max_body_mb: float = 8.0
    max_megapixels: float = 40.0
    threads: int | None = None  # torch threads per process; default: the CPUs shared among the workers
    max_queue: int = 128  # predictions held at once (reading, decoding, queued, running); past it: 503
    timeout: float = 30.0  # seconds a request may take from arrival to answer; past it: 408 or 504
    api_key: str | None = field(default=None, repr=False)  # Bearer key for /predict, /info, /metrics


def add_serve_flags(cmd) -> None:
    """The `fastbase serve` command's arguments."""
    add = cmd.add_argument
    add("export", metavar="EXPORT", help="export.pkl (what `fastbase train` or learn.export() wrote), or its folder")
    add("--host", default="127.0.0.1", help="address to listen on; 0.0.0.0 for every interface (default: %(default)s)")
    add("--port", type=int, default=8000, help="port (default: %(default)s)")
    add("--workers", type=int, default=1, help="server processes, each with its own model (default: %(default)s)")
    add("--max-batch", type=int, default=32, help="most requests in one forward pass; 1 turns batching off "
        "(default: %(default)s)")
    add("--max-wait-ms", type=float, default=10.0, help="longest wait for more requests once one is queued "
        "(default: %(default)s)")
    add("--max-body-mb", type=float, default=8.0, help="largest request body; larger gets 413 (default: %(default)s)")
    add("--max-megapixels", type=float, default=40.0, help="largest image (width x height); larger gets 413, as a "
        "guard against decompression bombs (default: %(default)s)")
    add("--threads", type=int, default=None, help="torch threads per process (default: the CPUs over --workers)")
    add("--max-queue", type=int, default=128, help="most predictions held at once; more get 503 with Retry-After "
        "(default: %(default)s)")
    add("--timeout", type=float, default=30.0, help="seconds a request may take; a body still arriving gets 408, a "
        "prediction not ready 504 (default: %(default)s)")
    add("--api-key", default=None, help="answer /predict, /info and /metrics only with 'Authorization: Bearer KEY' "
        "(default: the FASTBASE_API_KEY environment variable, else no key)")


def config_from_args(args) -> ServeConfig:
    names = ("export", "host", "port", "workers", "max_batch", "max_wait_ms", "max_body_mb", "max_megapixels",
             "threads", "max_queue", "timeout")
    config = ServeConfig(**{n: getattr(args, n) for n in names}, api_key=resolve_api_key(args.api_key))
    if config.timeout <= 0:
        raise DataError(f"--timeout must be more than 0 seconds, got {config.timeout:g}.")
    for name in ("workers", "max_batch", "max_queue"):
        if getattr(config, name) < 1:
            raise DataError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(config, name)}.")
    if config.max_wait_ms < 0 or config.max_body_mb <= 0 or config.max_megapixels <= 0:
        raise DataError("--max-wait-ms must be 0 or more, --max-body-mb and --max-megapixels more than 0.")
    return config
