"""Load test: `fastbase serve` under 64 Locust users mixing good images with bad uploads, against
127.0.0.1 only, for a bounded time (default 150 s).

Each user, back to back, picks one of (weights in brackets):
  good [12]         a 320x240 JPEG from a set of --images; the answer must be 200 with the label
                    `load_learner(...).predict` gives for that file
  truncated [1]     a JPEG cut in half: must be 422
  huge [1]          a body over the server's --max-body-mb (1.5 MB against 1 MB): must be 413
  wrong type [1]    text/plain: must be 415
  slow sender [1]   a raw connection that sends the headers and half the body, then stalls: the
                    server must answer 408 once its --timeout passes, holding nothing after
Reported: requests and status codes per kind, wrong answers, 5xx (must be 0), p50/p99 latency of
the good requests, and the server's resident memory (VmRSS) sampled every second: its peak and
the mean of each third and each tenth of the run (flat memory: the later ones are close; the first
includes the allocator's warm-up).

The model is a `cnn_learner(models.<--arch>, pretrained=False)` export at --size px (random
weights: the figures are about the server, not accuracy), built as `bench/serve.py` builds it.

Locust is not a dependency of fastbase: `pip install 'fastbase[bench]'` (or `pip install locust`).

    python bench/serve_load.py [--users 64] [--seconds 150] [--arch squeezenet1_1] [--size 96]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
KINDS = ("good", "truncated", "huge", "wrong type", "slow sender")
EXPECTED = {"truncated": 422, "huge": 413, "wrong type": 415, "slow sender": 408}


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--users", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=150.0, help="length of the run (bounded)")
    parser.add_argument("--arch", default="squeezenet1_1")
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--timeout", type=float, default=10.0, help="the server's --timeout (slow senders wait it)")
    parser.add_argument("--threads", type=int, default=None, help="the server's --threads")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    # locust patches the standard library for gevent when imported: before anything that opens sockets
    import gevent  # noqa: I001
    from locust import User, between, task
    from locust.env import Environment

    import socket
    import statistics
    import tempfile
    import time
    import uuid
    from collections import Counter

    import requests

    sys.path.insert(0, str(ROOT / "bench"))
    sys.path.insert(0, str(ROOT / "tests"))
    sys.path.insert(0, str(ROOT))
    from serve import make_export, make_images, memory_mb  # bench/serve.py
    from serve_helpers import ServerProcess

    from fastbase.vision import load_learner

    folder = Path(tempfile.mkdtemp(prefix="serve_load_"))
    export = make_export(folder, args.arch, args.size)
    (folder / "images").mkdir()
    images = make_images(folder / "images", args.images)
    learn = load_learner(export)
    labels = [str(learn.predict(fn)[0]) for fn in images]
    bodies = [fn.read_bytes() for fn in images]
    truncated = bodies[0][: len(bodies[0]) // 2]
    huge = b"\xff\xd8" + bytes(int(1.5 * 2**20))
    flags = ["--max-body-mb", "1", "--timeout", str(args.timeout), "--max-queue", "128"]
    if args.threads:
        flags += ["--threads", str(args.threads)]
    server = ServerProcess(export, *flags, timeout=600)  # a busy shared machine can take minutes to start it
    statuses = {kind: Counter() for kind in KINDS}
    wrong, latencies = [], []

    def multipart(body: bytes, name: str) -> tuple[bytes, str]:
        boundary = uuid.uuid4().hex
        head = (f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
                "Content-Type: image/jpeg\r\n\r\n").encode()
        return head + body + f"\r\n--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"

    def post(session, kind: str, body: bytes, content_type: str):
        start = time.perf_counter()
        try:
            answer = session.post(server.url + "/predict", data=body, headers={"Content-Type": content_type},
                                  timeout=120)
        except requests.RequestException as e:
            statuses[kind][type(e).__name__] += 1
            return None
        statuses[kind][answer.status_code] += 1
        return answer, time.perf_counter() - start

    def slow_sender() -> None:
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=args.timeout + 30)
        try:
            sock.sendall(b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/jpeg\r\n"
                         + f"Content-Length: {len(bodies[0])}\r\n\r\n".encode())
            for i in range(0, len(bodies[0]) // 2, 512):
                sock.sendall(bodies[0][i:i + 512])
                gevent.sleep(0.05)
            reply = sock.recv(4096).split(b" ", 2)
            statuses["slow sender"][int(reply[1]) if len(reply) > 1 else "no answer"] += 1
        except OSError as e:
            statuses["slow sender"][type(e).__name__] += 1
        finally:
            sock.close()

    class Client(User):
        wait_time = between(0, 0.05)

        def on_start(self):
            self.session = requests.Session()
            self.k = 0

        @task(12)
        def good(self):
            self.k = (self.k + 1) % len(bodies)
            k = self.k
            body, kind = multipart(bodies[k], images[k].name)
            got = post(self.session, "good", body, kind)
            if got is not None and got[0].status_code == 200:
                latencies.append(got[1])
                if got[0].json()["label"] != labels[k]:
                    wrong.append(images[k].name)

        @task
        def truncated_upload(self):
            post(self.session, "truncated", *multipart(truncated, "cut.jpg"))

        @task
        def huge_upload(self):
            post(self.session, "huge", huge, "image/jpeg")

        @task
        def wrong_type(self):
            post(self.session, "wrong type", b"hello", "text/plain")

        @task
        def slow(self):
            slow_sender()

    memory = []

    def sample_memory():
        while True:
            memory.append(memory_mb(server.proc.pid)[0])
            gevent.sleep(1.0)

    env = Environment(user_classes=[Client])
    runner = env.create_local_runner()
    sampler = gevent.spawn(sample_memory)
    start = time.perf_counter()
    try:
        runner.start(args.users, spawn_rate=args.users / 5)
        gevent.sleep(args.seconds)
        runner.quit()
        elapsed = time.perf_counter() - start
    finally:
        sampler.kill()
        server.stop()
    report(args, statuses, wrong, latencies, memory, elapsed, statistics)


def report(args, statuses, wrong, latencies, memory, elapsed, statistics) -> None:
    print(f"{args.users} users, {elapsed:.0f} s, {args.arch} at {args.size} px")
    print("| kind | requests | status codes | expected |")
    print("|---|---|---|---|")
    for kind, counts in statuses.items():
        codes = ", ".join(f"{code}: {n}" for code, n in sorted(counts.items(), key=str))
        print(f"| {kind} | {sum(counts.values())} | {codes} | {EXPECTED.get(kind, 200)} |")
    server_errors = sum(n for counts in statuses.values() for code, n in counts.items()
                        if isinstance(code, int) and code >= 500)
    unexpected = sum(n for kind, counts in statuses.items() for code, n in counts.items()
                     if code != EXPECTED.get(kind, 200))
    lat = sorted(latencies)
    p50, p99 = (lat[len(lat) // 2], lat[min(len(lat) - 1, int(len(lat) * 0.99))]) if lat else (float("nan"),) * 2
    third = max(1, len(memory) // 3)
    print(f"good answered: {len(lat)}, wrong labels: {len(wrong)}, 5xx: {server_errors}, other unexpected: "
          f"{unexpected - server_errors}")
    print(f"good latency p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms; {len(lat) / elapsed:.1f} good answers/s")
    print(f"server RSS: peak {max(memory):.0f} MiB, first third {statistics.mean(memory[:third]):.0f} MiB, "
          f"middle third {statistics.mean(memory[third:-third] or memory):.0f} MiB, "
          f"last third {statistics.mean(memory[-third:]):.0f} MiB ({len(memory)} samples)")
    tenths = [statistics.mean(memory[i * len(memory) // 10:(i + 1) * len(memory) // 10] or memory[:1])
              for i in range(10)]
    print("server RSS per tenth of the run (MiB): " + " ".join(f"{m:.0f}" for m in tenths))


if __name__ == "__main__":
    main()
