"""Layer 6: pretrain an AWD-LSTM language model on a plain-text corpus and write it in fastai's
layout (a `.pth` state dict and a pickled `itos` list) plus its configuration as JSON, for
`language_model_learner(data, pretrained_fnames=(weights, itos), config=...)` where fastai's WT103
weights cannot be downloaded. Each non-empty line of the corpus's `.txt` files is a document.

A long pretraining runs in parts: `--stop-after N` trains N epochs of the one-cycle schedule, keeps
a checkpoint in `--out` and stops; the same command with `--resume` goes on from it, exactly as one
run would have, and the last part writes the model. `--out/pretrain_log.json` adds up each part's
wall and CPU seconds::

    python -m fastbase.text.pretrain ../shared/data/wikitext2_sample --out models/wt2 --epochs 8 \\
        --emb-sz 64 --n-hid 256 --n-layers 2 --stop-after 4          # then again with --resume
"""
from __future__ import annotations

import argparse
import json
import time

from ..callback import Callback, CancelFitException, Order
from ..callbacks.checkpoint import Checkpoint
from ..core import Path, set_seed
from ..learner import Learner
from .data import TextList, open_text
from .learner import Perplexity, language_model_learner
from .models import awd_lstm_lm_config
from .pretrained import write_itos
from .tokenizer import TextError

__all__ = ["PartLog", "StopAfterEpochs", "corpus_lines", "main", "pretrain_lm", "save_pretrained"]

CHECKPOINT, LOG = "pretrain_checkpoint.pth", "pretrain_log.json"


def corpus_lines(path, min_words: int = 3) -> list[str]:
    """The non-empty lines (at least `min_words` words) of the `.txt` files under `path` (or of the file)."""
    path = Path(path)
    files = [path] if path.is_file() else sorted(path.rglob("*.txt"))
    if not files:
        raise TextError(f"No .txt files under {path}.")
    return [line.strip() for f in files for line in open_text(f).splitlines() if len(line.split()) >= min_words]


def save_pretrained(learn: Learner, folder, name: str = "lm_fwd", itos_name: str = "itos",
                    config: dict | None = None) -> tuple[Path, Path]:
    """Write `learn`'s language model as `folder/name.pth` (state dict), `folder/itos_name.pkl` and
    `folder/name.json` (the configuration to build the model with)."""
    import torch
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    wgts = folder / f"{name}.pth"
    torch.save({k: v.detach().cpu() for k, v in learn.model.state_dict().items()}, wgts)
    itos = write_itos(learn.data.vocab.itos, folder / f"{itos_name}.pkl")
    (folder / f"{name}.json").write_text(json.dumps(config or {}, indent=1))
    return wgts, itos


class StopAfterEpochs(Callback):
    """Ends the fit before its epoch `n` of this call starts (counted from the epoch it started or
    resumed at), after the Checkpoint of the last one has been written."""
    order = Order.USER

    def __init__(self, n: int):
        if n < 1:
            raise TextError(f"stop_after must be at least 1 epoch, got {n}.")
        self.n = n

    def before_epoch(self):
        if self.learn.epoch - self.learn.start_epoch >= self.n:
            raise CancelFitException()


class PartLog(Callback):
    """Keeps `out/pretrain_log.json` up to date after every epoch: each part of the run (a call) with
    the epochs done by its end and its wall and CPU seconds, so a part that is stopped still counts."""
    order = Order.USER

    def __init__(self, out: Path, resume: bool):
        self.file = Path(out) / LOG
        self.parts = json.loads(self.file.read_text()) if resume and self.file.is_file() else []
        self.start, self.cpu = time.perf_counter(), time.process_time()
        self.parts.append({"epochs_done": 0, "wall_s": 0.0, "cpu_s": 0.0})

    def after_epoch(self):
        self.update(self.learn.epoch + 1)

    def update(self, epochs_done: int) -> list[dict]:
        self.parts[-1] = {"epochs_done": epochs_done, "wall_s": round(time.perf_counter() - self.start, 1),
                          "cpu_s": round(time.process_time() - self.cpu, 1)}
        self.file.write_text(json.dumps(self.parts, indent=1))
        return self.parts


def pretrain_lm(corpus, out, epochs: int = 4, lr: float = 5e-3, bs: int = 64, bptt: int = 70, emb_sz: int = 400,
                n_hid: int = 1152, n_layers: int = 3, max_vocab: int = 30000, min_freq: int = 3,
                drop_mult: float = 0.3, seed: int = 0, device=None, valid_pct: float = 0.05,
                stop_after: int | None = None, resume: bool = False) -> dict:
    """Pretrain on `corpus` for `epochs` (one cycle at `lr`), save to `out`; returns the files, the
    configuration, the last validation loss/accuracy/perplexity and the time taken. `stop_after`:
    train at most that many epochs in this call (a checkpoint in `out` keeps the rest of the run);
    `resume`: go on from that checkpoint (the other arguments must be those of the first call)."""
    set_seed(seed)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    part_log = PartLog(out, resume)  # the part's clock starts before tokenizing
    start = time.perf_counter()
    ckpt_file = out / CHECKPOINT
    if resume and not ckpt_file.is_file():
        raise TextError(f"Nothing to resume: no {ckpt_file} (run without resume first, with the same --out).")
    lines = corpus_lines(corpus)
    data = (TextList(lines, path=out).split_by_rand_pct(valid_pct, seed=seed).label_for_lm()
            .databunch(bs=bs, bptt=bptt, max_vocab=max_vocab, min_freq=min_freq, device=device, seed=seed))
    tokenized = time.perf_counter() - start
    config = {**awd_lstm_lm_config, "emb_sz": emb_sz, "n_hid": n_hid, "n_layers": n_layers}
    from ..metrics import accuracy
    learn = language_model_learner(data, config=config, drop_mult=drop_mult, pretrained=False,
                                   metrics=[accuracy, Perplexity()])
    callbacks = [Checkpoint(ckpt_file), part_log] + ([StopAfterEpochs(stop_after)] if stop_after else [])
    learn.fit_one_cycle(epochs, lr, moms=(0.8, 0.7), callbacks=callbacks, resume=ckpt_file if resume else None)
    values = learn.recorder.values
    done = len(values) >= epochs
    log = part_log.update(len(values))
    result = {"done": done, "epochs_done": len(values), "config": config, "vocab": len(data.vocab),
              "tokens": int(data.train_ds.n_tokens), "names": learn.recorder.names,
              "valid": values[-1] if values else None, "tokenize_s": round(tokenized, 1),
              "total_s": round(sum(p["wall_s"] for p in log), 1), "total_cpu_s": round(sum(p["cpu_s"] for p in log), 1),
              "parts": log}
    if done:
        wgts, itos = save_pretrained(learn, out, config=config)
        result.update(weights=str(wgts), itos=str(itos))
    return result


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m fastbase.text.pretrain", description=__doc__.split("::")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("corpus", help="a .txt file or a folder of them")
    parser.add_argument("--out", default="models/pretrained_lm", help="folder for lm_fwd.pth, itos.pkl, lm_fwd.json")
    for name, default in (("epochs", 4), ("bs", 64), ("bptt", 70), ("emb-sz", 400), ("n-hid", 1152),
                          ("n-layers", 3), ("max-vocab", 30000), ("min-freq", 3), ("seed", 0)):
        parser.add_argument(f"--{name}", type=int, default=default)
    parser.add_argument("--stop-after", type=int, default=None, help="epochs to train in this call (then --resume)")
    parser.add_argument("--resume", action="store_true", help="go on from the checkpoint in --out")
    parser.add_argument("--lr", type=float, default=5e-3)
    parser.add_argument("--drop-mult", type=float, default=0.3)
    parser.add_argument("--device", default=None)
    args = parser.parse_args(argv)
    result = pretrain_lm(args.corpus, args.out, epochs=args.epochs, lr=args.lr, bs=args.bs, bptt=args.bptt,
                         emb_sz=args.emb_sz, n_hid=args.n_hid, n_layers=args.n_layers, max_vocab=args.max_vocab,
                         min_freq=args.min_freq, drop_mult=args.drop_mult, seed=args.seed, device=args.device,
                         stop_after=args.stop_after, resume=args.resume)
    print(json.dumps(result, indent=1, default=str))
    return result


if __name__ == "__main__":
    main()
