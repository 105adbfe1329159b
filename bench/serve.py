"""Benchmark: `fastbase serve` under concurrent clients, with server-side batching on and off,
against `load_learner(...).predict` called in a loop.

Model: `cnn_learner(data, models.<--arch>, pretrained=False)` (random weights: the figures are
about speed) at --size px with 10 classes, exported once; the requests are --images different
noise JPEGs of 320x240 (a typical upload, decoded and resized per request as `predict` does).
Settings:

  predict loop        one process calls `learn.predict(file)` over the images, one at a time
  serve, batch off    `fastbase serve --max-batch 1`: one forward pass per request
  serve, batch on     `fastbase serve --max-batch 32 --max-wait-ms W`: requests that arrive while
                      the model runs (or within W ms of the first) share one forward pass

The load generator runs in this process: N client threads, each with its own keep-alive HTTP
connection, POST the images (multipart, as `curl -F file=@...`) back to back for --seconds; each
setting runs --repeats times. The table gives the median requests per second over the repeats,
the latency percentiles over every request of the repeats, the mean batch size the server formed
(from /health), and the server's resident memory after the run (VmRSS) and its peak (VmHWM).

    python bench/serve.py [--arch resnet18] [--size 224] [--clients 1,8,32] [--seconds 8] [--repeats 3]

About 4 minutes on 2 CPU cores at the defaults.
"""
from __future__ import annotations

import argparse
import http.client
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def make_export(folder: Path, arch: str, size: int) -> Path:
    """A 10-class `cnn_learner` export from random weights (no training: speed is what is measured)."""
    import PIL.Image

    from fastbase.vision import ImageDataBunch, cnn_learner, models

    rng = np.random.default_rng(0)
    for split in ("train", "valid"):
        for c in range(10):
            for i in range(2):
                path = folder / "data" / split / f"class{c}" / f"{i}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                PIL.Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(path)
    data = ImageDataBunch.from_folder(folder / "data", size=size, bs=4, num_workers=0)
    learn = cnn_learner(data, getattr(models, arch), pretrained=False, silent=True)
    return learn.export(folder / "export.pkl")


def make_images(folder: Path, n: int) -> list[Path]:
    """`n` different 320x240 JPEGs: smooth noise, so they compress like photos (tens of kB)."""
    import PIL.Image

    rng = np.random.default_rng(1)
    files = []
    for i in range(n):
        small = rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)
        img = PIL.Image.fromarray(small).resize((320, 240), PIL.Image.BICUBIC)
        files.append(folder / f"req_{i}.jpg")
        img.save(files[-1], quality=90)
    return files


def multipart(file: Path) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{file.name}\"\r\n"
            f"Content-Type: image/jpeg\r\n\r\n").encode() + file.read_bytes() + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def load(port: int, bodies: list, clients: int, seconds: float) -> tuple[int, list[float], float]:
    """(requests answered, latencies in s, wall time) of `clients` threads posting back to back."""
    latencies, errors, stop = [], [], threading.Event()
    lock = threading.Lock()
    start_line = threading.Barrier(clients + 1)

    def client(k: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        mine, i = [], k
        start_line.wait()
        while not stop.is_set():
            body, kind = bodies[i % len(bodies)]
            t0 = time.perf_counter()
            conn.request("POST", "/predict", body=body, headers={"Content-Type": kind})
            answer = conn.getresponse()
            answer.read()
            if answer.status != 200:
                errors.append(answer.status)
            mine.append(time.perf_counter() - t0)
            i += clients
        conn.close()
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=client, args=(k,), daemon=True) for k in range(clients)]
    for t in threads:
        t.start()
    start_line.wait()
    t0 = time.perf_counter()
    time.sleep(seconds)
    stop.set()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    if errors:
        raise RuntimeError(f"{len(errors)} requests failed: statuses {sorted(set(errors))}")
    return len(latencies), latencies, wall


def memory_mb(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) of process `pid` in MiB."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0]) / 1024
    return fields.get("VmRSS", float("nan")), fields.get("VmHWM", float("nan"))


def percentiles(latencies: list[float]) -> list[float]:
    return [float(np.percentile(latencies, q)) * 1000 for q in (50, 95, 99)]


def predict_loop(export: Path, images: list[Path], seconds: float, repeats: int) -> dict:
    from fastbase.vision import load_learner

    learn = load_learner(export)
    for fn in images[:3]:
        learn.predict(fn)  # warm-up
    rates, latencies = [], []
    for _ in range(repeats):
        n, t_end = 0, time.perf_counter() + seconds
        t0 = time.perf_counter()
        while time.perf_counter() < t_end:
            s = time.perf_counter()
            learn.predict(images[n % len(images)])
            latencies.append(time.perf_counter() - s)
            n += 1
        rates.append(n / (time.perf_counter() - t0))
    return {"setting": "predict loop", "clients": 1, "rps": statistics.median(rates), "ms": percentiles(latencies),
            "batch": 1.0, "rss": float("nan"), "peak": float("nan")}


def serve_rows(export: Path, images: list[Path], name: str, flags: list, args) -> list[dict]:
    sys.path.insert(0, str(ROOT / "tests"))
    from serve_helpers import ServerProcess

    bodies = [multipart(fn) for fn in images]
    server = ServerProcess(export, *flags)
    rows = []
    try:
        load(server.port, bodies, 2, 1.0)  # warm-up
        for clients in args.clients:
            rates, latencies = [], []
            before = _health(server.port)
            for _ in range(args.repeats):
                n, lat, wall = load(server.port, bodies, clients, args.seconds)
                rates.append(n / wall)
                latencies += lat
            after = _health(server.port)
            batch = (after["predictions"] - before["predictions"]) / max(1, after["batches"] - before["batches"])
            rss, peak = memory_mb(server.proc.pid)
            rows.append({"setting": name, "clients": clients, "rps": statistics.median(rates),
                         "ms": percentiles(latencies), "batch": batch, "rss": rss, "peak": peak})
            print(_line(rows[-1]), flush=True)
    finally:
        server.stop()
    return rows


def _health(port: int) -> dict:
    import json

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("GET", "/health")
    data = json.loads(conn.getresponse().read())
    conn.close()
    return data


HEADER = (f"{'setting':<18} {'clients':>7} {'req/s':>8} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} "
          f"{'mean batch':>10} {'RSS MiB':>8} {'peak MiB':>8}")


def _line(r: dict) -> str:
    p50, p95, p99 = r["ms"]
    return (f"{r['setting']:<18} {r['clients']:>7} {r['rps']:>8.1f} {p50:>8.1f} {p95:>8.1f} {p99:>8.1f} "
            f"{r['batch']:>10.1f} {r['rss']:>8.0f} {r['peak']:>8.0f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", default="resnet18", help="architecture in fastbase.vision.models (default: %(default)s)")
    parser.add_argument("--size", type=int, default=224, help="model input size in px (default: %(default)s)")
    parser.add_argument("--clients", default="1,8,32", help="concurrent clients, comma-separated (default: %(default)s)")
    parser.add_argument("--seconds", type=float, default=8.0, help="load per repeat and setting (default: %(default)s)")
    parser.add_argument("--repeats", type=int, default=3, help="repeats per setting (default: %(default)s)")
    parser.add_argument("--images", type=int, default=16, help="different request images (default: %(default)s)")
    parser.add_argument("--max-batch", type=int, default=32, help="--max-batch with batching on (default: %(default)s)")
    parser.add_argument("--max-wait-ms", type=float, default=10.0, help="--max-wait-ms (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads in the server and the predict "
                        "loop (default: fastbase's: every CPU)")
    args = parser.parse_args()
    args.clients = [int(c) for c in args.clients.split(",")]

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    extra = ["--threads", str(args.threads)] if args.threads else []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        export, images = make_export(tmp, args.arch, args.size), make_images(tmp, args.images)
        print(f"{args.arch} at {args.size} px, random weights; {len(images)} JPEGs of 320x240 "
              f"({np.mean([f.stat().st_size for f in images]) / 1024:.0f} kB on average); torch threads "
              f"{torch.get_num_threads()}\n")
        print(HEADER, flush=True)
        baseline = predict_loop(export, images, args.seconds, args.repeats)
        print(_line(baseline), flush=True)
        off = serve_rows(export, images, "serve, batch off", ["--max-batch", 1, *extra], args)
        on = serve_rows(export, images, "serve, batch on", ["--max-batch", args.max_batch, "--max-wait-ms",
                                                            args.max_wait_ms, *extra], args)
    print("\n" + HEADER)
    for row in [baseline, *off, *on]:
        print(_line(row))
    print("\nthroughput of batching on over off, and over the predict loop:")
    for a, b in zip(on, off):
        print(f"  {a['clients']:>3} clients: {a['rps'] / b['rps']:.2f}x over batch off, "
              f"{a['rps'] / baseline['rps']:.2f}x over the predict loop")


if __name__ == "__main__":
    main()
