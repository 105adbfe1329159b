"""Benchmark: lesson 4's tabular model on ADULT_SAMPLE, fastbase against fastai 2.8 and a plain
PyTorch loop.

Every method trains the same model (entity embeddings for the 6 categorical columns of lesson 4 plus
education-num's `_na` column, BatchNorm on the 3 continuous ones, Linear-ReLU-BatchNorm layers of
200 and 100, 2 outputs) on the same rows (a fixed random 20% for validation, `--seed`), with the
same processors (FillMissing, Categorify, Normalize), batch size and one-cycle learning rate, for
`--epochs` epochs, validating after each:

  fastbase  TabularList.from_df(...).split_by_idx(...).label_from_df(...).databunch(bs);
            tabular_learner(data, layers=[200, 100], metrics=accuracy).fit_one_cycle(epochs, lr)
  fastai    fastai 2.8: TabularPandas(...).dataloaders(bs); tabular_learner(dls, layers=[200, 100],
            metrics=accuracy).fit_one_cycle(epochs, lr), without progress bar or logging
            (run with --fastai-python, default /tmp/fastai-venv/bin/python)
  plain     fastbase's processors build the tensors (not timed); a hand-written loop over a
            randperm of them, fastbase's TabularModel, torch.optim.AdamW(fused=True) (as fastbase's
            tabular default; weight decay off BatchNorm and biases) and torch's OneCycleLR; loss
            and accuracy read once per epoch

Each run of each method is a fresh child process (`--child`), so peak RSS is its own; runs
alternate between methods. The table gives medians over `--runs`: the fit's seconds per epoch
(training and validation), training rows per second, validation accuracy after the last epoch,
the time to build the data (processors and tensors), and peak RSS; then the ratios the goals
name: fastbase's rows/s against fastai's, and its epoch time against the plain loop's.

With `--same-process`, fastbase and the plain loop instead run alternately in this process after a
warm-up, and only the ratio of their CPU time per epoch is printed: on a shared machine it is
steadier than the ratio of separate processes.

    python bench/tabular.py [--runs 3] [--epochs 3] [--bs 64] [--lr 1e-2] [--threads 1]
                            [--csv ../shared/data/adult_sample/adult.csv] [--methods fastbase,fastai,plain]
    python bench/tabular.py --same-process --runs 6 --epochs 1
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

from _memory import peak_rss_mb

HERE = Path(__file__).resolve().parent
DEFAULT_CSV = HERE.parent.parent / "shared" / "data" / "adult_sample" / "adult.csv"
DEP_VAR = "salary"
CAT_NAMES = ["workclass", "education", "marital-status", "occupation", "relationship", "race"]
CONT_NAMES = ["age", "fnlwgt", "education-num"]
WD, MOMS = 1e-2, (0.95, 0.85)


def split(n: int, seed: int, valid_pct: float = 0.2) -> tuple[list[int], list[int]]:
    """The same (train, valid) row positions in every process: a seeded shuffle, no numpy needed."""
    import random
    order = list(range(n))
    random.Random(seed).shuffle(order)
    cut = int(valid_pct * n)
    return sorted(order[cut:]), sorted(order[:cut])


def timed(func) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) that `func()` takes."""
    start, cpu = time.perf_counter(), time.process_time()
    func()
    return time.perf_counter() - start, time.process_time() - cpu


# --- the methods, each run in a child process ------------------------------------------------------
def run_fastbase(df, train_idx, valid_idx, args) -> dict:
    from fastbase.metrics import accuracy
    from fastbase.tabular import (
        Categorify,
        FillMissing,
        Normalize,
        TabularList,
        tabular_learner,
    )

    start = time.perf_counter()
    data = (TabularList.from_df(df, cat_names=CAT_NAMES, cont_names=CONT_NAMES,
                                procs=[FillMissing, Categorify, Normalize])
            .split_by_idx(valid_idx).label_from_df(cols=DEP_VAR).databunch(bs=args.bs, seed=args.seed))
    prep = time.perf_counter() - start
    learn = tabular_learner(data, layers=[200, 100], metrics=accuracy, silent=True)
    fit, cpu = timed(lambda: learn.fit_one_cycle(args.epochs, args.lr))
    return {"prep_s": prep, "fit_s": fit, "cpu_s": cpu, "accuracy": float(learn.recorder.metrics[-1][0])}


def run_fastai(df, train_idx, valid_idx, args) -> dict:
    from fastai.tabular.all import (
        Categorify,
        CategoryBlock,
        FillMissing,
        Normalize,
        TabularPandas,
        accuracy,
        tabular_learner,
    )

    start = time.perf_counter()
    to = TabularPandas(df, procs=[FillMissing, Categorify, Normalize], cat_names=CAT_NAMES, cont_names=CONT_NAMES,
                       y_names=DEP_VAR, y_block=CategoryBlock(), splits=(train_idx, valid_idx))
    dls = to.dataloaders(bs=args.bs, num_workers=0)
    prep = time.perf_counter() - start
    learn = tabular_learner(dls, layers=[200, 100], metrics=accuracy)
    with learn.no_bar(), learn.no_logging():
        fit, cpu = timed(lambda: learn.fit_one_cycle(args.epochs, args.lr))
    return {"prep_s": prep, "fit_s": fit, "cpu_s": cpu, "accuracy": float(learn.recorder.values[-1][2])}


def run_plain(df, train_idx, valid_idx, args) -> dict:
    import torch
    from torch import nn

    from fastbase.optimizer import split_no_wd_params
    from fastbase.tabular import (
        Categorify,
        FillMissing,
        Normalize,
        TabularModel,
        TabularProcessor,
        emb_sz_rule,
    )

    start = time.perf_counter()
    proc = TabularProcessor(CAT_NAMES, CONT_NAMES, [FillMissing, Categorify, Normalize]).fit(df.iloc[train_idx])
    (cats, conts), (vcats, vconts) = proc.tensors(df.iloc[train_idx]), proc.tensors(df.iloc[valid_idx])
    classes = sorted(df[DEP_VAR].iloc[train_idx].unique())
    codes = {c: i for i, c in enumerate(classes)}
    y = torch.tensor([codes[v] for v in df[DEP_VAR].iloc[train_idx]])
    vy = torch.tensor([codes[v] for v in df[DEP_VAR].iloc[valid_idx]])
    prep = time.perf_counter() - start
    model = TabularModel([(n, emb_sz_rule(n)) for n in proc.cardinalities()], len(proc.cont_names), len(classes),
                         [200, 100])
    decay, no_decay = split_no_wd_params([model])[0]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": WD}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=args.lr, betas=(0.9, 0.99), fused=True)  # as fastbase's tabular default
    n, bs = len(y), args.bs
    steps = n // bs
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=args.epochs * steps, pct_start=0.3,
                                                div_factor=25.0, final_div_factor=1e4, base_momentum=MOMS[1],
                                                max_momentum=MOMS[0])
    loss_func = nn.CrossEntropyLoss()
    gen = torch.Generator().manual_seed(args.seed)
    start, cpu = time.perf_counter(), time.process_time()
    for _ in range(args.epochs):
        model.train()
        order = torch.randperm(n, generator=gen)
        for i in range(steps):
            idx = order[i * bs:(i + 1) * bs]
            loss = loss_func(model(cats[idx], conts[idx]), y[idx])
            loss.backward()
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
        model.eval()
        total, correct = torch.zeros(()), torch.zeros(())
        with torch.inference_mode():
            for i in range(0, len(vy), bs):
                out = model(vcats[i:i + bs], vconts[i:i + bs])
                total += loss_func(out, vy[i:i + bs]) * len(out)
                correct += (out.argmax(1) == vy[i:i + bs]).sum()
        accuracy = (correct / len(vy)).item()  # read once per epoch
        _ = (total / len(vy)).item()
    fit, cpu = time.perf_counter() - start, time.process_time() - cpu
    return {"prep_s": prep, "fit_s": fit, "cpu_s": cpu, "accuracy": accuracy}


METHODS = {"fastbase": run_fastbase, "fastai": run_fastai, "plain": run_plain}


def child(args) -> None:
    import pandas as pd
    import torch

    torch.set_num_threads(args.threads)
    # one-time costs that would otherwise land in the first timed fit: torch's first optimizer imports
    # torch._dynamo (seconds), which fastbase and fastai pay inside fit and the plain loop before it
    torch.optim.Adam([torch.zeros(1, requires_grad=True)])
    torch.manual_seed(args.seed)
    df = pd.read_csv(args.csv)
    train_idx, valid_idx = split(len(df), args.seed)
    result = METHODS[args.child](df, train_idx, valid_idx, args)
    result.update(rss_mb=peak_rss_mb(), n_train=len(train_idx), n_valid=len(valid_idx), torch=torch.__version__)
    print(json.dumps(result))


def same_process(args) -> None:
    """fastbase and the plain loop alternately in one process (after one warm-up fit each), so both
    share the machine's drift: the ratio of their median CPU time per epoch is the Learner's cost."""
    import pandas as pd
    import torch

    sys.path.insert(0, str(HERE.parent))  # this checkout's fastbase, as the children get it
    torch.set_num_threads(args.threads)
    torch.optim.Adam([torch.zeros(1, requires_grad=True)])  # see `child`
    df = pd.read_csv(args.csv)
    train_idx, valid_idx = split(len(df), args.seed)
    times = {"fastbase": [], "plain": []}
    for run in range(args.runs + 1):
        for method in ("fastbase", "plain") if run % 2 == 0 else ("plain", "fastbase"):
            torch.manual_seed(args.seed)
            result = METHODS[method](df, train_idx, valid_idx, args)
            if run:  # the first round is the warm-up
                times[method].append(result["cpu_s"] / args.epochs)
    med = {m: statistics.median(v) for m, v in times.items()}
    print(f"same process, {args.runs} alternating runs of {args.epochs} epoch(s), CPU s/epoch: fastbase "
          f"{med['fastbase']:.3f}, plain {med['plain']:.3f}; fastbase / plain {med['fastbase'] / med['plain']:.3f}")


def run_child(method: str, args, run: int) -> dict:
    python = args.fastai_python if method == "fastai" else sys.executable
    cmd = [python, __file__, "--child", method, "--csv", str(args.csv), "--epochs", str(args.epochs), "--bs",
           str(args.bs), "--lr", str(args.lr), "--threads", str(args.threads), "--seed", str(args.seed + run)]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "FASTBASE_NO_BAR": "1",
           "PYTHONPATH": os.pathsep.join([str(HERE.parent), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"{method} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--bs", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-2)
    parser.add_argument("--threads", type=int, default=1, help="torch threads in every child (default 1)")
    parser.add_argument("--seed", type=int, default=0, help="split and init seed of the first run (run i: seed + i)")
    parser.add_argument("--csv", type=Path, default=DEFAULT_CSV, help="adult.csv of ADULT_SAMPLE")
    parser.add_argument("--methods", default="fastbase,fastai,plain")
    parser.add_argument("--fastai-python", default="/tmp/fastai-venv/bin/python")
    parser.add_argument("--same-process", action="store_true",
                        help="fastbase and plain alternately in this process after a warm-up (steadier ratio)")
    parser.add_argument("--child", choices=sorted(METHODS))
    args = parser.parse_args()
    if args.child:
        return child(args)
    if args.same_process:
        return same_process(args)
    if not args.csv.is_file():
        raise SystemExit(f"No {args.csv}: pass --csv (adult.csv of untar_data(URLs.ADULT_SAMPLE)).")
    methods = args.methods.split(",")
    print(f"{args.csv}, {args.epochs} epochs, bs {args.bs}, lr {args.lr}, {args.threads} thread(s), "
          f"{args.runs} runs per method")
    results = {m: [] for m in methods}
    for run in range(args.runs):
        for method in methods if run % 2 == 0 else methods[::-1]:
            results[method].append(run_child(method, args, run))

    def med(method, key):
        return statistics.median(r[key] for r in results[method])
    n_train = results[methods[0]][0]["n_train"]
    print(f"{n_train} training rows, {results[methods[0]][0]['n_valid']} validation rows\n")
    print("| method | s/epoch | CPU s/epoch | rows/s | accuracy (each run) | data build (s) | peak RSS (MB) |")
    print("|---|---|---|---|---|---|---|")
    for m in methods:
        epoch = med(m, "fit_s") / args.epochs
        accs = ", ".join(f"{r['accuracy']:.4f}" for r in results[m])
        print(f"| {m} | {epoch:.3f} | {med(m, 'cpu_s') / args.epochs:.3f} | {n_train / epoch:,.0f} | {med(m, 'accuracy'):.4f} ({accs}) | "
              f"{med(m, 'prep_s'):.2f} | {med(m, 'rss_mb'):.0f} |")
    if "fastbase" in results and "fastai" in results:
        print(f"\nfastbase rows/s / fastai rows/s: {med('fastai', 'fit_s') / med('fastbase', 'fit_s'):.2f}x; "
              f"accuracy difference: {100 * (med('fastbase', 'accuracy') - med('fastai', 'accuracy')):+.2f} points")
    if "fastbase" in results and "plain" in results:
        print(f"fastbase time / plain loop time: {med('fastbase', 'fit_s') / med('plain', 'fit_s'):.3f} (wall), "
              f"{med('fastbase', 'cpu_s') / med('plain', 'cpu_s'):.3f} (CPU)")


if __name__ == "__main__":
    main()
