"""Distributed data parallel: an unchanged fastbase script run by torchrun on 2 CPU processes (gloo),
and the rank helpers that decide who prints and writes files."""
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tiny_models import make_data, make_learner, tiny_mlp

from fastbase.callbacks.distributed import (
    TORCHRUN_VARS,
    DistributedError,
    wants_distributed,
)
from fastbase.callbacks.progress import progress_disabled
from fastbase.core import is_main_process, num_distrib, rank_distrib, rank_zero_only
from fastbase.metrics import accuracy

TESTS = Path(__file__).parent

# A plain training script, as a user writes it: nothing in it knows about torchrun, except the
# per-rank `path` (so the test can see which process wrote files) and the result files for the test.
SCRIPT = """
import json, os, sys
sys.path.insert(0, {tests!r})
import torch
from fastbase.callback import Callback
from fastbase.callbacks import Checkpoint, CSVLogger
from fastbase.core import set_seed
from fastbase.learner import Learner
from fastbase.metrics import accuracy
from tiny_models import make_data, tiny_mlp

class SeenItems(Callback):
    "The first feature of every training item this process trained on, per epoch."
    def before_fit(self):
        self.epochs = []
    def before_train(self):
        self.epochs.append([])
    def before_batch(self):
        if self.learn.training:
            self.epochs[-1] += self.learn.xb[0][:, 0].tolist()

out, rank = sys.argv[1], int(os.environ["RANK"])
set_seed(0)
data = make_data(n_train=128, n_valid=41, bs=16, val_bs=8)  # 41: the shards get a padding duplicate
model = tiny_mlp()
if rank == 1:  # different initial weights: DDP must start every process from rank 0's
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
learn = Learner(data, model, metrics=[accuracy], path=os.path.join(out, f"rank{{rank}}"), silent=False,
                model_spec={{"factory": "tiny_models:tiny_mlp", "kwargs": {{}}}})
sugg = learn.lr_find(num_it=10)
n_lr_find = len(learn.recorder.lrs)
seen = SeenItems()
learn.fit_one_cycle(2, 1e-2, callbacks=[seen, CSVLogger(), Checkpoint()])
learn.save("final")
learn.export()
torch.save(learn.model.state_dict(), os.path.join(out, f"state{{rank}}.pt"))
with open(os.path.join(out, f"result{{rank}}.json"), "w") as f:
    json.dump({{"values": learn.recorder.values, "n_batches": learn.recorder.n_batches, "seen": seen.epochs,
               "lr_find_iters": n_lr_find, "valley": sugg.valley, "model_type": type(learn.model).__name__,
               "train_batches_after": len(learn.data.train_dl)}}, f)
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory):
    """Run the script once under `torchrun --nproc_per_node=2`; the tests below read what it left."""
    out = tmp_path_factory.mktemp("ddp")
    script = out / "train.py"
    script.write_text(SCRIPT.format(tests=str(TESTS)))
    env = {k: v for k, v in os.environ.items() if k not in (*TORCHRUN_VARS, "MASTER_PORT", "FASTBASE_NO_BAR", "FASTBASE_DDP")}
    env.update(FASTBASE_HOME=str(out / "home"), OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={_free_port()}",
           str(script), str(out)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    results = [json.loads((out / f"result{r}.json").read_text()) for r in (0, 1)]
    return out, proc.stdout, results


@pytest.mark.slow
def test_ddp_ranks_end_with_identical_weights(ddp_run):
    out, _, results = ddp_run
    states = [torch.load(out / f"state{r}.pt", weights_only=True) for r in (0, 1)]
    assert states[0].keys() == states[1].keys()
    for key in states[0]:  # weights and BatchNorm statistics, bit for bit
        assert torch.equal(states[0][key], states[1][key]), key
    for row0, row1 in zip(results[0]["values"], results[1]["values"], strict=True):  # same recorded numbers
        assert row0 == pytest.approx(row1, rel=1e-6)


@pytest.mark.slow
def test_ddp_validation_equals_a_single_process(ddp_run):
    out, _, results = ddp_run
    data = make_data(n_train=128, n_valid=41, bs=16, val_bs=8)
    learn = make_learner(data, metrics=[accuracy])
    learn.model.load_state_dict(torch.load(out / "state0.pt", weights_only=True))
    valid_loss, acc = learn.validate()
    ddp_loss, ddp_acc = results[0]["values"][-1][1:]
    assert ddp_loss == pytest.approx(valid_loss, rel=1e-5)
    assert ddp_acc == pytest.approx(acc, abs=1e-6)
    assert round(acc * 41) == pytest.approx(acc * 41, abs=1e-4)  # counted over 41 items, not the 42 padded


@pytest.mark.slow
def test_ddp_shards_training_data_and_reshuffles_each_epoch(ddp_run):
    _, _, results = ddp_run
    all_items = sorted(make_data(n_train=128, n_valid=41).train_ds.tensors[0][:, 0].tolist())
    seen0, seen1 = results[0]["seen"], results[1]["seen"]
    for epoch in range(2):  # each process trains on its half, together on every item once
        assert len(seen0[epoch]) == len(seen1[epoch]) == 64
        assert not set(seen0[epoch]) & set(seen1[epoch])
        assert sorted(seen0[epoch] + seen1[epoch]) == pytest.approx(all_items)
    assert seen0[0] != seen0[1]  # a new shuffle in the second epoch
    assert results[0]["n_batches"] == [4, 4]  # per-process batch size 16: 64 items -> 4 steps per epoch


@pytest.mark.slow
def test_ddp_lr_find_and_fit_restore_the_learner(ddp_run):
    _, _, results = ddp_run
    for result in results:
        assert result["lr_find_iters"] == 10  # all the asked iterations, though each process has half the batches
        assert result["model_type"] == "Sequential"  # the DDP wrapper is gone after fit
        assert result["train_batches_after"] == 8  # the unsharded loader is back
    assert results[0]["valley"] == results[1]["valley"]


@pytest.mark.slow
def test_ddp_only_rank_zero_writes_and_prints(ddp_run):
    out, stdout, _ = ddp_run
    assert (out / "rank0" / "models" / "final.pth").is_file()
    assert (out / "rank0" / "export.pkl").is_file()
    assert (out / "rank0" / "history.csv").is_file()  # loggers and checkpoints too
    assert (out / "rank0" / "models" / "checkpoint.pth").is_file()
    assert not (out / "rank1").exists()
    assert stdout.count("epoch 2/2") == 1, stdout


# --- the helpers, in this one process ---------------------------------------------------------------
def test_rank_helpers_read_torchrun_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert (rank_distrib(), num_distrib(), is_main_process()) == (1, 2, False)
    assert rank_zero_only(lambda: "written")() is None
    assert progress_disabled()
    learn = make_learner(path=tmp_path)
    assert learn.save("m") == tmp_path / "models" / "m.pth" and not (tmp_path / "models").exists()
    monkeypatch.setenv("RANK", "0")
    assert is_main_process() and rank_zero_only(lambda: "written")() == "written"
    assert learn.save("m").is_file()


def test_fit_goes_distributed_only_under_torchrun(monkeypatch):
    learn = make_learner()
    for var in (*TORCHRUN_VARS, "FASTBASE_DDP"):
        monkeypatch.delenv(var, raising=False)
    assert not wants_distributed(learn)
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "0")
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    assert wants_distributed(learn)
    monkeypatch.setenv("FASTBASE_DDP", "0")  # every process trains on its own
    assert not wants_distributed(learn)


def test_to_distributed_outside_torchrun_says_how_to_start(monkeypatch):
    for var in (*TORCHRUN_VARS, "MASTER_PORT"):
        monkeypatch.delenv(var, raising=False)
    learn = make_learner()
    with pytest.raises(DistributedError, match="torchrun --nproc_per_node"):
        learn.to_distributed()
    assert not learn.callbacks and learn.model.__class__ is tiny_mlp().__class__



def test_a_process_group_fastbase_joined_is_left_before_the_interpreter_ends(tmp_path):
    """Left to the interpreter's teardown, a gloo group can abort a finished script (SIGABRT); the group
    setup_distributed joined is destroyed by an exit handler, and one the script destroyed itself is fine."""
    script = tmp_path / "join.py"
    script.write_text(
        "import atexit, sys\n"
        "import torch.distributed as dist\n"
        "from fastbase.callbacks.distributed import setup_distributed\n"
        # registered first, so it runs after fastbase's handler (exit handlers run last-in, first-out)
        "atexit.register(lambda: print('initialised at exit:', dist.is_initialized(), flush=True))\n"
        "setup_distributed('cpu')\n"
        "print('joined:', dist.is_initialized(), dist.get_backend(), flush=True)\n"
        "if sys.argv[1] == 'destroy':\n"
        "    dist.destroy_process_group()\n")
    env = {k: v for k, v in os.environ.items() if k not in TORCHRUN_VARS}
    env.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()))
    for how in ("keep", "destroy"):
        proc = subprocess.run([sys.executable, str(script), how], env=env, capture_output=True, text=True,
                              timeout=60, check=False)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert proc.stdout.splitlines() == ["joined: True gloo", "initialised at exit: False"]
