"""fastbase.files: atomic writes and the clearing of temporaries that killed processes left."""
import os
import subprocess
import sys

import pytest

from fastbase.files import atomic_write, pid_alive, remove_stale_temps, temp_path


def _dead_pid() -> int:
    """The pid of a process that has just ended."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_atomic_write_leaves_old_file_when_write_fails(tmp_path):
    target = tmp_path / "model.pth"
    target.write_bytes(b"old")

    def failing(tmp):
        tmp.write_bytes(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError):
        atomic_write(target, failing)
    assert target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["model.pth"]


def test_atomic_write_replaces_file_and_creates_the_folder(tmp_path):
    target = tmp_path / "sub" / "f.bin"
    atomic_write(target, lambda tmp: tmp.write_bytes(b"new"))
    assert target.read_bytes() == b"new"


def test_before_replace_runs_after_the_write_and_before_the_rename(tmp_path):
    target, seen = tmp_path / "f.bin", []
    target.write_bytes(b"old")
    atomic_write(target, lambda tmp: tmp.write_bytes(b"new"),
                 before_replace=lambda: seen.append((target.read_bytes(), temp_path(target).read_bytes())))
    assert seen == [(b"old", b"new")] and target.read_bytes() == b"new"


def test_a_dead_process_temporaries_are_removed_and_a_live_one_kept(tmp_path):
    target = tmp_path / "export.pkl"
    dead = tmp_path / f".export.pkl.{_dead_pid()}.tmp"
    live = temp_path(target)  # this process's: alive
    other = tmp_path / f".other.pkl.{_dead_pid()}.tmp"  # another file's temporary
    folder = tmp_path / f".export.pkl.{_dead_pid()}.abcd.extracting"
    for f in (dead, live, other):
        f.write_bytes(b"half")
    folder.mkdir()
    (folder / "x").write_bytes(b"half")
    removed = remove_stale_temps(target, (".tmp", ".extracting"))
    assert sorted(removed) == sorted([dead, folder])
    assert live.exists() and other.exists() and not dead.exists() and not folder.exists()


def test_atomic_write_clears_what_a_killed_writer_left(tmp_path):
    target = tmp_path / "model.pth"
    left = tmp_path / f".model.pth.{_dead_pid()}.tmp"
    left.write_bytes(b"half")
    atomic_write(target, lambda tmp: tmp.write_bytes(b"new"))
    assert sorted(os.listdir(tmp_path)) == ["model.pth"]


def test_pid_alive_tells_this_process_from_an_ended_one():
    assert pid_alive(os.getpid())
    assert not pid_alive(_dead_pid())
