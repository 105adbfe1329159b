"""Layer 6: frozen-body feature caching for cnn_learner models (`nn.Sequential(body, head)`).

While the body is frozen and does not depend on the batch, every epoch recomputes the same body
activations. `FeatureCache` computes them once per fit (the body and the head's leading pooling
layers, which have no weights), then trains and validates the head alone on them. The head's own
BatchNorm and Dropout still train as usual, batches come in the order the training loader would
give them, and the random streams are left as the uncached path leaves them, so the head ends with
the same weights as without the cache.

It applies when all of these hold; otherwise `FeatureCache()` raises `FeatureCacheError` naming the
reason, and `FeatureCache(auto=True)` trains as usual (and prints a line when it does apply):
- the body is frozen, BatchNorm included: `train_bn=False` (with `train_bn=True`, fastai's
  behaviour, BatchNorm stays trainable, so every step would still run backward through the body);
- the body's BatchNorm layers are in eval mode during training (`freeze_bn_stats=True` or
  "finetune"), and it has no Dropout: otherwise its outputs depend on the batch and on chance;
  cnn_learner's defaults for a pretrained body meet these two;
- the training transforms are deterministic, or `n_views=k` asks to cache k augmented passes over
  the training set, used in turn by the epochs (an approximation of fresh augmentation each epoch).

A training step on cached features costs a few milliseconds against seconds for a step through
the body on a CPU (`python bench/feature_cache.py`; figures in bench/RESULTS.md).
"""
from __future__ import annotations

import time
import weakref

import torch
from torch import nn

from ..callback import Callback, Order
from ..callbacks.progress import progress_disabled
from ..core import BN_TYPES, FastbaseError
from ..data import Normalizer
from .learner import AdaptiveConcatPool2d
from .transforms import BatchAugment, CenterCrop, ToFloat

__all__ = ["FeatureCache", "FeatureCacheError", "cache_blockers", "fixed_head_layers"]

# Layers without weights whose output does not depend on training mode or chance.
_FIXED = (AdaptiveConcatPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.AvgPool2d, nn.MaxPool2d, nn.Flatten,
          nn.Identity, nn.ReLU)
_RANDOM = (nn.modules.dropout._DropoutNd,)


class FeatureCacheError(FastbaseError):
    """Features cannot be cached for this fit; the message says why and what to change."""


def fixed_head_layers(head: nn.Module) -> int:
    """How many leading layers of the head have no weights and no randomness (pooling, flatten): they
    run once, with the body, so the cache holds pooled features rather than whole feature maps."""
    if not isinstance(head, nn.Sequential):
        return 0
    n = 0
    for layer in head:
        if not isinstance(layer, _FIXED) or any(True for _ in layer.parameters()) or any(True for _ in layer.buffers()):
            break
        n += 1
    return n


def _split_head(head: nn.Module) -> tuple[nn.Module, nn.Module]:
    """(the head's fixed leading layers, the rest that trains)."""
    n = fixed_head_layers(head)
    return (head[:n], head[n:]) if n else (nn.Identity(), head)


def _random_tfms(data) -> list:
    """The training loader's transforms that are random (anything not known to be deterministic)."""
    valid = {id(t) for t in getattr(data.valid_dl, "tfms", [])}
    found = []
    for tfm in getattr(data.train_dl, "tfms", []):
        if id(tfm) in valid or isinstance(tfm, (ToFloat, Normalizer)):
            continue
        if isinstance(tfm, BatchAugment):
            found += [t for t in tfm.tfms if not isinstance(t, CenterCrop)]
        else:
            found.append(tfm)
    return found


def cache_blockers(learn, n_views: int | None = None) -> list[str]:
    """Why the body's features cannot be cached for `learn` (empty when they can)."""
    model = learn.model
    if not (isinstance(model, nn.Sequential) and len(model) == 2):
        return ["the model is not nn.Sequential(body, head) as cnn_learner builds it"]
    body, reasons = model[0], []
    training = [p for p in body.parameters() if p.requires_grad]
    if training:
        bn = {id(p) for m in body.modules() if isinstance(m, BN_TYPES) for p in m.parameters()}
        if all(id(p) in bn for p in training):
            reasons.append("the body's BatchNorm layers are trainable (train_bn=True): pass "
                           "train_bn=False to cnn_learner (its default for a pretrained body), or set "
                           "learn.train_bn = False and call learn.freeze()")
        else:
            reasons.append(f"the body is not frozen ({len(training)} of its parameter tensors train): call "
                           "learn.freeze(), or create the learner with pretrained=True")
    frozen = {id(m) for group in learn.layer_groups[:learn.n_frozen] for m in group.modules()}
    body_bn = [m for m in body.modules() if isinstance(m, BN_TYPES)]
    if body_bn and not (learn.freeze_bn_stats and all(id(m) in frozen for m in body_bn)):
        reasons.append("the body's BatchNorm layers run in training mode, so each batch changes their "
                       "statistics and their outputs: pass freeze_bn_stats=True (with a frozen body)")
    if any(isinstance(m, _RANDOM) and m.p > 0 for m in body.modules()):  # timm keeps Dropout(p=0) layers
        reasons.append("the body holds Dropout layers, which are random while training")
    if n_views is None:
        random = _random_tfms(learn.data)
        if random:
            names = ", ".join(type(t).__name__ for t in random)
            reasons.append(f"the training transforms are random ({names}): pass n_views=k to cache k augmented "
                           "views of the training set, or build the data without ds_tfms")
    return reasons


# DataLoaders with persistent workers that a cache stood in for: such a loader draws its workers'
# base seed only when first iterated (weak references: no loader is kept alive by this set)
_STOOD_IN: weakref.WeakSet = weakref.WeakSet()


class _CachedLoader:
    """Cached `(features, targets)` in the batches `real` (a DeviceDataLoader) would give, in its order.

    Each pass draws what `iter(DataLoader)` draws from the random streams (the workers' base seed,
    then the shuffling), so the global and the loader's generators advance as in the uncached path.
    """

    def __init__(self, features: torch.Tensor, targets: torch.Tensor, real):
        self.features, self.targets, self.real = features, targets, real

    def __len__(self):
        return len(self.real)

    def __iter__(self):
        dl = self.real.dl
        if dl.persistent_workers and dl.num_workers > 0:
            if dl not in _STOOD_IN and getattr(dl, "_iterator", None) is None:
                torch.empty((), dtype=torch.int64).random_(generator=dl.generator)
            _STOOD_IN.add(dl)
        else:
            torch.empty((), dtype=torch.int64).random_(generator=dl.generator)  # as iter(DataLoader) does
        for idx in dl.batch_sampler:
            idx = torch.as_tensor(idx, device=self.features.device)
            yield self.features[idx], self.targets[idx]


class FeatureCache(Callback):
    """Train the head on cached body features (see the module docstring for when this applies).

    `learn.fit_one_cycle(4, callbacks=[FeatureCache()])` for one fit, or `callbacks=[FeatureCache(auto=True)]`
    on the Learner for every fit where it applies. `n_views` caches that many augmented passes when
    the training transforms are random; `cache_valid` also caches the validation set's features.
    The cache is kept between fits while the body's weights and the data stay the same.
    It replaces the step's `forward`, so it cannot run beside another callback that does.
    """
    order = Order.FEATURE_CACHE

    def __init__(self, n_views: int | None = None, auto: bool = False, cache_valid: bool = True,
                 verbose: bool = True):
        if n_views is not None and n_views < 1:
            raise FeatureCacheError(f"n_views must be 1 or more, got {n_views}.")
        self.n_views, self.auto, self.cache_valid, self.verbose = n_views, auto, cache_valid, verbose
        self.active, self.reasons, self._serving, self._saved = False, [], False, []
        self._key, self._train, self._valid, self._passes = None, [], None, 0

    # --- events -------------------------------------------------------------------------------
    def before_fit(self):
        learn = self.learn
        self.reasons = cache_blockers(learn, self.n_views)
        self.active = not self.reasons
        if self.reasons and not self.auto:
            raise FeatureCacheError("Cannot cache the body's features: " + "; ".join(self.reasons) + ". "
                                    "(FeatureCache(auto=True) trains as usual when caching does not apply.)")
        if not self.active:
            return
        self._fixed, self._rest = _split_head(learn.model[1])
        start = time.perf_counter()
        fresh = self._build()
        if fresh and self.verbose and not (progress_disabled() if learn.silent is None else learn.silent):
            feats = self._train[0][0]
            megabytes = sum(f.numel() * f.element_size() for f, _ in self._train) / 2**20
            print(f"FeatureCache: head trains on cached body features ({len(self._train)} view(s) of "
                  f"{feats.shape[0]} items x {tuple(feats.shape[1:])}, {megabytes:.1f} MB, computed in "
                  f"{time.perf_counter() - start:.1f} s)", flush=True)

    def before_train(self):
        learn = self.learn
        if self.active and learn.dl is learn.data.train_dl:
            features, targets = self._train[self._passes % len(self._train)]
            self._passes += 1
            learn.dl, self._serving = _CachedLoader(features, targets, learn.dl), True

    def after_train(self):
        self._serving = False

    def before_validate(self):
        learn = self.learn
        self._saved.append(self._serving)  # a validation nested in training must give training back
        self._serving = False
        if self.active and self._valid is not None and learn.dl is learn.data.valid_dl:
            learn.dl, self._serving = _CachedLoader(*self._valid, learn.dl), True

    def after_validate(self):
        self._serving = self._saved.pop() if self._saved else False

    def cleanup_fit(self):
        self.active, self._serving, self._saved = False, False, []

    def forward(self):
        learn = self.learn
        if self._serving:
            return self._rest(*learn.xb)
        return learn.model(*learn.xb)

    # --- the cache ------------------------------------------------------------------------------
    def clear(self) -> None:
        """Drop the cached features (they are rebuilt at the next fit)."""
        self._key, self._train, self._valid = None, [], None

    def _state_key(self) -> tuple:
        """Changes when the body's weights or statistics (a sum per tensor), the data or the options change."""
        learn = self.learn
        tensors = [t.detach() for t in (*learn.model[0].parameters(), *learn.model[0].buffers())]
        sums = torch.stack([t.double().sum() for t in tensors]).cpu() if tensors else torch.zeros(0)  # one sync
        return (id(learn.model), id(learn.data.train_dl), id(learn.data.valid_dl), self.n_views, self.cache_valid,
                tuple(sums.tolist()))

    def _build(self) -> bool:
        key = self._state_key()
        if key == self._key:
            return False
        learn = self.learn
        data = learn.data
        device = data.device
        devices = [device.index or 0] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):  # the uncached path draws nothing here
            loader = data.train_dl.new(shuffle=False, drop_last=False, generator=None)
            self._train = [self._features(loader) for _ in range(self.n_views or 1)]
            has_valid = self.cache_valid and data.valid_dl is not None and len(data.valid_dl)
            self._valid = self._features(data.valid_dl.new(generator=None)) if has_valid else None
        self._key = key
        return True

    def _features(self, dl) -> tuple[torch.Tensor, torch.Tensor]:
        """(features, targets) of `dl`'s items in order: the body, then the head's fixed layers."""
        model = self.learn.model
        body, fixed = model[0], self._fixed
        modes = {m: m.training for m in model.modules()}
        model.eval()
        feats, targets = [], []
        try:
            with torch.no_grad():
                for x, y in dl:
                    feats.append(fixed(body(x)))
                    targets.append(y)
        finally:
            for m, mode in modes.items():
                m.training = mode
        return torch.cat(feats), torch.cat(targets)
