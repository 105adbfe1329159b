"""Benchmark: `fastbase demo` over several seeds, as a newcomer runs it from a fresh clone.

Each seed runs `fastbase demo --seed S --json` in its own process, one after the other (the same
command as the README's, so the figure the README quotes is the one a fresh run gives). Columns: the
seed, whether the resnet18 body was pretrained (its ImageNet weights in the torch hub cache) or random,
validation accuracy, the wall time of the process (imports included), the 1-minute load average before
and after the run (the machine's other load). Then the range and mean over seeds, in Markdown for
bench/RESULTS.md.

    python bench/demo_seeds.py [--seeds 0,1,2,3,4,42] [--quick]

`--quick` is a smoke test of the script (`--limit 64 --size 16 --epochs 1 --unfreeze-epochs 0`): its
figures mean nothing.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
QUICK = ["--limit", "64", "--size", "16", "--epochs", "1", "--unfreeze-epochs", "0", "--lr-find-iters", "5"]


def run_seed(seed: int, out: Path, extra: list[str]) -> dict:
    """One `fastbase demo` process; its JSON summary plus the wall time and the load around it."""
    env = {**os.environ, "FASTBASE_NO_BAR": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    command = [sys.executable, "-m", "fastbase.cli", "demo", "--seed", str(seed), "--out", str(out), "--json", *extra]
    load_before, start = os.getloadavg()[0], time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"seed {seed}: `{' '.join(command)}` exited {done.returncode}\n{done.stderr[-3000:]}")
    summary = json.loads(done.stdout[done.stdout.index("{\n"):])  # per-epoch lines come before the JSON
    return {"seed": seed, "accuracy": summary["accuracy"], "pretrained": summary["pretrained"],
            "seconds": seconds, "load_before": load_before, "load_after": os.getloadavg()[0]}


HEADER = "| seed | body | validation accuracy | wall time | load average before / after |\n|---|---|---|---|---|"


def row(r: dict) -> str:
    body = "pretrained" if r["pretrained"] else "random"
    return (f"| {r['seed']} | {body} | {100 * r['accuracy']:.1f}% | {r['seconds']:.0f} s "
            f"| {r['load_before']:.1f} / {r['load_after']:.1f} |")


def summary(rows: list[dict]) -> str:
    accs, secs = [100 * r["accuracy"] for r in rows], [r["seconds"] for r in rows]
    return (f"| **{len(rows)} seeds** | | **{min(accs):.1f}-{max(accs):.1f}%** (mean {sum(accs) / len(accs):.1f}%) "
            f"| {min(secs):.0f}-{max(secs):.0f} s | |")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2,3,4,42", help="comma-separated seeds (default: %(default)s)")
    parser.add_argument("--quick", action="store_true", help="a smoke test of the script; figures mean nothing")
    args = parser.parse_args(argv)
    rows = []
    print(HEADER, flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        for seed in (int(s) for s in args.seeds.split(",")):
            rows.append(run_seed(seed, Path(tmp) / f"seed{seed}", QUICK if args.quick else []))
            print(row(rows[-1]), flush=True)  # row by row: a run stopped early keeps what it measured
    print(summary(rows))


if __name__ == "__main__":
    main()
