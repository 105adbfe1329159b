"""Layer 6: frozen-body feature caching for cnn_learner models (`nn.Sequential(body, head)`).

While the body is frozen and does not depend on the batch, every epoch recomputes the same body
activations. `FeatureCache` computes them once per fit (the body and the head's leading pooling
layers, which have no weights), then trains and validates the head alone on them. The head's own
BatchNorm and Dropout still train as usual, batches come in the order the training loader would
give them, and the random streams are left as the uncached path leaves them, so the head ends with
the same weights as without the cache.

It applies when all of these hold, and otherwise says why (`cache_blockers`):
- the body is frozen, BatchNorm included: `train_bn=False` (with `train_bn=True`, fastai's
  behaviour, BatchNorm stays trainable, so every step would still run backward through the body);
- the body's BatchNorm layers are in eval mode during training (`freeze_bn_stats=True` or
  "finetune"), and it has no Dropout: otherwise its outputs depend on the batch and on chance;
  cnn_learner's defaults for a pretrained body meet these two;
- the training transforms are deterministic (the cache is then exact), or `n_views=k` asks to cache
  k augmented passes over the training set, used in turn by the epochs (an approximation of fresh
  augmentation each epoch; views are built when an epoch first needs them).

`cnn_learner` puts a `FeatureCache(auto=True, n_views=DEFAULT_N_VIEWS)` on every Learner it makes:
where caching applies and `learn.feature_cache` is true (the default for a pretrained body), `fit`,
`fit_one_cycle`, `lr_find` (training views only: it has no validation) and `validate`/`get_preds`
(so `ClassificationInterpretation`) on the frozen model use the cache, built once per body state and
data; `unfreeze()` drops it. `FeatureCache()` passed to a fit raises `FeatureCacheError` where it
cannot apply; `FeatureCache(auto=True)` trains as usual there. The cache's size is bounded
(`max_memory`, default half the available memory): past it, an automatic cache falls back to the
uncached path and says so with the figure, an explicit one raises, and `memmap=True` keeps the
features in files under the data folder instead.

A training step on cached features costs a few milliseconds against seconds for a step through
the body on a CPU (`python bench/feature_cache.py`; figures in bench/RESULTS.md).
"""
from __future__ import annotations

import hashlib
import math
import time
import weakref
from contextlib import contextmanager

import torch
from torch import nn

from ..callback import Callback, Order
from ..core import BN_TYPES, FastbaseError
from ..data import Normalizer
from ..layers import AdaptiveConcatPool2d
from ..progress import progress_disabled
from .feature_store import CacheTooBig, feature_storage
from .transforms import BatchAugment, Crop, ToFloat

__all__ = ["DEFAULT_N_VIEWS", "FeatureCache", "FeatureCacheError", "cache_blockers", "fixed_head_layers"]

# Augmented views cached by default when the training transforms are random: chosen by measuring
# accuracy against the uncached path (bench/cache_accuracy.py; figures in bench/RESULTS.md).
DEFAULT_N_VIEWS = 1

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
    valid = {id(t) for t in data.valid_dl.tfms}
    found = []
    for tfm in data.train_dl.tfms:
        if id(tfm) in valid or isinstance(tfm, (ToFloat, Normalizer)):
            continue
        if isinstance(tfm, BatchAugment):
            found += [t for t in tfm.tfms if not (isinstance(t, Crop) and t.centred)]
        else:
            found.append(tfm)
    return found


def cache_blockers(learn, n_views: int | None = None) -> list[str]:
    """Why the body's features cannot be cached for `learn` (empty when they can)."""
    model = learn.model
    if not (isinstance(model, nn.Sequential) and len(model) == 2):
        return ["the model is not nn.Sequential(body, head) as cnn_learner builds it"]
    train_dl = learn.data.train_dl
    if not (hasattr(train_dl, "dl") and hasattr(train_dl, "new")):
        return ["the training loader is not a DataBunch loader, which the cache replays in order"]
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


@contextmanager
def _eval_mode(model: nn.Module):
    """The whole model in eval mode (the body's outputs as inference sees them), modes put back after."""
    modes = {m: m.training for m in model.modules()}
    model.eval()
    try:
        yield
    finally:
        for m, mode in modes.items():
            m.training = mode


def _like_weights(x: torch.Tensor, body: nn.Module) -> torch.Tensor:
    """`x` channels-last when the body's convolutions are (as the ChannelsLast callback makes batches)."""
    weight = next((p for p in body.parameters() if p.dim() == 4), None)
    if x.dim() == 4 and weight is not None and not weight.is_contiguous() and \
            weight.is_contiguous(memory_format=torch.channels_last):
        return x.contiguous(memory_format=torch.channels_last)
    return x


class FeatureCache(Callback):
    """Train the head on cached body features (see the module docstring for when this applies).

    `learn.fit_one_cycle(4, callbacks=[FeatureCache()])` for one fit, or `callbacks=[FeatureCache(auto=True)]`
    on the Learner for every fit where it applies (cnn_learner adds one; `learn.feature_cache = False`
    turns an automatic one off). `n_views` caches that many augmented passes when the training
    transforms are random; `cache_valid` also caches the validation set's features. `max_memory`
    bounds the cache in bytes (default: half the memory available when it is built); `memmap=True`
    keeps the features in files under `data.path/feature_cache` instead of in memory. The cache is
    kept between fits while the body's weights and the data stay the same. It replaces the step's
    `forward`; an automatic one gives way to another callback that does (e.g. mixed precision).
    """
    order = Order.FEATURE_CACHE
    changes_step = True  # lr_find runs on the cached features too

    def __init__(self, n_views: int | None = None, auto: bool = False, cache_valid: bool = True,
                 verbose: bool = True, max_memory: int | None = None, memmap: bool = False):
        if n_views is not None and n_views < 1:
            raise FeatureCacheError(f"n_views must be 1 or more, got {n_views}.")
        self.n_views, self.auto, self.cache_valid, self.verbose = n_views, auto, cache_valid, verbose
        self.max_memory, self.memmap = max_memory, memmap
        self.active, self.reasons, self._serving, self._saved, self._in_fit = False, [], False, [], False
        self._key, self._train, self._valid, self._passes, self._files = None, [], None, 0, []
        self._fixed = self._rest = None

    @property
    def optional_step(self) -> bool:
        """An automatic cache gives way to another callback of the run that replaces `forward`."""
        return self.auto

    # --- events -------------------------------------------------------------------------------
    def before_fit(self):
        self._passes, self._in_fit = 0, True
        self.reasons = self._blockers()
        self.active = not self.reasons
        if self.reasons and not self.auto:
            raise FeatureCacheError("Cannot cache the body's features: " + "; ".join(self.reasons) + ". "
                                    "(FeatureCache(auto=True) trains as usual when caching does not apply.)")
        if not self.active:
            self.clear()
            return
        start = time.perf_counter()
        try:
            fresh = self._plan()
            self._view(0)
        except CacheTooBig as e:
            self.clear()
            if not self.auto:
                raise FeatureCacheError(str(e)) from None
            self.active, self.reasons = False, [str(e)]
            self._say(f"FeatureCache: not caching, training as usual: {e}")
            return
        self._say(self._describe(fresh, time.perf_counter() - start))

    def before_train(self):
        learn = self.learn
        if self.active and learn.dl is learn.data.train_dl:
            # a probe (lr_find: many short passes) uses the views built so far, at least the first, so
            # that a sweep of a few batches costs one pass of the body, not n_views
            views = max(1, sum(v is not None for v in self._train)) if learn.probing else len(self._train)
            features, targets = self._view(self._passes % views)
            self._passes += 1
            learn.dl, self._serving = _CachedLoader(features, targets, learn.dl), True

    def after_train(self):
        self._serving = False

    def before_validate(self):
        learn = self.learn
        self._saved.append(self._serving)  # a validation nested in training must give training back
        self._serving = False
        if learn.dl is not learn.data.valid_dl or not self.cache_valid:
            return
        if self._in_fit:
            use = self.active
        else:  # validate / get_preds (ClassificationInterpretation): only a cache that is still current
            use = self._valid is not None and not self._blockers() and self._state_key() == self._key
        if use:
            if self._valid is None:
                self._valid = self._with_rng(lambda: self._features(learn.data.valid_dl.new(generator=None), "valid"))
            learn.dl, self._serving = _CachedLoader(*self._valid, learn.dl), True

    def after_validate(self):
        self._serving = self._saved.pop() if self._saved else False

    def cleanup_fit(self):
        self.active, self._serving, self._saved, self._in_fit = False, False, [], False

    def after_freeze(self):
        """`Learner.freeze_to` (so `unfreeze()`) calls this: the features of a body about to train are stale."""
        self.clear()

    def forward(self):
        learn = self.learn
        if self._serving:
            return self._rest(*learn.xb)
        return learn.model(*learn.xb)

    # --- the cache ------------------------------------------------------------------------------
    def clear(self) -> None:
        """Drop the cached features and their files (they are rebuilt at the next fit)."""
        self._key, self._train, self._valid = None, [], None
        for file in self._files:
            file.unlink(missing_ok=True)
        self._files = []

    def _blockers(self) -> list[str]:
        learn = self.learn
        if self.auto and not getattr(learn, "feature_cache", True):
            return ["learn.feature_cache is False"]
        if getattr(learn._forward, "__self__", None) is not self:
            return ["another callback of this fit replaces the forward pass (e.g. mixed precision)"]
        return cache_blockers(learn, self.n_views)

    def _say(self, line: str) -> None:
        silent = self.learn.silent
        if self.verbose and not (progress_disabled() if silent is None else silent):
            print(line, flush=True)

    def _describe(self, fresh: bool, seconds: float) -> str:
        feats = self._train[0][0]
        n, per_item = feats.shape[0], feats[0].numel() * feats.element_size()
        augmented = bool(self.n_views and _random_tfms(self.learn.data))
        views = (f"{len(self._train)} augmented views of {n} training items, one per epoch in turn"
                 if len(self._train) > 1 else f"one augmented pass over {n} training items, reused by every epoch"
                 if augmented else f"{n} training items")
        valid = f" and {len(self.learn.data.valid_dl.dataset)} validation items" if self.cache_valid else ""
        where = f"in files under {self.learn.data.path / 'feature_cache'}" if self.memmap else "in memory"
        built = f"first view built in {seconds:.1f} s" if fresh else "reused"
        return (f"FeatureCache: head trains on cached body features ({views}{valid}; {tuple(feats.shape[1:])} "
                f"each, {self._planned_rows() * per_item / 2**20:.1f} MB {where}; {built}). "
                "`learn.feature_cache = False` (or cnn_learner(..., feature_cache=False)) turns this off.")

    def _state_key(self) -> tuple:
        """Changes when the body's weights or statistics (a sum per tensor), the data or the options change."""
        learn = self.learn
        tensors = [t.detach() for t in (*learn.model[0].parameters(), *learn.model[0].buffers())]
        sums = torch.stack([t.double().sum() for t in tensors]).cpu() if tensors else torch.zeros(0)  # one sync
        data = learn.data
        tfms = tuple(id(t) for dl in (data.train_dl, data.valid_dl) for t in getattr(dl, "tfms", []))
        sizes = tuple(len(dl.dataset) for dl in (data.train_dl, data.valid_dl) if dl is not None)
        return (id(learn.model), id(data.train_dl), id(data.valid_dl), tfms, sizes, self.n_views, self.cache_valid,
                tuple(sums.tolist()))

    def _plan(self) -> bool:
        """Start a new cache unless the current one still holds; True when it is new."""
        self._fixed, self._rest = _split_head(self.learn.model[1])
        key = self._state_key()
        if key == self._key:
            return False
        self.clear()
        views = self.n_views if self.n_views and _random_tfms(self.learn.data) else 1
        self._key, self._train, self._valid = key, [None] * views, None
        return True

    def _planned_rows(self) -> int:
        data = self.learn.data
        valid = len(data.valid_dl.dataset) if self.cache_valid and data.valid_dl is not None else 0
        return len(self._train) * len(data.train_dl.dataset) + valid

    def _view(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self._train[i] is None:
            loader = self.learn.data.train_dl.new(shuffle=False, drop_last=False, generator=None)
            self._train[i] = self._with_rng(lambda: self._features(loader, f"train{i}"))
        return self._train[i]

    def _with_rng(self, build):
        device = self.learn.data.device
        with torch.random.fork_rng(devices=[device.index or 0] if device.type == "cuda" else []):
            return build()  # the uncached path draws nothing here (augmented views draw on a fork)

    def _features(self, dl, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(features, targets) of `dl`'s items in order: the body, then the head's fixed layers."""
        body = self.learn.model[0]
        out, targets, filled = None, [], 0
        with _eval_mode(self.learn.model), torch.no_grad():
            for x, y in dl:
                feats = self._fixed(body(_like_weights(x, body)))
                if out is None:
                    out = self._allocate(name, (len(dl.dataset), *feats.shape[1:]), feats)
                out[filled:filled + len(feats)] = feats
                filled += len(feats)
                targets.append(y)
        return out[:filled], torch.cat(targets)

    def _allocate(self, name: str, shape: tuple, like: torch.Tensor) -> torch.Tensor:
        """Storage for one set's features, once the whole cache is known to fit (else `CacheTooBig`)."""
        total = self._planned_rows() * math.prod(shape[1:]) * like.element_size()
        file = None
        if self.memmap:
            digest = hashlib.sha1(repr(self._key).encode()).hexdigest()[:12]
            file = self.learn.data.path / "feature_cache" / f"{digest}-{name}.bin"
            self._files.append(file)
        return feature_storage(shape, like, total, self.max_memory, file)
