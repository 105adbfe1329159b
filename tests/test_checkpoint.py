"""Checkpoint and resume: a run stopped anywhere (an exception, SIGKILL mid-epoch, SIGKILL while a
checkpoint is being written) and resumed from its last complete checkpoint ends with weights and
recorder history bitwise identical to the run that was never stopped; damaged files are never loaded."""
import os
import signal
import subprocess
import sys
import textwrap

import pytest
import torch
from tiny_models import dataset
from torch import nn

from fastbase.callback import Callback, Order
from fastbase.callbacks import EarlyStopping
from fastbase.callbacks.checkpoint import (
    Checkpoint,
    CheckpointError,
    load_checkpoint,
    save_checkpoint,
)
from fastbase.core import set_seed
from fastbase.data import DataBunch
from fastbase.learner import Learner


class Crash(Callback):
    """Raises after training batch `batch` (0-based) of `epoch`, as a crash would."""
    order = Order.CHECKPOINT + 5  # after Checkpoint

    def __init__(self, epoch: int, batch: int):
        self.at = (epoch, batch)

    def after_batch(self):
        if self.learn.training and (self.learn.epoch, self.learn.iter) == self.at:
            raise RuntimeError("simulated crash")


def build(seed: int, tmp_path, num_workers: int = 0) -> Learner:
    """Dropout and a loader without a seed of its own: the run draws from torch's global generator."""
    set_seed(seed)
    data = DataBunch.create(dataset(96, 0), dataset(24, 1), bs=16, num_workers=num_workers, device="cpu",
                            path=tmp_path)
    model = nn.Sequential(nn.Linear(8, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, 2))
    return Learner(data, model, silent=True)


def same_weights(a: Learner, b: Learner) -> bool:
    sa, sb = a.model.state_dict(), b.model.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def reference(tmp_path):
    learn = build(0, tmp_path)
    learn.fit_one_cycle(3, 1e-2)
    return learn


@pytest.mark.parametrize("every,crash", [("epoch", (1, 2)), (4, (1, 2)), (4, (2, 5))])
def test_resumed_run_is_bitwise_identical_to_the_uninterrupted_one(tmp_path, reference, every, crash):
    stopped = build(0, tmp_path)
    with pytest.raises(RuntimeError, match="simulated"):
        stopped.fit_one_cycle(3, 1e-2, callbacks=[Checkpoint(every=every), Crash(*crash)])
    resumed = build(123, tmp_path)  # other weights and random state: all must come from the checkpoint
    resumed.fit_one_cycle(3, 1e-2, callbacks=[Checkpoint(every=every)], resume="checkpoint")
    assert same_weights(resumed, reference)
    rec, ref = resumed.recorder, reference.recorder
    assert rec.values == ref.values and rec.losses == ref.losses and rec.lrs == ref.lrs and rec.moms == ref.moms
    assert rec.n_batches == ref.n_batches == [6, 6, 6]


def test_trackers_continue_from_their_saved_state(tmp_path):
    def tracked(learn, *callbacks):
        stopper = EarlyStopping(patience=5)
        learn.fit_one_cycle(3, 1e-2, callbacks=[stopper, *callbacks])
        return stopper

    ref_stopper = tracked(build(0, tmp_path))
    with pytest.raises(RuntimeError):
        tracked(build(0, tmp_path), Checkpoint(every=4), Crash(2, 1))
    learn = build(0, tmp_path)
    stopper = EarlyStopping(patience=5)
    learn.fit_one_cycle(3, 1e-2, callbacks=[stopper], resume="checkpoint")
    assert (stopper.best, stopper.wait) == (ref_stopper.best, ref_stopper.wait)
    assert not stopper._restored  # a later fit with the same tracker starts afresh


def test_resumed_epoch_numbers_its_batches_from_where_it_stopped(tmp_path):
    stopped = build(0, tmp_path)
    with pytest.raises(RuntimeError):
        stopped.fit(2, 1e-3, callbacks=[Checkpoint(every=2), Crash(1, 3)])

    class Seen(Callback):
        def before_fit(self):
            self.seen = []

        def after_batch(self):
            if self.learn.training:
                self.seen.append((self.learn.epoch, self.learn.iter))

    seen = Seen()
    resumed = build(0, tmp_path)
    resumed.fit(2, 1e-3, callbacks=[seen], resume="checkpoint")  # plain fit resumes too
    assert seen.seen == [(1, 4), (1, 5)]
    assert len(resumed.recorder.values) == 2 and len(resumed.recorder.losses) == 12


def test_resuming_a_finished_run_restores_it_and_trains_nothing(tmp_path, reference):
    done = build(0, tmp_path)
    done.fit_one_cycle(3, 1e-2, callbacks=[Checkpoint()])
    again = build(7, tmp_path)
    again.fit_one_cycle(3, 1e-2, resume="checkpoint")
    assert same_weights(again, reference) and again.recorder.values == reference.recorder.values


def test_resume_refuses_another_number_of_epochs_or_other_data(tmp_path):
    learn = build(0, tmp_path)
    learn.fit_one_cycle(1, 1e-2, callbacks=[Checkpoint()])
    with pytest.raises(CheckpointError, match="fit of 1 epochs"):
        build(0, tmp_path).fit_one_cycle(2, 1e-2, resume="checkpoint")
    other = build(0, tmp_path)
    other.data = DataBunch.create(dataset(64, 0), dataset(24, 1), bs=16, num_workers=0, device="cpu")
    with pytest.raises(CheckpointError, match="training batches"):
        other.fit_one_cycle(1, 1e-2, resume=tmp_path / "models" / "checkpoint.pth")
    with pytest.raises(CheckpointError, match="does not exist"):
        build(0, tmp_path).fit(1, resume="no_such_checkpoint")


def test_checkpoint_arguments_are_checked():
    with pytest.raises(CheckpointError, match="every"):
        Checkpoint(every=0)
    with pytest.raises(CheckpointError, match="keep"):
        Checkpoint(keep=0)


# --- files: atomic, checksummed, rotated ---------------------------------------------------------
def test_keep_rotates_files_newest_first(tmp_path):
    path = tmp_path / "ck.pth"
    for i in range(4):
        save_checkpoint({"i": i}, path, keep=3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck.1.pth", "ck.2.pth", "ck.pth"]
    assert [load_checkpoint(p)[0]["i"] for p in (path, tmp_path / "ck.1.pth", tmp_path / "ck.2.pth")] == [3, 2, 1]


def test_a_cut_short_or_damaged_checkpoint_is_never_loaded(tmp_path):
    path = tmp_path / "ck.pth"
    save_checkpoint({"w": torch.arange(1000)}, path, keep=2)
    save_checkpoint({"w": torch.arange(1000) + 1}, path, keep=2)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # cut short
    with pytest.warns(UserWarning, match="incomplete"):
        state, used = load_checkpoint(path)
    assert used.name == "ck.1.pth" and torch.equal(state["w"], torch.arange(1000))
    damaged = bytearray(data)
    damaged[-100] ^= 0xFF
    path.write_bytes(bytes(damaged))
    with pytest.warns(UserWarning, match="damaged"):
        assert load_checkpoint(path)[1].name == "ck.1.pth"
    (tmp_path / "ck.1.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="damaged.*not a fastbase checkpoint"):
        load_checkpoint(path)


def test_checkpoints_holding_code_are_refused(tmp_path):
    path = save_checkpoint({"cb": Checkpoint()}, tmp_path / "ck.pth")  # a pickled object, not plain data
    with pytest.raises(CheckpointError, match="Refused"):
        load_checkpoint(path)


# --- SIGKILL in a subprocess ---------------------------------------------------------------------
SCRIPT = textwrap.dedent("""
    import os, signal, sys
    import torch
    from torch import nn
    from torch.utils.data import TensorDataset
    import fastbase.callbacks.checkpoint as checkpoint
    from fastbase.callback import Callback, Order
    from fastbase.core import set_seed
    from fastbase.data import DataBunch
    from fastbase.learner import Learner

    torch.set_num_threads(1)  # the same reductions in every process
    env = os.environ.get

    def build(folder):
        set_seed(0, deterministic=True)
        g = torch.Generator().manual_seed(0)
        x = torch.randn(160, 8, generator=g)
        y = (x[:, 0] + x[:, 1] > 0).long()
        train, valid = TensorDataset(x[:128], y[:128]), TensorDataset(x[128:], y[128:])
        train.classes = valid.classes = ["a", "b"]
        data = DataBunch.create(train, valid, bs=16, num_workers=0, device="cpu", path=folder, seed=1)
        model = nn.Sequential(nn.Linear(8, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.2), nn.Linear(16, 2))
        return Learner(data, model, silent=True)

    class KillAt(Callback):
        order = Order.CHECKPOINT + 5
        def after_batch(self):
            if self.learn.training and f"{self.learn.epoch},{self.learn.iter}" == env("KILL_AT"):
                os.kill(os.getpid(), signal.SIGKILL)

    saves = 0
    write = checkpoint._write_payload
    def write_then_die(f, header, payload):  # killed half-way through writing the temporary file
        global saves
        saves += 1
        if str(saves) != env("KILL_IN_SAVE"):
            return write(f, header, payload)
        f.write(header)
        f.write(payload[: len(payload) // 2])
        f.flush()
        os.fsync(f.fileno())
        os.kill(os.getpid(), signal.SIGKILL)
    checkpoint._write_payload = write_then_die

    def summary(learn):
        return {"model": learn.model.state_dict(), "values": learn.recorder.values, "losses": learn.recorder.losses}

    if not env("RESUME"):  # python run.py FOLDER: a run that KILL_AT or KILL_IN_SAVE kills
        build(sys.argv[1]).fit_one_cycle(3, 1e-2, callbacks=[checkpoint.Checkpoint(every=3, keep=2), KillAt()])
    else:  # python run.py RESULTS FOLDER...: resume each run, then run the reference without a stop
        results = []
        for folder in sys.argv[2:]:
            learn = build(folder)
            learn.fit_one_cycle(3, 1e-2, callbacks=[checkpoint.Checkpoint(every=3, keep=2)], resume="checkpoint")
            results.append(summary(learn))
        reference = build(sys.argv[1])
        reference.fit_one_cycle(3, 1e-2)
        torch.save({"resumed": results, "reference": summary(reference)}, sys.argv[1] + "/results.pt")
""")


def _run_all(script, runs):
    """Run `script` once per (arguments, environment) in `runs`, all at the same time: [(returncode, stderr)]."""
    procs = [subprocess.Popen([sys.executable, str(script), *map(str, args)], stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True, env={**os.environ, "FASTBASE_NO_BAR": "1", **env})
             for args, env in runs]
    errors = [p.communicate(timeout=300)[1] for p in procs]
    return [(p.returncode, err[-3000:]) for p, err in zip(procs, errors)]


def test_runs_killed_with_sigkill_resume_bitwise_identically(tmp_path):
    """8 batches per epoch, a checkpoint every 3 batches and at each epoch's end (keep=2). One run is
    killed mid-epoch (epoch 1, after 6 batches: its last checkpoint is from batch 4); the other while
    writing its 5th checkpoint (epoch 1, batch 4: it resumes from the previous one, batch 1). A third
    process resumes both, then trains the reference run, never stopped."""
    script = tmp_path / "run.py"
    script.write_text(SCRIPT)
    folders = [tmp_path / "killed_mid_epoch", tmp_path / "killed_in_save"]
    killed = _run_all(script, [([folders[0]], {"KILL_AT": "1,5"}), ([folders[1]], {"KILL_IN_SAVE": "5"})])
    assert [rc for rc, _ in killed] == [-signal.SIGKILL] * 2, killed
    in_save = folders[1] / "models"
    assert len(list(in_save.glob(".checkpoint.pth.*.tmp"))) == 1  # the half-written file, never renamed
    starts = [load_checkpoint(folder / "models" / "checkpoint.pth")[0] for folder in folders]
    assert [(s["epoch"], s["batch"]) for s in starts] == [(1, 4), (1, 1)]

    [(rc, err)] = _run_all(script, [([tmp_path, *folders], {"RESUME": "1"})])
    assert rc == 0, err
    assert not list(in_save.glob(".checkpoint.pth.*.tmp"))  # the dead run's temporary file is cleaned up
    results = torch.load(tmp_path / "results.pt", weights_only=True)
    reference = results["reference"]
    for run in results["resumed"]:
        assert run["values"] == reference["values"] and run["losses"] == reference["losses"]
        assert all(torch.equal(run["model"][k], reference["model"][k]) for k in reference["model"])


def test_resume_is_exact_with_persistent_worker_processes(tmp_path):
    """Two workers that persist across epochs: the resumed run starts them as the original had them."""
    learners = []
    try:
        learners.append(build(0, tmp_path, num_workers=2))
        learners[0].fit_one_cycle(2, 1e-2)
        learners.append(build(0, tmp_path, num_workers=2))
        with pytest.raises(RuntimeError):
            learners[1].fit_one_cycle(2, 1e-2, callbacks=[Checkpoint(every=4), Crash(1, 2)])
        learners.append(build(5, tmp_path, num_workers=2))
        learners[2].fit_one_cycle(2, 1e-2, resume="checkpoint")
        reference, _, resumed = learners
        assert same_weights(resumed, reference) and resumed.recorder.losses == reference.recorder.losses
    finally:  # garbage-collecting an iterator stopped mid-epoch waits 5 s per worker; stopping it does not
        for dl in (dl for learn in learners for dl in learn.data.dls):
            if getattr(dl.dl, "_iterator", None) is not None:
                dl.dl._iterator._shutdown_workers()


def test_only_the_resumed_epoch_starts_past_batch_zero(tmp_path):
    stopped = build(0, tmp_path)
    with pytest.raises(RuntimeError):
        stopped.fit(3, 1e-3, callbacks=[Checkpoint(every=2), Crash(1, 3)])

    class Firsts(Callback):
        """The first batch number of each training and validation pass."""
        def before_fit(self):
            self.firsts = []

        def after_batch(self):
            key = (self.learn.epoch, self.learn.training)
            if not self.firsts or self.firsts[-1][0] != key:
                self.firsts.append((key, self.learn.iter))

    firsts = Firsts()
    resumed = build(0, tmp_path)
    resumed.fit(3, 1e-3, callbacks=[firsts], resume="checkpoint")
    assert firsts.firsts == [((1, True), 4), ((1, False), 0), ((2, True), 0), ((2, False), 0)]
    assert resumed.start_iter == 0


def test_a_checkpoint_saved_with_the_recorders_older_keys_still_resumes(tmp_path, reference):
    stopped = build(0, tmp_path)
    with pytest.raises(RuntimeError, match="simulated"):
        stopped.fit_one_cycle(3, 1e-2, callbacks=[Checkpoint(every=4), Crash(1, 2)])
    file = tmp_path / "models" / "checkpoint.pth"
    state, _ = load_checkpoint(file)
    recorder = state["callbacks"]["recorder"]
    recorder["nb_batches"], recorder["metrics_names"] = recorder.pop("n_batches"), recorder.pop("metric_names")
    save_checkpoint(state, file)  # as fastbase wrote it before the keys were renamed
    resumed = build(123, tmp_path)
    resumed.fit_one_cycle(3, 1e-2, resume="checkpoint")
    assert same_weights(resumed, reference) and resumed.recorder.values == reference.recorder.values
    assert resumed.recorder.n_batches == [6, 6, 6]


def test_load_takes_a_path_without_pth_as_fastai_v1(tmp_path):
    """learn.load(path/'models'/'2b') reads 2b.pth, which save('2b') wrote (lesson7-superres-imagenet)."""
    learn = build(0, tmp_path)
    learn.save("2b")
    other = build(1, tmp_path)
    assert not same_weights(learn, other)
    other.load((tmp_path / learn.model_dir / "2b").absolute())
    assert same_weights(learn, other)
