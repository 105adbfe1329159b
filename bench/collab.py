"""Benchmark: collaborative filtering (lesson 4) in fastbase, fastai 2.8 and a plain PyTorch loop.

Data: `../shared/data/movie_lens_sample/ratings.csv` (fastai's ML_SAMPLE: 6,031 ratings, 100 users x
100 movies), 20% of the rows for validation (each framework's own random split with seed 42: 4,825
training and 1,206 validation rows in each). Model: the dot product of 50 user and 50 item factors
plus biases, through a sigmoid into (0, 5.5) (`EmbeddingDotBias`); 3 epochs of the one-cycle schedule
at 5e-3 (cosine, pct_start 0.3, div 25, momentum 0.95-0.85), Adam(0.9, 0.99) with decoupled weight
decay 1e-2, mean squared error, batch size 64, validation after every epoch. Rows, each in its own
child process, one after the other:

  plain      hand-written PyTorch: the codes and ratings as tensors, one randperm per epoch, batches by
             tensor indexing, fastbase's EmbeddingDotBias module (same layers and initialisation),
             torch.optim.AdamW + OneCycleLR, validation under torch.inference_mode.
  fastbase   CollabDataBunch.from_df(ratings, seed=42) and collab_learner(data, n_factors=50,
             y_range=(0, 5.5)); silent (no progress output).
  fb-torch-it  fastbase with batches read through torch's DataLoader iterator, as before the loader
             read batch-gathering datasets itself (`DeviceDataLoader.fetches_batches_here` off): what
             that change takes off each epoch.
  fastai     fastai 2.8 defaults (one loader worker here): CollabDataLoaders.from_df(ratings,
             valid_pct=0.2, seed=42, bs=64) and
             collab_learner(dls, n_factors=50, y_range=(0, 5.5)), inside learn.no_bar() and
             learn.no_logging().

Each child first trains one untimed epoch (imports, allocator and first-call costs, which are the
same in every row), then --runs times a fresh model for the 3 epochs; the rows take turns, --rounds
children each, so that the machine's changing load falls on all of them. Columns: median seconds per
epoch (training and validation, data building excluded), wall-clock and CPU time (on a machine
shared with other jobs, CPU time is the steadier figure; it includes fastai's loader worker, which
ends with each epoch), training rows per second (epochs x 4,825 rows / fit time),
the validation MSE after the last epoch (median over all fits), and the children's peak resident memory
(whole process: imports included). Ratios against the plain loop and fastai follow,
with the goals of issue 21 (>= 3x fastai's rows/s at equal MSE; <= 1.1x the plain loop's time).

    python bench/collab.py [--runs 3] [--rounds 3] [--threads 1] [--data PATH] [--fastai-python PY] [--only ROWS]
    python bench/collab.py --profile     # cProfile of one fastbase fit: the per-batch overhead
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("FASTBASE_SHARED", ROOT.parent / "shared"))
DATA = SHARED / "data" / "movie_lens_sample" / "ratings.csv"
ROWS = ("plain", "fastbase", "fb-torch-it", "fastai")
EPOCHS, LR, BS, N_FACTORS, Y_RANGE, WD = 3, 5e-3, 64, 50, (0.0, 5.5), 1e-2


def _plain(ratings, runs):
    import numpy as np
    import torch
    from torch.nn import functional as F

    sys.path.insert(0, str(ROOT))
    from fastbase.collab.data import encode
    from fastbase.collab.models import EmbeddingDotBias

    order = np.random.default_rng(42).permutation(len(ratings))
    cut = int(0.2 * len(ratings))
    train_idx, valid_idx = np.sort(order[cut:]), np.sort(order[:cut])
    users, user_classes = encode(ratings.iloc[train_idx, 0].to_numpy())
    items, item_classes = encode(ratings.iloc[train_idx, 1].to_numpy())
    codes, y = torch.stack([users, items]), torch.tensor(ratings.iloc[train_idx, 2].to_numpy(), dtype=torch.float32)
    valid_codes = torch.stack([encode(ratings.iloc[valid_idx, c].to_numpy(), cls)[0]
                               for c, cls in ((0, user_classes), (1, item_classes))])
    valid_y = torch.tensor(ratings.iloc[valid_idx, 2].to_numpy(), dtype=torch.float32)
    n_batches = len(y) // BS

    def fit(epochs):
        model = EmbeddingDotBias(N_FACTORS, len(user_classes), len(item_classes), Y_RANGE)
        opt = torch.optim.AdamW(model.parameters(), lr=LR, betas=(0.9, 0.99), weight_decay=WD)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, LR, total_steps=epochs * n_batches, pct_start=0.3,
                                                    div_factor=25, final_div_factor=1e4, base_momentum=0.85,
                                                    max_momentum=0.95)
        for _ in range(epochs):
            model.train()
            perm = torch.randperm(len(y))
            for b in range(n_batches):
                idx = perm[b * BS:(b + 1) * BS]
                u, i = codes[:, idx]
                loss = F.mse_loss(model(u, i), y[idx])
                loss.backward()
                opt.step()
                opt.zero_grad()
                sched.step()
            model.eval()
            with torch.inference_mode():
                total = sum(F.mse_loss(model(*valid_codes[:, s:s + BS]), valid_y[s:s + BS], reduction="sum")
                            for s in range(0, len(valid_y), BS))
        return float(total) / len(valid_y)

    fit(1)
    return _timed(lambda: fit(EPOCHS), runs), len(y)


def _fastbase(ratings, runs, torch_iterator=False):
    sys.path.insert(0, str(ROOT))
    from fastbase.collab import CollabDataBunch, collab_learner
    from fastbase.data.loader import DeviceDataLoader

    if torch_iterator:
        DeviceDataLoader.fetches_batches_here = property(lambda self: False)

    data = CollabDataBunch.from_df(ratings, seed=42, bs=BS, device="cpu")

    def fit(epochs):
        learn = collab_learner(data, n_factors=N_FACTORS, y_range=Y_RANGE, silent=True, wd=WD)
        learn.fit_one_cycle(epochs, LR)
        return learn.recorder.val_losses[-1]

    fit(1)
    return _timed(lambda: fit(EPOCHS), runs), len(data.train_ds)


def _fastai(ratings, runs):
    from fastai.collab import CollabDataLoaders, collab_learner

    dls = CollabDataLoaders.from_df(ratings, valid_pct=0.2, seed=42, bs=BS)

    def fit(epochs):
        learn = collab_learner(dls, n_factors=N_FACTORS, y_range=Y_RANGE, wd=WD)
        with learn.no_bar(), learn.no_logging():
            learn.fit_one_cycle(epochs, LR)
        return float(learn.recorder.values[-1][1])

    fit(1)
    return _timed(lambda: fit(EPOCHS), runs), len(dls.train_ds)


def _timed(fit, runs):
    """[(wall seconds, CPU seconds of this process, valid MSE)] for `runs` fits."""
    def cpu_seconds():  # this process (fine-grained) and its reaped children (fastai's loader workers end
        t = os.times()  # with each epoch; os.times counts in clock ticks, 10 ms)
        return time.process_time() + t.children_user + t.children_system

    out = []
    for _ in range(runs):
        start, cpu = time.perf_counter(), cpu_seconds()
        mse = fit()
        out.append((time.perf_counter() - start, cpu_seconds() - cpu, float(mse)))
    return out


def child(row: str, runs: int, threads: int, data: Path) -> dict:
    import pandas as pd
    import torch

    sys.path.insert(0, str(Path(__file__).parent))
    from _memory import peak_rss_mb

    torch.set_num_threads(threads)
    ratings = pd.read_csv(data)
    run = {"plain": _plain, "fastbase": _fastbase, "fastai": _fastai,
           "fb-torch-it": lambda r, n: _fastbase(r, n, torch_iterator=True)}[row]
    results, n_train = run(ratings, runs)
    return {"row": row, "fits": results, "n_train": n_train, "peak_rss_mb": peak_rss_mb(),
            "torch": torch.__version__}


def profile(data: Path, threads: int) -> None:
    """Where a fastbase fit spends its time: the functions with the most time of their own."""
    import cProfile
    import pstats

    import pandas as pd
    import torch

    sys.path.insert(0, str(ROOT))
    from fastbase.collab import CollabDataBunch, collab_learner

    torch.set_num_threads(threads)
    bunch = CollabDataBunch.from_df(pd.read_csv(data), seed=42, bs=BS, device="cpu")
    collab_learner(bunch, n_factors=N_FACTORS, y_range=Y_RANGE, silent=True).fit_one_cycle(1, LR)  # warm-up
    learn = collab_learner(bunch, n_factors=N_FACTORS, y_range=Y_RANGE, silent=True, wd=WD)
    with cProfile.Profile() as prof:
        learn.fit_one_cycle(EPOCHS, LR)
    pstats.Stats(prof).sort_stats("tottime").print_stats(25)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3, help="timed fits per child process")
    parser.add_argument("--rounds", type=int, default=3,
                        help="child processes per row, the rows taking turns (median over rounds x runs fits)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads in every row")
    parser.add_argument("--data", type=Path, default=DATA, help="ratings.csv (user, item, rating, ...)")
    parser.add_argument("--fastai-python", default="/tmp/fastai-venv/bin/python")
    parser.add_argument("--only", default=",".join(ROWS), help=f"comma-separated rows of {ROWS}")
    parser.add_argument("--profile", action="store_true",
                        help="instead: cProfile one 3-epoch fastbase fit (after a warm-up) and print where the time goes")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.profile:
        profile(args.data, args.threads)
        return
    if args.child:
        print("RESULT " + json.dumps(child(args.child, args.runs, args.threads, args.data)))
        return
    if not args.data.is_file():
        sys.exit(f"No {args.data}: pass --data path/to/ratings.csv (fastai's ML_SAMPLE).")
    results, rows = {}, args.only.split(",")
    for _ in range(args.rounds):  # rows take turns, so that a change in the machine's load hits them all
        for row in rows:
            python = args.fastai_python if row == "fastai" else sys.executable
            if not Path(python).exists():
                print(f"{row}: skipped, no {python}")
                continue
            cmd = [python, __file__, "--child", row, "--runs", str(args.runs), "--threads", str(args.threads),
                   "--data", str(args.data)]
            proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
            lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
            if proc.returncode or not lines:
                print(f"{row}: failed\n{proc.stderr[-3000:]}")
                continue
            result = json.loads(lines[-1][len("RESULT "):])
            seen = results.setdefault(row, {**result, "fits": [], "loads": []})
            seen["fits"] += result["fits"]
            seen["loads"].append(os.getloadavg()[0])
            seen["peak_rss_mb"] = max(seen["peak_rss_mb"], result["peak_rss_mb"])
    for seen in results.values():
        seen["load"] = statistics.mean(seen["loads"])
    report(results)


def report(results: dict) -> None:
    print(f"{'row':11} {'s/epoch':>8} {'CPU s/epoch':>11} {'rows/s':>8} {'rows/CPU s':>10} {'valid MSE':>9} "
          f"{'MSE range':>13} {'peak RSS MiB':>12} {'load':>5}")  # load: mean 1-minute load average as the row's children ended
    summary = {}
    for row, r in results.items():
        wall, cpu = (statistics.median(f[k] for f in r["fits"]) / EPOCHS for k in (0, 1))
        mses = [f[2] for f in r["fits"]]
        summary[row] = {"wall": wall, "cpu": cpu, "mse": statistics.median(mses)}
        print(f"{row:11} {wall:8.4f} {cpu:11.4f} {r['n_train'] / wall:8.0f} {r['n_train'] / cpu:10.0f} "
              f"{summary[row]['mse']:9.4f} {min(mses):6.4f}-{max(mses):.4f} {r['peak_rss_mb']:12.0f} {r['load']:5.2f}")
    fb, plain, fastai = (summary.get(k) for k in ("fastbase", "plain", "fastai"))
    for clock in ("wall", "cpu"):
        if fb and plain:
            ratio = fb[clock] / plain[clock]
            print(f"{clock:4}: fastbase time / plain loop time {ratio:.2f}x (goal <= 1.1x: {'PASS' if ratio <= 1.1 else 'MISS'})")
        if fb and fastai:
            speed = fastai[clock] / fb[clock]  # the same rows per epoch (4,825) in both
            print(f"{clock:4}: fastbase rows/s / fastai rows/s {speed:.1f}x (goal >= 3x: {'PASS' if speed >= 3 else 'MISS'})")
    if fb and fastai:
        print(f"valid MSE: fastbase {fb['mse']:.4f}, fastai {fastai['mse']:.4f}, plain "
              f"{plain['mse'] if plain else float('nan'):.4f} (lower is better)")


if __name__ == "__main__":
    main()
