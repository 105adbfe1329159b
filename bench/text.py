"""Benchmark: fastbase.text against fastai 2.8, and ULMFiT's point on this machine.

`tokenize`: documents per second of tokenization with fastai's default rules and spaCy's English
rules, 2 worker processes each, on imdb_sample's 1,000 reviews and on 20,000 sentences (the
17,421 of wikitext2_sample's valid.txt and test.txt, cut at ' . ', then imdb_sample's cut at '. '). Each run is a fresh child process (a
fresh tokenizer: no piece is cached from an earlier run); runs alternate between the libraries.

  fastbase  Tokenizer(n_cpus=2).process_all(texts)
  fastai    fastai 2.8's tokenize_texts(texts, n_workers=2) (run with --fastai-python, default
            /tmp/fastai-venv/bin/python)

`ulmfit`: pretrain an AWD-LSTM on wikitext2_sample (`fastbase.text.pretrain`, reused from
`--lm-dir` when there), fine-tune it on imdb_sample's reviews (1 epoch frozen, `--lm-epochs`
unfrozen), then train the classifier on its encoder as lesson 3 does (1 epoch head, 1 with
`freeze_to(-2)`, 1 with `freeze_to(-3)`, `--clas-epochs` unfrozen, slice lrs); the same classifier
from scratch trains the same 3 + `--clas-epochs` epochs unfrozen. `--kinds` picks ulmfit and/or
scratch; each seed's row (accuracy on imdb_sample's 200 `is_valid` reviews, wall and CPU seconds) is
added to `--results`, so each seed can be its own call.

`train`: time per epoch (wall and CPU) of language-model fine-tuning and of classifier training
(AWD-LSTM, the same sizes, `pretrained=False`, the same epochs and data: `--docs` reviews of
imdb_sample, 192 = 6 batches of 32 by default so fastai's dropped last batch drops nothing; both
vocabularies at min_freq 3) for fastbase, fastai 2.8 and a plain PyTorch loop over fastbase's model
(`plain_fit_one_cycle`: the Learner's recipe written out: AdamW, one-cycle lr and beta1, AR/TAR,
hidden-state resets, a validation pass with the metrics); each run is a child process that fits one
epoch `--epochs` times, the three alternate, medians of `--runs`. Tokenizing is not timed, nor the
one-time import of `torch._dynamo` that a process's first optimizer makes. Perplexity (LM) and
accuracy (classifier) on the validation set beside.

    python bench/text.py tokenize [--runs 3]
    python bench/text.py train [--runs 3] [--epochs 2] [--docs 192] [--emb-sz 128] [--n-hid 384] [--tasks lm,clas]
    python bench/text.py ulmfit [--seeds 0,1,2] [--kinds ulmfit,scratch] [--lm-dir DIR] [--results FILE]
                                [--lm-epochs 1] [--clas-epochs 1] [--emb-sz 64] [--n-hid 256] [--pretrain-epochs 8]
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SHARED = HERE.parent.parent / "shared" / "data"
IMDB = SHARED / "imdb_sample"
WIKI = SHARED / "wikitext2_sample"

FASTAI_CHILD = """
import json, resource, sys, time
from fastai.text.all import tokenize_texts
def cpu():
    return sum(r.ru_utime + r.ru_stime for r in map(resource.getrusage, (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)))
texts = json.load(open(sys.argv[1]))
start, cpu0 = time.perf_counter(), cpu()
docs = tokenize_texts(texts, n_workers=2)
print(json.dumps({"seconds": time.perf_counter() - start, "cpu": cpu() - cpu0, "tokens": sum(len(d) for d in docs)}))
"""


def cpu_seconds() -> float:
    """CPU time of this process and of its finished children (the tokenizing workers)."""
    import resource
    return sum(r.ru_utime + r.ru_stime for r in map(resource.getrusage, (resource.RUSAGE_SELF,
                                                                         resource.RUSAGE_CHILDREN)))


def corpora() -> dict[str, list[str]]:
    import pandas as pd
    imdb = pd.read_csv(IMDB / "texts.csv").text.tolist()
    lines = [line.strip() for name in ("valid.txt", "test.txt")
             for line in (WIKI / name).read_text(encoding="utf-8").splitlines() if line.strip()]
    sentences = [s.strip() + " ." for line in lines if not line.startswith("=") for s in line.split(" . ") if s.strip()]
    reviews = [s.strip() + "." for text in imdb for s in text.split(". ") if s.strip()]  # tops up to 20,000
    return {"imdb_sample": imdb, "corpus_20k": (sentences + reviews)[:20000]}


def child_fastbase(texts_file: str) -> dict:
    from fastbase.text import Tokenizer
    texts = json.loads(Path(texts_file).read_text())
    start, cpu0 = time.perf_counter(), cpu_seconds()
    docs = Tokenizer(n_cpus=2).process_all(texts, show_progress=False)
    return {"seconds": time.perf_counter() - start, "cpu": cpu_seconds() - cpu0, "tokens": sum(len(d) for d in docs)}


def run_tokenize(args) -> None:
    import tempfile
    for name, texts in corpora().items():
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
            json.dump(texts, f)
        times = {"fastbase": [], "fastai": []}
        for _ in range(args.runs):
            for lib, runs in times.items():
                cmd = ([sys.executable, __file__, "child", f.name] if lib == "fastbase" else
                       [args.fastai_python, "-c", FASTAI_CHILD, f.name])
                out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
                runs.append(json.loads(out))
        for key in ("seconds", "cpu"):
            med = {lib: statistics.median(r[key] for r in runs) for lib, runs in times.items()}
            print(f"{name} ({key}): {len(texts)} docs  fastbase {len(texts) / med['fastbase']:.0f} docs/s "
                  f"({med['fastbase']:.2f} s)  fastai {len(texts) / med['fastai']:.0f} docs/s "
                  f"({med['fastai']:.2f} s)  ratio {med['fastai'] / med['fastbase']:.2f}x  "
                  f"each run: {[round(r[key], 2) for r in times['fastbase']]} / "
                  f"{[round(r[key], 2) for r in times['fastai']]}", flush=True)


FASTAI_TRAIN_CHILD = """
import json, sys, time, torch
import torch._dynamo  # the first optimizer of a process imports it: paid before the timed epochs, as for fastbase
import pandas as pd
from fastai.text.all import *
task, n_docs, epochs, emb, hid, bs = sys.argv[1], *map(int, sys.argv[2:7])
df = pd.read_csv(sys.argv[7])
df = pd.concat([df[~df.is_valid].head(n_docs), df[df.is_valid].head(n_docs // 4)])
sizes = dict(emb_sz=emb, n_hid=hid, n_layers=2)
if task == "lm":
    dls = TextDataLoaders.from_df(df, text_col="text", is_lm=True, valid_col="is_valid", bs=bs, seq_len=70)
    learn = language_model_learner(dls, AWD_LSTM, config={**awd_lstm_lm_config, **sizes}, pretrained=False,
                                   drop_mult=0.3, metrics=[accuracy, Perplexity()])
    lr = 1e-2
else:
    dls = TextDataLoaders.from_df(df, text_col="text", label_col="label", valid_col="is_valid", bs=bs)
    learn = text_classifier_learner(dls, AWD_LSTM, config={**awd_lstm_clas_config, **sizes}, pretrained=False,
                                    drop_mult=0.5, metrics=[accuracy])
    lr = 1e-2
times, cpu = [], []
with learn.no_bar(), learn.no_logging():
    for _ in range(epochs):
        start, cpu0 = time.perf_counter(), time.process_time()
        learn.fit_one_cycle(1, lr, moms=(0.8, 0.7, 0.8))
        times.append(time.perf_counter() - start)
        cpu.append(time.process_time() - cpu0)
vals = learn.recorder.values[-1]
vocab = dls.vocab if task == "lm" else dls.vocab[0]
print(json.dumps({"epoch_s": times, "epoch_cpu": cpu, "metric": float(vals[-1]), "vocab": len(vocab),
                  "batches": len(dls.train)}))
"""


def _subset(n_docs: int):
    import pandas as pd
    df = pd.read_csv(IMDB / "texts.csv")
    return pd.concat([df[~df.is_valid].head(n_docs), df[df.is_valid].head(n_docs // 4)])


def _text_learner(task: str, n_docs: int, emb: int, hid: int, bs: int):
    """fastbase's Learner for the benchmark's task: the data (min_freq 3, as fastai 2.8's vocabulary) and the model."""
    from fastbase.core import defaults
    from fastbase.metrics import accuracy
    from fastbase.text import (
        Perplexity,
        TextList,
        awd_lstm_clas_config,
        awd_lstm_lm_config,
        language_model_learner,
        text_classifier_learner,
    )
    defaults.silent = True
    sizes = {"emb_sz": emb, "n_hid": hid, "n_layers": 2}
    src = (TextList.from_df(_subset(n_docs), Path("/tmp/fastbase_text_bench/train"), cols="text")
           .split_from_df("is_valid"))
    if task == "lm":
        data = src.label_for_lm().databunch(bs=bs, bptt=70, seed=0, min_freq=3)
        return language_model_learner(data, config={**awd_lstm_lm_config, **sizes}, drop_mult=0.3, pretrained=False,
                                      metrics=[accuracy, Perplexity()])
    data = src.label_from_df("label").databunch(bs=bs, seed=0, min_freq=3)
    return text_classifier_learner(data, config={**awd_lstm_clas_config, **sizes}, drop_mult=0.5, metrics=[accuracy])


def plain_fit_one_cycle(model, train_dl, valid_dl, lm: bool, lr: float = 1e-2, alpha: float = 2.0, beta: float = 1.0):
    """One epoch of the recipe the Learner runs, written as a plain PyTorch loop over `model`: AdamW
    (wd 1e-2 on weights, none on biases), one cycle of `OneCycleLR` (lr and beta1 0.8 -> 0.7 -> 0.8, as
    `fit_one_cycle(1, lr, moms=(0.8, 0.7))`), cross-entropy plus AR (`alpha`) and TAR (`beta`) on the
    encoder's last layer, the hidden state reset before training and before validation, then a
    validation pass under `no_grad` with accuracy (and cross-entropy for perplexity). Returns the
    validation metric: perplexity for a language model, else accuracy."""
    import torch
    import torch.nn.functional as F
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for n, p in model.named_parameters() if p.requires_grad and not n.endswith("bias")]
    no_decay = [p for n, p in model.named_parameters() if p.requires_grad and n.endswith("bias")]
    assert len(decay) + len(no_decay) == len(params)
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 1e-2}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=lr, betas=(0.8, 0.99))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=len(train_dl), pct_start=0.3,
                                                div_factor=25.0, final_div_factor=1e4, base_momentum=0.7,
                                                max_momentum=0.8)
    encoder, head = model[0], model[1]
    model.train()
    model.reset()
    for x, y in train_dl:
        enc_out = encoder(x)
        out = head(enc_out)
        raw_outputs, outputs = enc_out[0], enc_out[1]
        loss = F.cross_entropy(out.reshape(-1, out.shape[-1]), y.reshape(-1))
        loss = loss + alpha * outputs[-1].pow(2).mean()  # AR
        loss = loss + beta * (raw_outputs[-1][:, 1:] - raw_outputs[-1][:, :-1]).pow(2).mean()  # TAR
        loss.backward()
        opt.step()
        opt.zero_grad()
        sched.step()
    model.eval()
    model.reset()
    total, right, n = torch.zeros(()), torch.zeros((), dtype=torch.long), 0
    with torch.no_grad():
        for x, y in valid_dl:
            out = model(x)
            total += F.cross_entropy(out.reshape(-1, out.shape[-1]), y.reshape(-1), reduction="sum")
            right += (out.argmax(-1) == y).sum()
            n += y.numel()
    return math.exp(float(total) / n) if lm else int(right) / n


def child_train(lib: str, task: str, n_docs: int, epochs: int, emb: int, hid: int, bs: int) -> dict:
    """One timed run of fastbase's Learner or of a plain PyTorch loop (`plain_fit_one_cycle`) over the same model."""
    import torch._dynamo  # noqa: F401  the first optimizer of a process imports it (seconds): not an epoch's cost
    learn = _text_learner(task, n_docs, emb, hid, bs)
    data, times, cpu = learn.data, [], []
    for _ in range(epochs):
        start, cpu0 = time.perf_counter(), time.process_time()
        if lib == "fastbase":
            learn.fit_one_cycle(1, 1e-2, moms=(0.8, 0.7))
            metric = float(learn.recorder.values[-1][-1])
        else:
            metric = plain_fit_one_cycle(learn.model, data.train_dl, data.valid_dl, lm=task == "lm")
        times.append(time.perf_counter() - start)
        cpu.append(time.process_time() - cpu0)
    return {"epoch_s": times, "epoch_cpu": cpu, "metric": metric, "vocab": len(data.vocab),
            "batches": len(data.train_dl)}


def run_train(args) -> None:
    import tempfile
    with tempfile.NamedTemporaryFile("w", suffix=".csv", delete=False) as f:
        f.write((IMDB / "texts.csv").read_text())
    sides = ("fastbase", "fastai", "plain")
    for task in args.tasks:
        runs = {lib: [] for lib in sides}
        for _ in range(args.runs):
            for lib in sides:
                sizes = [str(v) for v in (args.docs, args.epochs, args.emb_sz, args.n_hid, args.bs)]
                cmd = ([args.fastai_python, "-c", FASTAI_TRAIN_CHILD, task, *sizes, f.name] if lib == "fastai" else
                       [sys.executable, __file__, "train-child", lib, task, *sizes])
                out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
                runs[lib].append(json.loads(out))
                print(task, lib, runs[lib][-1], flush=True)
        # an epoch's time: the median over runs of each run's median epoch (wall), the same of CPU time; and
        # the first and second epochs apart (the first pays one-time costs)
        for key, what in (("epoch_s", "wall"), ("epoch_cpu", "cpu")):
            med = {lib: statistics.median(statistics.median(r[key]) for r in rs) for lib, rs in runs.items()}
            first = {lib: statistics.median(r[key][0] for r in rs) for lib, rs in runs.items()}
            last = {lib: statistics.median(r[key][-1] for r in rs) for lib, rs in runs.items()}
            print(f"{task} ({what}): s/epoch fastbase {med['fastbase']:.2f}  fastai {med['fastai']:.2f}  plain "
                  f"{med['plain']:.2f}  fastbase/fastai {med['fastbase'] / med['fastai']:.2f}x  fastbase/plain "
                  f"{med['fastbase'] / med['plain']:.2f}x  first epoch {json.dumps(_rounded(first))}  last epoch "
                  f"{json.dumps(_rounded(last))}", flush=True)
        metric = {lib: statistics.median(r["metric"] for r in rs) for lib, rs in runs.items()}
        shape = {lib: (rs[0]["vocab"], rs[0]["batches"]) for lib, rs in runs.items()}
        print(f"{task}: {'perplexity' if task == 'lm' else 'accuracy'} {json.dumps(_rounded(metric))}  "
              f"(vocabulary, training batches) {json.dumps(shape)}", flush=True)


def _rounded(values: dict) -> dict:
    return {k: round(v, 3) for k, v in values.items()}


def _ulmfit_data(work: Path):
    """imdb_sample as lesson 3 reads it: a language model on all 1,000 reviews (10% held out), the
    classifier on the 800 training reviews with the LM's vocabulary, scored on the 200 `is_valid`."""
    import pandas as pd

    from fastbase.text import TextList
    df = pd.read_csv(IMDB / "texts.csv")
    data_lm = (TextList.from_df(df, work, cols="text").split_by_rand_pct(0.1, seed=0).label_for_lm()
               .databunch(bs=32, bptt=70, seed=0))
    data_clas = (TextList.from_df(df, work, cols="text", vocab=data_lm.vocab).split_from_df("is_valid")
                 .label_from_df("label").databunch(bs=32, seed=0))
    return data_lm, data_clas


def ulmfit_seed(args, kind: str, seed: int, data_lm, data_clas) -> dict:
    """One seed of ULMFiT (`kind='ulmfit'`: LM fine-tuning from the pretrained model, then the
    classifier on its encoder with gradual unfreezing) or of the same classifier from scratch
    (`'scratch'`: the same number of epochs, all layers, one cycle at 1e-2)."""
    from fastbase.core import set_seed
    from fastbase.metrics import accuracy
    from fastbase.text import awd_lstm_clas_config, language_model_learner, text_classifier_learner
    lm_dir = Path(args.lm_dir)
    sizes = {"emb_sz": args.emb_sz, "n_hid": args.n_hid, "n_layers": args.n_layers}
    clas_config = {**awd_lstm_clas_config, **sizes}
    moms = (0.8, 0.7)
    start, cpu = time.perf_counter(), time.process_time()
    set_seed(seed)
    row = {"kind": kind, "seed": seed}
    if kind == "ulmfit":
        config = json.loads((lm_dir / "lm_fwd.json").read_text())
        if {k: config[k] for k in sizes} != sizes:
            raise SystemExit(f"{lm_dir} holds a model of {config}; pass its sizes (--emb-sz, --n-hid, --n-layers).")
        lm = language_model_learner(data_lm, config=config, drop_mult=args.lm_drop_mult,
                                    pretrained_fnames=(lm_dir / "lm_fwd.pth", lm_dir / "itos.pkl"))
        lm.fit_one_cycle(1, args.lm_lr, moms=moms)
        lm.unfreeze()
        lm.fit_one_cycle(args.lm_epochs, args.lm_lr / 10, moms=moms)
        row["lm_valid"] = lm.recorder.values[-1]
        lm.save_encoder(f"enc{seed}")
        row["lm_s"], row["lm_cpu_s"] = time.perf_counter() - start, time.process_time() - cpu
    set_seed(seed)
    learn = text_classifier_learner(data_clas, config=clas_config, drop_mult=0.5, metrics=[accuracy])
    if kind == "ulmfit":
        learn.load_encoder(f"enc{seed}")
        learn.fit_one_cycle(1, 2e-2, moms=moms)
        learn.freeze_to(-2)
        learn.fit_one_cycle(1, slice(1e-2 / 2.6 ** 4, 1e-2), moms=moms)
        learn.freeze_to(-3)
        learn.fit_one_cycle(1, slice(5e-3 / 2.6 ** 4, 5e-3), moms=moms)
        learn.unfreeze()
        learn.fit_one_cycle(args.clas_epochs, slice(1e-3 / 2.6 ** 4, 1e-3), moms=moms)
    else:
        learn.fit_one_cycle(3 + args.clas_epochs, 1e-2, moms=moms)
    row["accuracy"] = float(learn.recorder.values[-1][-1])
    row["s"], row["cpu_s"] = time.perf_counter() - start, time.process_time() - cpu
    return row


def run_ulmfit(args) -> None:
    from fastbase.core import defaults
    from fastbase.text.pretrain import pretrain_lm
    defaults.silent = True
    lm_dir = Path(args.lm_dir)
    if "ulmfit" in args.kinds and not (lm_dir / "lm_fwd.json").is_file():
        result = pretrain_lm(WIKI, lm_dir, epochs=args.pretrain_epochs, emb_sz=args.emb_sz, n_hid=args.n_hid,
                             n_layers=args.n_layers, bs=64, lr=1e-2, max_vocab=args.max_vocab, drop_mult=0.2)
        print("pretrained:", json.dumps(result, default=str), flush=True)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    data_lm, data_clas = _ulmfit_data(work)
    print(f"data: {time.perf_counter() - start:.1f} s, LM vocabulary {len(data_lm.vocab)}", flush=True)
    results = Path(args.results)
    rows = json.loads(results.read_text()) if results.is_file() else []
    for seed in args.seeds:
        for kind in args.kinds:
            row = ulmfit_seed(args, kind, seed, data_lm, data_clas)
            rows.append(row)
            results.write_text(json.dumps(rows, indent=1))
            print(json.dumps(row), flush=True)
    summarize_ulmfit(rows)


def summarize_ulmfit(rows: list[dict]) -> None:
    """Mean accuracy of each kind over its seeds, and the recipe's minutes (wall and CPU)."""
    for kind in ("ulmfit", "scratch"):
        mine = [r for r in rows if r["kind"] == kind]
        if mine:
            print(f"{kind}: seeds {[r['seed'] for r in mine]} accuracy {[round(r['accuracy'], 3) for r in mine]} "
                  f"mean {statistics.mean(r['accuracy'] for r in mine):.3f}  minutes (wall) "
                  f"{[round(r['s'] / 60, 1) for r in mine]}  minutes (CPU) {[round(r['cpu_s'] / 60, 1) for r in mine]}")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="mode", required=True)
    tok = sub.add_parser("tokenize")
    tok.add_argument("--runs", type=int, default=3)
    tok.add_argument("--fastai-python", default="/tmp/fastai-venv/bin/python")
    child = sub.add_parser("child")
    child.add_argument("texts_file")
    train = sub.add_parser("train")
    train.add_argument("--runs", type=int, default=3)
    train.add_argument("--tasks", type=lambda v: v.split(","), default=["lm", "clas"])
    train.add_argument("--fastai-python", default="/tmp/fastai-venv/bin/python")
    for name, default in (("epochs", 2), ("docs", 192), ("emb-sz", 128), ("n-hid", 384), ("bs", 32)):
        train.add_argument(f"--{name}", type=int, default=default)
    tchild = sub.add_parser("train-child")
    tchild.add_argument("lib")
    tchild.add_argument("task")
    tchild.add_argument("sizes", type=int, nargs=5)
    ulm = sub.add_parser("ulmfit")
    ulm.add_argument("--seeds", type=lambda s: [int(v) for v in s.split(",")], default=[0, 1, 2])
    ulm.add_argument("--kinds", type=lambda s: s.split(","), default=["ulmfit", "scratch"])
    ulm.add_argument("--lm-dir", default="/tmp/fastbase_text_bench/lm")
    ulm.add_argument("--work", default="/tmp/fastbase_text_bench/work")
    ulm.add_argument("--results", default="/tmp/fastbase_text_bench/ulmfit.json", help="rows are added to it")
    for name, default in (("pretrain-epochs", 8), ("lm-epochs", 1), ("clas-epochs", 1), ("emb-sz", 64),
                          ("n-hid", 256), ("n-layers", 2), ("max-vocab", 30000)):
        ulm.add_argument(f"--{name}", type=int, default=default)
    ulm.add_argument("--lm-lr", type=float, default=1e-2)
    ulm.add_argument("--lm-drop-mult", type=float, default=0.3)
    args = parser.parse_args(argv)
    if args.mode == "child":
        print(json.dumps(child_fastbase(args.texts_file)))
    elif args.mode == "train-child":
        print(json.dumps(child_train(args.lib, args.task, *args.sizes)))
    elif args.mode == "train":
        run_train(args)
    elif args.mode == "tokenize":
        run_tokenize(args)
    else:
        run_ulmfit(args)


if __name__ == "__main__":
    main()
