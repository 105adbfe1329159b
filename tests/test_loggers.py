"""Loggers: the CSV history equals the Recorder and is on disk after every epoch; TensorBoard event
files hold the losses, metrics and learning rates."""
import csv
import math

import pytest
from tiny_models import make_data, make_learner

from fastbase.callback import Callback, Order
from fastbase.callbacks.loggers import CSVLogger, TensorBoardLogger
from fastbase.metrics import accuracy


def read_rows(path):
    with open(path, newline="") as f:
        return list(csv.reader(f))


class ReadFileEachEpoch(Callback):
    """The number of lines in the CSV file right after each epoch's row should have been written."""
    order = Order.CSV_LOGGER + 5

    def __init__(self, path):
        self.path, self.lines = path, []

    def after_epoch(self):
        self.lines.append(len(read_rows(self.path)))


def learner(tmp_path, **kwargs):
    return make_learner(make_data(n_train=64, n_valid=32, bs=32), metrics=[accuracy], path=tmp_path, **kwargs)


def test_csv_rows_equal_the_recorder_and_are_written_each_epoch(tmp_path):
    learn = learner(tmp_path, callbacks=[CSVLogger()])
    watch = ReadFileEachEpoch(tmp_path / "history.csv")
    learn.fit(3, 1e-2, callbacks=[watch])
    rows = read_rows(tmp_path / "history.csv")
    assert rows[0] == ["epoch", "train_loss", "valid_loss", "accuracy", "time"]
    assert [int(r[0]) for r in rows[1:]] == [1, 2, 3]
    assert [[float(v) for v in r[1:4]] for r in rows[1:]] == learn.recorder.values  # full precision
    assert all(float(r[4]) >= 0 for r in rows[1:])
    assert watch.lines == [2, 3, 4]  # on disk at the end of each epoch, not only at the end of fit


def test_csv_append_keeps_earlier_rows_and_a_new_fit_starts_afresh_otherwise(tmp_path):
    learn = learner(tmp_path, callbacks=[CSVLogger("log")])
    learn.fit(2, 1e-2)
    learn.fit(1, 1e-2)
    assert len(read_rows(tmp_path / "log.csv")) == 2  # append=False: the second fit replaced the file
    learn.callbacks = [CSVLogger("log", append=True)]
    learn.fit(2, 1e-2)
    rows = read_rows(tmp_path / "log.csv")
    assert [r[0] for r in rows] == ["epoch", "1", "1", "2"]  # the header once, rows of both fits
    learn.lr_find(end_lr=1e-2, num_it=6)  # lr_find is not logged
    assert len(read_rows(tmp_path / "log.csv")) == 4
    pytest.importorskip("pandas", reason="read_logged_file needs pandas (the dev extra)")
    frame = learn.callbacks[0].read_logged_file()
    assert list(frame.columns) == rows[0] and len(frame) == 3


def test_csv_writes_nan_when_there_is_no_validation(tmp_path):
    data = make_data(n_train=64, n_valid=32, bs=32)
    data.valid_dl = None
    learn = make_learner(data, path=tmp_path, callbacks=[CSVLogger()])
    learn.fit(1, 1e-2)
    row = read_rows(tmp_path / "history.csv")[1]
    assert row[2] == "nan" and math.isfinite(float(row[1]))


def test_tensorboard_logs_losses_metrics_and_lrs(tmp_path):
    pytest.importorskip("tensorboard", reason="TensorBoardLogger needs the optional tensorboard package")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logger = TensorBoardLogger(name="run1")
    learn = learner(tmp_path, callbacks=[logger])
    learn.fit_one_cycle(2, 1e-2)
    losses, lrs, values = learn.recorder.losses, learn.recorder.lrs, learn.recorder.values
    learn.fit(1, 1e-3)  # steps go on across fits
    logger.close()
    events = EventAccumulator(str(tmp_path / "runs" / "run1"))
    events.Reload()
    scalars = events.Tags()["scalars"]
    assert {"train/loss", "train/lr", "train/mom", "epoch/train_loss", "epoch/valid_loss", "epoch/accuracy"} <= set(
        scalars)
    loss_events = events.Scalars("train/loss")
    assert [e.step for e in loss_events] == list(range(6))
    assert [e.value for e in loss_events[:4]] == pytest.approx(losses, rel=1e-6)
    assert [e.value for e in events.Scalars("train/lr")[:4]] == pytest.approx(lrs, rel=1e-6)
    assert [e.value for e in events.Scalars("epoch/accuracy")[:2]] == pytest.approx([v[2] for v in values], rel=1e-6)
    assert [e.step for e in events.Scalars("epoch/valid_loss")] == [1, 2, 3]
    assert logger.state_dict() == {"step": 6, "epochs": 3}
