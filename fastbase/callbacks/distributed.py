"""Layer 4: distributed data parallel (DDP) training over the processes `torchrun` starts, as a callback.

`torchrun --nproc_per_node=N script.py` runs N copies of an unchanged script. At `fit` the Learner
sees torchrun's environment (`RANK`, `WORLD_SIZE`, `LOCAL_RANK`, `MASTER_ADDR`) and calls
`to_distributed`, which joins the process group (NCCL on CUDA, gloo on the CPU) and adds a
`DistributedTrainer`. During each fit that callback:

- wraps the model in `DistributedDataParallel` (gradients averaged over processes every step;
  `DistributedDataParallel` also copies rank 0's weights to the others when it wraps them);
- gives each process its shard of the training set with a `DistributedSampler`, reshuffled every
  epoch from the data's seed (the same on every process), and restores the loader after fit;
- shards validation too, and gathers predictions and targets across processes (in data-set order,
  without the sampler's padding duplicates) before the loss and metrics are computed, so the
  validation numbers are those of a single process on the same data;
- averages the recorded training loss over processes, so every process records, schedules and
  stops on the same numbers.

`bs` stays the batch size of one process, as torchrun users expect: one step sees `bs * N` items,
an epoch has 1/N of the steps, and learning rates are not scaled (scale them yourself if the
larger batch wants it). Outside fit, `validate`, `get_preds` and `predict` run on each process
alone, over all the data. Only rank 0 prints progress and writes files (`fastbase.core.is_main_process`).
"""
from __future__ import annotations

import atexit
import os

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data.distributed import DistributedSampler

from ..callback import Callback, Order
from ..core import FastbaseError

__all__ = ["TORCHRUN_VARS", "DistributedError", "DistributedTrainer", "in_torchrun", "setup_distributed",
           "to_distributed", "wants_distributed"]

TORCHRUN_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR")


class DistributedError(FastbaseError):
    """Distributed training cannot start: the message says which variable or setting is missing."""


def in_torchrun() -> bool:
    """True when torchrun (or a launcher setting its variables) started this process as one of several."""
    size = os.environ.get("WORLD_SIZE", "")
    return all(v in os.environ for v in TORCHRUN_VARS) and size.isdigit() and int(size) > 1


def wants_distributed(learn) -> bool:
    """Should `fit` make `learn` distributed? Yes under torchrun (or in an initialised process group of
    several), unless it already is or `FASTBASE_DDP=0` asks every process to train on its own."""
    if os.environ.get("FASTBASE_DDP", "").strip().lower() in ("0", "false", "no"):
        return False
    if any(isinstance(cb, DistributedTrainer) for cb in learn.callbacks):
        return False
    grouped = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
    return in_torchrun() or grouped


def setup_distributed(device, backend: str | None = None) -> torch.device:
    """Join the default process group from torchrun's environment unless it is already initialised
    (`backend` default: NCCL for CUDA, gloo otherwise). Returns the device this process trains on:
    `cuda:LOCAL_RANK` for a CUDA `device`, else `device`."""
    if not dist.is_available():
        raise DistributedError("This PyTorch build has no torch.distributed, so it cannot train on several "
                               "processes. Install a PyTorch build with distributed support.")
    device = torch.device(device)
    if device.type == "cuda":
        local_rank = os.environ.get("LOCAL_RANK")
        index = int(local_rank) if local_rank is not None else int(os.environ.get("RANK", "0"))
        index %= max(1, torch.cuda.device_count())
        device = torch.device("cuda", index)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        missing = [v for v in (*TORCHRUN_VARS, "MASTER_PORT") if v not in os.environ]
        if missing:
            raise DistributedError(f"Distributed training needs the environment torchrun sets; {missing} are "
                                   "missing. Start the script with `torchrun --nproc_per_node=N script.py`, or call "
                                   "torch.distributed.init_process_group yourself before fit.")
        dist.init_process_group(backend or ("nccl" if device.type == "cuda" else "gloo"))
        atexit.register(_leave_process_group)
    return device


def _leave_process_group() -> None:
    """At exit, destroy the process group `setup_distributed` joined (unless the script already did).
    A gloo group left to the interpreter's teardown can abort the process (SIGABRT, 'terminate called
    without an active exception') after training has finished: its threads still hold tensors when
    Python is no longer there to free them."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def to_distributed(learn, backend: str | None = None, find_unused_parameters: bool = False,
                   sync_train_loss: bool = True):
    """Make `learn` train with DDP across the processes of the group (joined here if needed): move its
    model and data to this process's GPU on CUDA and add a `DistributedTrainer`. Returns `learn`."""
    device = setup_distributed(learn.data.device, backend)
    if device != learn.data.device:
        learn.model.to(device)
        learn.data.device = device
        for dl in learn.data.dls:
            dl.device = device
    if not any(isinstance(cb, DistributedTrainer) for cb in learn.callbacks):
        learn.callbacks.append(DistributedTrainer(find_unused_parameters, sync_train_loss))
    return learn


class _DistributedModel(DistributedDataParallel):
    """DDP whose `state_dict` has the wrapped model's keys (no 'module.' prefix), so that callbacks
    saving or restoring `learn.model` during fit (lr_find, checkpoints) work wrapped or not."""

    def state_dict(self, *args, **kwargs):
        return self.module.state_dict(*args, **kwargs)

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        return self.module.load_state_dict(state_dict, strict=strict, assign=assign)


class DistributedTrainer(Callback):
    """During fit: DDP around the model, a shard of the training and validation data per process,
    validation predictions gathered across processes, the training loss averaged (`sync_train_loss`).
    Everything it changes on the Learner and the DataBunch is restored after fit. Needs an initialised
    process group (see `to_distributed`); `find_unused_parameters` goes to DistributedDataParallel."""
    order = Order.DISTRIBUTED
    changes_step = True

    def __init__(self, find_unused_parameters: bool = False, sync_train_loss: bool = True):
        self.find_unused_parameters, self.sync_train_loss = find_unused_parameters, sync_train_loss
        self._shards = {}
        self._fitting = False
        self._remaining = None

    # --- fit: wrap the model, shard the training data -------------------------------------------
    def before_fit(self):
        learn = self.learn
        self.world = dist.get_world_size()
        self._model, self._train_dl = learn.model, learn.data.train_dl
        learn.data.train_dl = self._sharded(self._train_dl, shuffle=True)
        if any(p.requires_grad for p in learn.model.parameters()):  # DDP refuses a model with nothing to train
            device = learn.data.device
            learn.model = _DistributedModel(learn.model, device_ids=[device.index] if device.type == "cuda" else None,
                                            find_unused_parameters=self.find_unused_parameters)
        self._fitting = True

    def before_epoch(self):
        """A new shuffle of the training shards, the same on every process: the epoch number handed to
        the sampler is drawn from the data's generator (or torch's) and broadcast from rank 0."""
        sampler = self.learn.data.train_dl.dl.sampler
        if isinstance(sampler, DistributedSampler):
            generator = self.learn.data.train_dl.dl.generator
            draw = torch.randint(0, 2**31 - 1, (), generator=generator).item()
            sampler.set_epoch(self._broadcast_int(draw))

    def after_loss(self):
        learn = self.learn
        if learn.training and self.sync_train_loss and self.world > 1:
            loss = learn.loss.detach().float().clone()
            dist.all_reduce(loss)
            learn.loss = loss / self.world

    def after_train(self):
        """BatchNorm statistics and other buffers as rank 0 has them, so every process validates and
        ends with the same model."""
        for buffer in self._model.buffers():
            dist.broadcast(buffer, src=0)

    def cleanup_fit(self):
        if not self._fitting:
            return
        self._fitting = False
        self.learn.model, self.learn.data.train_dl = self._model, self._train_dl

    # --- validation: shard, then gather what the loss and metrics see ---------------------------
    def before_validate(self):
        self._remaining = None
        learn = self.learn
        if not self._fitting or self.world < 2 or not hasattr(learn.dl, "new"):
            return
        self._remaining = len(learn.dl.dataset)
        learn.dl = self._sharded(learn.dl, shuffle=False)

    def after_pred(self):
        """Replace this process's predictions and targets by the whole batch across processes, in
        data-set order, without the items the sampler repeated to pad the last shards."""
        if self._remaining is None:
            return
        learn = self.learn
        pred, yb = _gather(learn.pred, self.world), tuple(_gather(y, self.world) for y in learn.yb)
        n = _length(pred)
        keep = min(n, self._remaining)
        self._remaining -= keep
        if keep < n:
            pred, yb = _head(pred, keep), tuple(_head(y, keep) for y in yb)
        learn.pred, learn.yb = pred, yb

    def after_validate(self):
        self._remaining = None

    # --- helpers ----------------------------------------------------------------------------------
    def _sharded(self, dl, shuffle: bool):
        """`dl` reading only this process's shard, with the same batch size and transforms; `drop_last`
        only where the shard has several batches. Kept while `dl` is unchanged, so that persistent
        workers survive from one fit (and validation) to the next."""
        key, source = (id(dl), shuffle), (dl, dl.dl, list(dl.tfms))
        cached = self._shards.get(key)
        if cached is None or any(a is not b for a, b in zip(cached[0][:2], source[:2])) or cached[0][2] != source[2]:
            sampler = DistributedSampler(dl.dataset, num_replicas=self.world, rank=dist.get_rank(), shuffle=shuffle,
                                         seed=0, drop_last=False)
            drop_last = dl.dl.drop_last and sampler.num_samples > dl.batch_size
            self._shards[key] = cached = (source, dl.new(sampler=sampler, shuffle=False, drop_last=drop_last))
        return cached[1]

    def _broadcast_int(self, value: int) -> int:
        device = self.learn.data.device if dist.get_backend() == "nccl" else "cpu"
        tensor = torch.tensor([value], dtype=torch.int64, device=device)
        dist.broadcast(tensor, src=0)
        return int(tensor.item())


def _gather(x, world: int):
    """(n, ...) from each process -> (world * n, ...) with item j of rank r at j * world + r: the data-set
    order of a non-shuffled DistributedSampler. Lists and tuples are gathered element by element."""
    if isinstance(x, (list, tuple)):
        return type(x)(_gather(v, world) for v in x)
    parts = [torch.empty_like(x) for _ in range(world)]
    dist.all_gather(parts, x.contiguous())
    return torch.stack(parts, dim=1).reshape(-1, *x.shape[1:])


def _length(x) -> int:
    return _length(x[0]) if isinstance(x, (list, tuple)) else x.shape[0]


def _head(x, n: int):
    return type(x)(_head(v, n) for v in x) if isinstance(x, (list, tuple)) else x[:n]
