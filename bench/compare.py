"""Check on real data: `fastbase compare` on real photos, with a real pretrained body for one arch.

Data: `../shared/data/hymenoptera` (245 training, 153 validation photos of ants and bees) at 128 px.
Body: `../shared/weights/mobilenet_v2_imagenet_body.pth`, a real ImageNet-trained MobileNetV2, copied
into a temporary torch hub cache (`$TORCH_HOME/hub/checkpoints/mobilenet_v2-b0353104.pth`) so that
`pretrained=True` loads it through torchvision's own weights API, as after a download. No other
pretrained weights exist on these machines, so resnet18 and squeezenet1_1 are `--scratch-only`: each
runs once from random weights (mode `scratch`) instead of head/full on a random body.

    fastbase compare ../shared/data/hymenoptera --archs mobilenet_v2,resnet18,squeezenet1_1 \
        --modes head,full --scratch-only resnet18,squeezenet1_1 --epochs 2 --size 128 --out DIR

The issue asks for this to finish in under 15 minutes on 2 CPU cores. Prints the table, the total
time and the machine's load average (sampled every 5 s: other jobs on the machine slow every figure,
latency most; the CPU time it used says what an idle machine would take). Skips with a message
when ../shared is absent.

    python bench/compare.py [--threads 2] [--lr-find-iters 30] [--out DIR]

lr_find runs 30 iterations per pair here (the command's default is 50): with 8 batches per epoch,
50 iterations cost three times the 2 training epochs, and 30 still place the valley.
"""
from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("FASTBASE_SHARED", ROOT.parent / "shared"))
DATA = SHARED / "data" / "hymenoptera"
WEIGHTS = SHARED / "weights" / "mobilenet_v2_imagenet_body.pth"
HUB_NAME = "mobilenet_v2-b0353104.pth"  # torchvision's file name for MobileNet_V2_Weights.IMAGENET1K_V1
BUDGET_S = 15 * 60


class LoadSampler(threading.Thread):
    """Samples the 1-minute load average every `every` seconds until stopped."""

    def __init__(self, every: float = 5.0):
        super().__init__(daemon=True)
        self.every, self.samples, self.done = every, [os.getloadavg()[0]], threading.Event()

    def run(self):
        while not self.done.wait(self.every):
            self.samples.append(os.getloadavg()[0])


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--lr-find-iters", type=int, default=30,
                        help="lr_find iterations per pair (fastbase compare's default is 50; 30 keeps the budget)")
    parser.add_argument("--out", default=None, help="folder for compare.csv/.md/.png (default: a temporary one)")
    args = parser.parse_args()
    if not (DATA.is_dir() and WEIGHTS.is_file()):
        print(f"skipped: needs {DATA} and {WEIGHTS} (the project's ../shared folder)")
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        checkpoints = Path(tmp, "torch", "hub", "checkpoints")
        checkpoints.mkdir(parents=True)
        shutil.copy(WEIGHTS, checkpoints / HUB_NAME)
        os.environ.update(TORCH_HOME=str(Path(tmp, "torch")), FASTBASE_HOME=str(Path(tmp, "fb")),
                          FASTBASE_NO_BAR="1", OMP_NUM_THREADS=str(args.threads))
        import torch

        from fastbase.cli import main as fastbase_main

        torch.set_num_threads(args.threads)
        out = args.out or str(Path(tmp, "out"))
        command = ["compare", str(DATA), "--archs", "mobilenet_v2,resnet18,squeezenet1_1", "--modes", "head,full",
                   "--scratch-only", "resnet18,squeezenet1_1", "--epochs", "2", "--size", "128", "--lr-find-iters", str(args.lr_find_iters),
                   "--out", out]
        print("fastbase " + " ".join(command), flush=True)
        load = LoadSampler()
        load.start()
        start, cpu_start = time.perf_counter(), _cpu_seconds()
        code = fastbase_main(command)
        total, cpu = time.perf_counter() - start, _cpu_seconds() - cpu_start
        load.done.set()
        load.join()
    verdict = "within" if total < BUDGET_S else "OVER"
    print(f"\ntotal {total / 60:.1f} min ({verdict} the 15 min budget) on {os.cpu_count()} cores, "
          f"{args.threads} torch threads; load average during the run: mean {statistics.mean(load.samples):.1f}, "
          f"max {max(load.samples):.1f} (other jobs were running if it is above {args.threads})")
    print(f"CPU time of this process: {cpu / 60:.1f} min, so about {cpu / 60 / args.threads:.1f} min of wall time "
          f"on {args.threads} idle cores (loader workers not counted)")
    print("mobilenet_v2 rows use the real ImageNet body; resnet18 and squeezenet1_1 train from random weights "
          "(mode scratch), as no pretrained weights for them exist here.")
    return code


if __name__ == "__main__":
    sys.exit(main())
