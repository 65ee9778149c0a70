"""Atomic writes and checkpoint locks against writers that die: what a killed process leaves is cleaned up or taken
over, what a live one holds is left alone."""

import json
import os
import socket
import subprocess
import sys
import time

import pytest

from anynet._atomic import STALE_AFTER_SECONDS, LockedError, atomic_write, exclusive_lock, lock_path

# A writer killed (SIGKILL, as the OOM killer or a closed terminal does) in the middle of its write.
WRITER = """
import sys, time
from anynet._atomic import atomic_write, exclusive_lock
with exclusive_lock(sys.argv[1]) if sys.argv[2] == "lock" else atomic_write(sys.argv[1]) as sink:
    if sys.argv[2] != "lock":
        sink.write(b"half a checkpoint")
    print("ready", flush=True)
    time.sleep(60)
"""


def _killed_mid_write(path, what):
    """Start a process writing (or locking) ``path``, kill it mid-way; returns its (dead) PID."""
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(path), what], stdout=subprocess.PIPE, text=True,
                              cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    try:
        assert writer.stdout.readline().strip() == "ready"
    finally:
        writer.kill()
        writer.wait()
    return writer.pid


def _take(target):
    with exclusive_lock(target):
        pass


def _dead_pid():
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_a_writer_killed_mid_write_leaves_a_temporary_file_the_next_write_removes(tmp_path):
    target = tmp_path / "ck.npz"
    target.write_bytes(b"epoch 1")
    dead = _killed_mid_write(target, "write")
    left = [name for name in os.listdir(tmp_path) if name != "ck.npz"]
    assert len(left) == 1 and left[0].startswith(f".ck.npz.{dead}-") and left[0].endswith(".tmp"), left
    assert target.read_bytes() == b"epoch 1", "the killed write never touched the target"
    with atomic_write(target) as sink:
        sink.write(b"epoch 2")
    assert os.listdir(tmp_path) == ["ck.npz"] and target.read_bytes() == b"epoch 2"


def test_only_dead_or_long_abandoned_writers_files_are_removed(tmp_path):
    target = tmp_path / "ck.npz"
    host = __import__("anynet._atomic", fromlist=["_host_key"])._host_key()
    files = {
        f".ck.npz.{_dead_pid()}-{host}.abc123.tmp": False,  # a dead writer of this host: removed
        f".ck.npz.{os.getppid()}-{host}.abc124.tmp": True,  # a live writer (pytest's parent): kept
        f".ck.npz.{_dead_pid()}-0badc0de.abc125.tmp": True,  # another host's writer, recent: kept
        ".ck.npz.k2j3h4x9.tmp": True,  # written before names held the PID, recent: kept
        ".ck.npz.q8w7e6r5.tmp": False,  # the same, untouched for over a day: removed
        f".other.npz.{_dead_pid()}-{host}.abc126.tmp": True,  # another target's: not this write's business
    }
    for name in files:
        (tmp_path / name).write_bytes(b"partial")
    old = time.time() - STALE_AFTER_SECONDS - 60
    os.utime(tmp_path / ".ck.npz.q8w7e6r5.tmp", (old, old))
    with atomic_write(target) as sink:
        sink.write(b"new")
    assert sorted(os.listdir(tmp_path)) == sorted(["ck.npz"] + [name for name, kept in files.items() if kept])


def test_a_lock_held_by_a_live_process_is_refused_and_a_dead_ones_taken_over(tmp_path):
    target = tmp_path / "ck.npz"
    lock = lock_path(target)
    holder = subprocess.Popen([sys.executable, "-c", WRITER, str(target), "lock"], stdout=subprocess.PIPE, text=True,
                              cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    try:
        assert holder.stdout.readline().strip() == "ready"
        assert json.loads(lock.read_text())["pid"] == holder.pid
        with pytest.raises(LockedError, match=rf"^{target} is being written by process {holder.pid} on "
                                              rf"{socket.gethostname()}: two runs writing one checkpoint overwrite "
                                              rf"each other's\. Choose another path, or wait for that run to end; "
                                              rf"if it is gone, delete {lock}$"):
            _take(target)
    finally:
        holder.kill()
        holder.wait()
    assert lock.exists(), "a killed holder cannot remove its lock"
    with exclusive_lock(target):  # its PID is dead on this host: stale, taken over
        assert json.loads(lock.read_text())["pid"] == os.getpid()
    assert not lock.exists()


def test_a_lock_of_another_host_or_unreadable_is_not_taken(tmp_path):
    target = tmp_path / "ck.npz"
    lock = lock_path(target)
    lock.write_text(json.dumps({"pid": _dead_pid(), "host": "elsewhere.example", "since": 0}))
    with pytest.raises(LockedError, match=r"on elsewhere\.example: .* if it is gone, delete"):
        _take(target)
    lock.write_text("")  # a holder between creating and filling it
    with pytest.raises(LockedError, match=r"another process \(its lock file cannot be read\)"):
        _take(target)
    old = time.time() - 120
    os.utime(lock, (old, old))  # never filled: its writer died in between
    with exclusive_lock(target):
        pass
    assert not lock.exists()


def test_a_killed_lock_holder_does_not_block_the_next_run(tmp_path):
    target = tmp_path / "ck.npz"
    _killed_mid_write(target, "lock")
    assert lock_path(target).exists()
    with exclusive_lock(target):
        pass
    assert not lock_path(target).exists()


def test_two_runs_taking_over_one_stale_lock_do_not_both_get_it(tmp_path, monkeypatch):
    """Another run takes the dead writer's lock between this run's look at it and its removal: this run must leave
    that fresh lock alone and refuse, not delete it and write too."""
    import anynet._atomic as atomic

    target = tmp_path / "ck.npz"
    lock = lock_path(target)
    lock.write_text(json.dumps({"pid": 2**22 + 12345, "host": socket.gethostname(), "since": 0.0}))  # no such PID
    other = {"pid": os.getppid(), "host": socket.gethostname(), "since": time.time()}  # a live process
    judged = atomic._stale

    def stale_then_taken(path, owner):
        verdict = judged(path, owner)
        lock.unlink()  # the other run, meanwhile, removes the stale lock and takes its own
        lock.write_text(json.dumps(other))
        return verdict

    monkeypatch.setattr(atomic, "_stale", stale_then_taken)
    with pytest.raises(LockedError, match=rf"is being written by process {other['pid']} on "), \
            exclusive_lock(target):
        pytest.fail("both runs hold the lock")
    assert json.loads(lock.read_text()) == other
    assert [path.name for path in tmp_path.iterdir()] == [lock.name]  # nothing moved aside is left
