"""What the unfrozen stage of lesson 1 does to a model, one setting at a time (issue 32).

For each set and seed, lr_find and the frozen stage run once with cnn_learner's defaults (a real
ImageNet MobileNetV2 body, `bench/finetune.py`'s sets and recipe); the model and optimizer are
then saved in memory, and every variant of the second stage (`unfreeze()`, `fit_one_cycle(1,
slice(lr/100, lr/10))`) starts from that same state, with the loader's random generators put back (the same
augmented batches). So the rows of one seed differ only in the
second stage's setting. `zero` trains the second stage at a learning rate of 1e-12: what remains
is the change from the frozen stage's path (cached features) to the unfrozen one (live images).

    python bench/second_stage.py [--sets hymenoptera,imagenette_4] [--seeds 0,1,2] [--variants zero,default,...]

Variants (VARIANTS below): default; zero; bn-train (BatchNorm statistics learnt in the second
stage, as fastai does); eps (Adam's eps 1e-5, fastai 2's, instead of torch's 1e-8); wd0; lr10
(a tenth of the recipe's rates); sched (fastai 2's one-cycle: pct_start 0.25, final div 1e5);
train-bn-eps (bn-train and eps together); bn-train-body and bn-train-head (statistics learnt in
the body only, or in the head only, the other part's fixed); body-lr100 (every body group at lr/100, the head at lr/10: how
`slice(lr/100, lr/10)` spreads over fastai 2's two groups for this body, where fastbase has three);
finetune (`freeze_bn_stats="finetune"`); recal and recal-train (the head's statistics recomputed after
each epoch over the training images without or with augmentation, `RecalibrateBN`); rewarm (the
head's statistics averaged afresh over the fit's batches); ema (weights averaged over the fit's steps,
decay 0.8, put in the model before validation). `--base` sets `freeze_bn_stats` before
every variant (default "body", cnn_learner's default). About 30 s a variant on 2 idle CPU cores.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from finetune import SETS, SHARED, WEIGHTS, build_coco, temp_hub


def _eps(learn, eps):
    for g in learn.opt.param_groups:
        g["eps"] = eps


def fix_bn(part: int):
    """A callback keeping the BatchNorm layers of `learn.model[part]` (0 the body, 1 the head) in eval
    mode while training: with `freeze_bn_stats=False`, the other part's layers learn their statistics."""
    from torch.nn.modules.batchnorm import _BatchNorm

    from fastbase.callback import Callback, Order

    class FixBN(Callback):
        order = Order.BN_FREEZE

        def before_train(self):
            for m in self.learn.model[part].modules():
                if isinstance(m, _BatchNorm):
                    m.eval()
    return FixBN()


def rewarm():
    """A callback making the BatchNorm layers that learn statistics in this fit (the head's, in the
    "body" mode) average them afresh from its first batch: momentum max(m, 1/t) at the fit's t-th
    batch, so the statistics describe the body as this fit leaves it rather than 0.9^n of them the
    frozen stage's."""
    from torch.nn.modules.batchnorm import _BatchNorm

    from fastbase.callback import Callback, Order

    class Rewarm(Callback):
        order = Order.BN_FREEZE + 1

        def before_fit(self):
            self.t, self.layers = 0, []

        def before_batch(self):
            if not self.learn.training:
                return
            if not self.layers:
                self.layers = [(m, m.momentum) for m in self.learn.model.modules()
                               if isinstance(m, _BatchNorm) and m.training and m.momentum is not None]
            self.t += 1
            for m, momentum in self.layers:
                m.momentum = max(momentum, 1.0 / self.t)

        def cleanup_fit(self):
            for m, momentum in self.layers:
                m.momentum = momentum
    return Rewarm()


def ema(decay: float = 0.8):
    """A callback keeping an exponential average of the weights and buffers over the fit's training
    steps (`torch.optim.swa_utils.AveragedModel`) and putting it in the model at the end of each
    epoch's training, before validation."""
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    from fastbase.callback import Callback

    class EMA(Callback):
        def before_fit(self):
            self.avg = AveragedModel(self.learn.model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)

        def after_step(self):
            self.avg.update_parameters(self.learn.model)

        def after_train(self):
            self.learn.model.load_state_dict(self.avg.module.state_dict())
    return EMA()


def _fix(part: int) -> dict:
    return {"callbacks": [fix_bn(part)]}


# name -> (what to do to the Learner before the second fit, kwargs of that fit, lr factor)
VARIANTS = {
    "default": (None, {}, 1.0),
    "zero": (None, {}, 1e-12),
    "bn-train": (lambda learn: setattr(learn, "freeze_bn_stats", False), {}, 1.0),
    "eps": (lambda learn: _eps(learn, 1e-5), {}, 1.0),
    "train-bn-eps": (lambda learn: (_eps(learn, 1e-5), setattr(learn, "freeze_bn_stats", False)), {}, 1.0),
    "bn-train-body": (lambda learn: setattr(learn, "freeze_bn_stats", False), "fix-head", 1.0),
    "bn-train-head": (lambda learn: setattr(learn, "freeze_bn_stats", False), "fix-body", 1.0),
    "body-lr100": (None, {}, "body-lr100"),  # both body groups at lr/100, as fastai's two-group split gives
    "wd0": (None, {"wd": 0.0}, 1.0),
    "lr10": (None, {}, 0.1),
    "sched": (None, {"pct_start": 0.25, "final_div": 1e5}, 1.0),
    "finetune": (lambda learn: setattr(learn, "freeze_bn_stats", "finetune"), {}, 1.0),
    "recal": (None, "recal-fix", 1.0),  # the head's statistics recomputed on un-augmented training images
    "recal-train": (None, "recal-train", 1.0),  # the same on augmented training batches
    "rewarm": (None, "rewarm", 1.0),
    "ema": (None, "ema", 1.0),  # weights averaged over the epoch's steps (decay 0.8)  # the head's statistics averaged afresh over this fit's batches
}


def run(path: Path, valid: str, flip: bool, seed: int, variants: list[str], args) -> list[dict]:
    from fastbase.core import set_seed
    from fastbase.data import imagenet_stats
    from fastbase.metrics import accuracy
    from fastbase.state import loader_generators
    from fastbase.vision import models
    from fastbase.vision.data import ImageDataBunch
    from fastbase.vision.learner import cnn_learner
    from fastbase.vision.transforms import get_transforms

    set_seed(seed)
    data = ImageDataBunch.from_folder(path, train="train", valid=valid, size=args.size, bs=args.bs,
                                      ds_tfms=get_transforms(do_flip=flip), seed=seed).normalize(imagenet_stats)
    learn = cnn_learner(data, models.mobilenet_v2, metrics=accuracy, silent=True)
    lr = args.lr or learn.lr_find().valley
    learn.fit_one_cycle(args.frozen, lr)
    frozen = {"accuracy": float(learn.recorder.metrics[-1][0]), "valid_loss": float(learn.recorder.val_losses[-1])}
    model_state, opt_state = copy.deepcopy(learn.model.state_dict()), copy.deepcopy(learn.opt.opt.state_dict())
    generators = loader_generators(learn.data.train_dl)  # the same augmented batches for every variant
    gen_states = {k: g.get_state() for k, g in generators.items()}
    rows = []
    for name in variants:
        prepare, fit_kw, factor = VARIANTS[name]
        learn.model.load_state_dict(model_state)
        learn.opt.opt.load_state_dict(opt_state)
        learn.freeze_bn_stats = args.base
        _eps(learn, 1e-8)
        learn.freeze()
        learn.unfreeze()
        if prepare is not None:
            prepare(learn)
        set_seed(seed + 1000)
        for k, g in generators.items():
            g.set_state(gen_states[k])
        start = time.perf_counter()
        if fit_kw == "ema":
            fit_kw = {"callbacks": [ema()]}
        elif fit_kw == "rewarm":
            fit_kw = {"callbacks": [rewarm()]}
        elif fit_kw in ("recal-fix", "recal-train"):
            from fastbase.callbacks.bn_stats import RecalibrateBN
            from fastbase.data import DatasetType
            kind = DatasetType.Fix if fit_kw == "recal-fix" else DatasetType.Train
            fit_kw = {"callbacks": [RecalibrateBN(kind)]}
        elif isinstance(fit_kw, str):  # the BatchNorm of one part fixed, the other's learning
            fit_kw = _fix(1 if fit_kw == "fix-head" else 0)
        if factor == "body-lr100":
            max_lr = [lr / 100] * (len(learn.layer_groups) - 1) + [lr / 10]
        else:
            max_lr = slice(lr * factor / 100, lr * factor / 10)
        learn.fit_one_cycle(args.unfrozen, max_lr, **fit_kw)
        rows.append({"variant": name, "seed": seed, "lr": lr, "frozen": frozen, "s": time.perf_counter() - start,
                     "accuracy": float(learn.recorder.metrics[-1][0]),
                     "valid_loss": float(learn.recorder.val_losses[-1])})
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", default="hymenoptera,imagenette_4")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--size", type=int, default=160)
    parser.add_argument("--bs", type=int, default=64)
    parser.add_argument("--frozen", type=int, default=3)
    parser.add_argument("--unfrozen", type=int, default=1)
    parser.add_argument("--lr", type=float, default=None)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--base", default="body", help="freeze_bn_stats of the second stage's base")
    args = parser.parse_args()
    if not WEIGHTS.is_file():
        print(f"skipped: needs {WEIGHTS} (the project's ../shared folder)")
        return 0
    import torch
    torch.set_num_threads(args.threads)
    variants = args.variants.split(",")
    table = []
    with tempfile.TemporaryDirectory() as tmp:
        os.environ.update(temp_hub(tmp))
        for name in args.sets.split(","):
            valid, flip = SETS[name]
            path = build_coco(Path(tmp, "coco_cls")) if name == "coco_tiny" else SHARED / "data" / name
            for seed in (int(s) for s in args.seeds.split(",")):
                table += [{"set": name, **r} for r in run(path, valid, flip, seed, variants, args)]
    print(f"\nsecond stage from one frozen state per seed; {args.size} px, bs {args.bs}, {args.frozen} frozen + "
          f"{args.unfrozen} unfrozen epochs; load average at the end {os.getloadavg()[0]:.1f}")
    print(f"{'set':<13}{'variant':<14}{'seed':>5}{'lr':>9}{'frozen acc':>11}{'loss':>7}{'final acc':>10}{'loss':>7}"
          f"{'change':>8}")
    for r in table:
        print(f"{r['set']:<13}{r['variant']:<14}{r['seed']:>5}{r['lr']:>9.2e}{r['frozen']['accuracy']:>11.4f}"
              f"{r['frozen']['valid_loss']:>7.3f}{r['accuracy']:>10.4f}{r['valid_loss']:>7.3f}"
              f"{100 * (r['accuracy'] - r['frozen']['accuracy']):>+8.2f}")
    print("\nmean change of accuracy (points) and of valid loss, per variant over every set and seed")
    for v in variants:
        rs = [r for r in table if r["variant"] == v]
        if rs:
            acc = statistics.mean(100 * (r["accuracy"] - r["frozen"]["accuracy"]) for r in rs)
            loss = statistics.mean(r["valid_loss"] - r["frozen"]["valid_loss"] for r in rs)
            print(f"{v:<14} n={len(rs)}  accuracy {acc:+6.2f}  valid loss {loss:+7.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
