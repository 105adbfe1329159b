"""Throughput of fastbase's `download_data` (streaming sha256, progress bar, atomic rename) against a
plain `requests` stream to disk, both fetching one generated file from a local HTTP server.

    python bench/download.py               # 128 MB file, 5 runs each
    python bench/download.py --size-mb 64 --runs 7

The server runs in its own process (so it does not share the client's GIL); each method runs in a
fresh child process that reports its timings and peak RSS (`resource.getrusage`), so one method's
memory cannot hide in the other's peak. Runs of the two methods are interleaved to share any noise.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing
import os
import statistics
import subprocess
import sys
import tempfile
import time
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from _memory import peak_rss_mb, reset_peak_rss


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def serve(folder: str, conn) -> None:
    """Serve `folder` on a free port of 127.0.0.1 and send the port through `conn`."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), partial(_QuietHandler, directory=folder))
    conn.send(httpd.server_address[1])
    httpd.serve_forever()


def make_file(path: Path, size_mb: int) -> str:
    """Write `size_mb` MiB of random bytes to `path` in 8 MiB pieces; returns its sha256."""
    h = hashlib.sha256()
    with open(path, "wb") as f:
        for _ in range(0, size_mb, 8):
            block = os.urandom(8 * 2**20)
            h.update(block)
            f.write(block)
    return h.hexdigest()


def rss_now_mb() -> float:
    """Current resident memory (Linux /proc), or NaN elsewhere."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return float("nan")


def worker(method: str, url: str, sha: str, dest: str) -> dict:
    """One timed download with `method` ('fastbase' or 'requests'), in this (child) process."""
    if method == "fastbase":
        from fastbase.datasets import download_data
        reset_peak_rss()
        before = rss_now_mb()
        start = time.perf_counter()
        download_data(url, fname=dest, expected_sha256=sha)
    else:
        import requests
        reset_peak_rss()
        before = rss_now_mb()
        start = time.perf_counter()
        with requests.get(url, stream=True, timeout=30) as r, open(dest, "wb") as f:
            r.raise_for_status()
            f.writelines(r.iter_content(2**20))
    seconds = time.perf_counter() - start
    size = os.path.getsize(dest)
    os.unlink(dest)
    return {"seconds": seconds, "bytes": size, "rss_before": before, "peak_rss": peak_rss_mb()}


def run_child(method: str, url: str, sha: str, dest: str) -> dict:
    cmd = [sys.executable, __file__, "--worker", method, "--url", url, "--sha", sha, "--dest", dest]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.rsplit("\nRESULT ", 1)[1])  # the progress bar may share stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mb", type=int, default=128, help="size of the served file in MiB (multiple of 8)")
    parser.add_argument("--runs", type=int, default=5, help="downloads per method (the median is reported)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--sha", help=argparse.SUPPRESS)
    parser.add_argument("--dest", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print("\nRESULT " + json.dumps(worker(args.worker, args.url, args.sha, args.dest)))
        return

    with tempfile.TemporaryDirectory() as tmp:
        served, home = Path(tmp, "served"), Path(tmp, "home")
        served.mkdir()
        os.environ["FASTBASE_HOME"] = str(home)  # the children inherit it: nothing touches ~/.fastbase
        sha = make_file(served / "blob.tgz", args.size_mb)
        parent, child = multiprocessing.Pipe()
        server = multiprocessing.Process(target=serve, args=(str(served), child), daemon=True)
        server.start()
        url = f"http://127.0.0.1:{parent.recv()}/blob.tgz"
        results = {"fastbase": [], "requests": []}
        try:
            for _ in range(args.runs):
                for method, runs in results.items():
                    runs.append(run_child(method, url, sha, str(Path(tmp, f"{method}.bin"))))
        finally:
            server.terminate()
        report(results, args)


def report(results: dict, args) -> None:
    print(f"\nDownloading a {args.size_mb} MiB file from 127.0.0.1, {args.runs} runs each "
          f"(Python {sys.version.split()[0]}, {os.cpu_count()} CPUs)\n")
    print("| method | median MB/s | min MB/s | max MB/s | peak RSS MB | RSS growth MB |")
    print("|---|---:|---:|---:|---:|---:|")
    medians = {}
    for method, runs in results.items():
        speeds = [r["bytes"] / r["seconds"] / 1e6 for r in runs]
        medians[method] = statistics.median(speeds)
        peak = max(r["peak_rss"] for r in runs)
        growth = max(r["peak_rss"] - r["rss_before"] for r in runs)
        label = "fastbase download_data (sha256 + progress)" if method == "fastbase" else "plain requests stream"
        print(f"| {label} | {medians[method]:,.0f} | {min(speeds):,.0f} | {max(speeds):,.0f} | {peak:,.0f} | "
              f"{growth:,.0f} |")
    print(f"\nfastbase / plain requests throughput: {medians['fastbase'] / medians['requests']:.2f}")
    print("(peak RSS: the child's resident memory at its peak during the download, imports included --\n"
          " fastbase imports torch through fastbase.core; growth: that peak minus the RSS just before)")


if __name__ == "__main__":
    main()
