"""Writing a file so that it appears whole or not at all, and one writer at a time.

``atomic_write``: a crash mid-write leaves the previous file intact; the temporary files of writers that died are
removed by the next write to the same target. ``exclusive_lock``: a lock file beside a target, so that two runs
never write it in turn (a checkpoint two trainings overwrite is neither's).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import secrets
import socket
import tempfile
import time
from pathlib import Path

__all__ = ["atomic_write", "exclusive_lock", "lock_path", "LockedError", "STALE_AFTER_SECONDS"]

# A temporary file whose writer cannot be identified (another host's, or one written before temporary names held
# the writer's PID) is taken as abandoned once it has not changed for this long: no write takes a day.
STALE_AFTER_SECONDS = 24 * 3600


class LockedError(FileExistsError):
    """Another live process holds the lock of the file to be written."""


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _host_key() -> str:
    """This host, in 8 hex digits: temporary names carry it (a PID says nothing about another host's processes)."""
    return hashlib.sha1(socket.gethostname().encode()).hexdigest()[:8]


def _alive(pid: int) -> bool:
    """Whether process ``pid`` of this host is running (an unknown answer counts as running)."""
    if pid == os.getpid():
        return True
    if os.name == "nt":  # os.kill(pid, 0) would terminate the process there
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: it exists, under another user
        return True
    return True


def _temporary_prefix(target: Path) -> str:
    return f".{target.name}."


def _remove_stale_temporaries(target: Path) -> None:
    """Delete the temporary files that writers of ``target`` left when they were killed mid-write: those of a dead
    process of this host, and those nobody has touched for STALE_AFTER_SECONDS. A live writer's file is kept."""
    prefix, host, now = _temporary_prefix(target), _host_key(), time.time()
    try:
        entries = list(os.scandir(target.parent))
    except OSError:
        return
    for entry in entries:
        if not (entry.name.startswith(prefix) and entry.name.endswith(".tmp")):
            continue
        writer = re.fullmatch(r"(\d+)-([0-9a-f]{8})\.[^.]+", entry.name[len(prefix):-len(".tmp")])
        try:
            if writer is not None and writer[2] == host:
                stale = not _alive(int(writer[1]))
            else:
                stale = now - entry.stat().st_mtime > STALE_AFTER_SECONDS
            if stale:
                os.unlink(entry.path)
        except OSError:  # gone already, or not ours to delete: leave it
            continue


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike):
    """Yield a binary file object; on success it replaces ``path``, on any error it is deleted.

    The temporary file lives in ``path``'s folder (so the final rename is atomic), is hidden by a leading dot and
    names its writer (``.<name>.<pid>-<host>.<random>.tmp``): a write first removes the temporary files of writers
    that died before they could clean up (killed mid-write).
    """
    target = Path(path)
    if not target.parent.is_dir():
        raise FileNotFoundError(f"cannot write {target}: the folder {target.parent} does not exist")
    _remove_stale_temporaries(target)
    handle, temporary = tempfile.mkstemp(dir=target.parent, suffix=".tmp",
                                         prefix=f"{_temporary_prefix(target)}{os.getpid()}-{_host_key()}.")
    try:
        with os.fdopen(handle, "wb") as sink:
            yield sink
            sink.flush()
            os.fsync(sink.fileno())
        os.chmod(temporary, 0o666 & ~_umask())  # mkstemp makes it private; give it a normal file's mode
        os.replace(temporary, target)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)


def lock_path(path: str | os.PathLike) -> Path:
    """The lock file of ``path``: ``<path>.lock`` beside it."""
    return Path(f"{os.fspath(path)}.lock")


def _owner(lock: Path) -> dict | None:
    """What the lock file says of its holder ({"pid", "host", ...}), or None if it cannot be read (being written,
    or damaged)."""
    try:
        owner = json.loads(lock.read_text())
        return owner if isinstance(owner, dict) and isinstance(owner.get("pid"), int) else None
    except (OSError, ValueError):
        return None


def _stale(lock: Path, owner: dict | None) -> bool:
    """A lock whose holder is a dead process of this host; or one that never got its content, left for a minute."""
    if owner is None:
        try:
            return time.time() - lock.stat().st_mtime > 60
        except OSError:
            return True  # gone meanwhile: try again
    return owner.get("host") == socket.gethostname() and not _alive(owner["pid"])


def _take_over(lock: Path, owner: dict | None) -> bool:
    """Remove the stale lock ``owner`` wrote, and only that one; False if another run took it over first.

    Removing it by name would race: a second run that judged the same stale lock a moment later would delete the
    first one's fresh lock and both would write. So the lock is first moved aside (atomic), and put back if what was
    moved is no longer the stale one."""
    aside = lock.with_name(f"{lock.name}.{os.getpid()}-{secrets.token_hex(4)}.stale")
    try:
        os.rename(lock, aside)
    except FileNotFoundError:
        return True  # gone meanwhile: it is free to take
    if _owner(aside) == owner:
        os.unlink(aside)
        return True
    with contextlib.suppress(FileExistsError):  # another run's fresh lock: back where it was
        os.link(aside, lock)
    os.unlink(aside)
    return False


def _refusal(path: str | os.PathLike, lock: Path, owner: dict | None) -> LockedError:
    if owner is None:
        who = "another process (its lock file cannot be read)"
    elif owner["pid"] == os.getpid() and owner.get("host") == socket.gethostname():
        who = f"this very process (PID {owner['pid']}): another Trainer here writes it"
    else:
        who = f"process {owner['pid']} on {owner.get('host', 'an unknown host')}"
    return LockedError(f"{path} is being written by {who}: two runs writing one checkpoint overwrite each other's. "
                       f"Choose another path, or wait for that run to end; if it is gone, delete {lock}")


@contextlib.contextmanager
def exclusive_lock(path: str | os.PathLike):
    """Hold ``<path>.lock`` (created with O_EXCL, holding this process's PID and host) while the block runs, so that
    no other process writes ``path`` meanwhile; LockedError names the holder if another live process has it. A
    lock left by a dead process of this host is taken over. The lock is removed when the block ends, however."""
    lock = lock_path(path)
    mine = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}
    for _ in range(2):  # a stale lock is removed once, then taken like a free one
        try:
            handle = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
        except FileExistsError:
            owner = _owner(lock)
            if not _stale(lock, owner) or not _take_over(lock, owner):
                raise _refusal(path, lock, _owner(lock) if _owner(lock) is not None else owner) from None
            continue
        with os.fdopen(handle, "w") as sink:
            json.dump(mine, sink)
        break
    else:  # another process took the stale lock first
        raise _refusal(path, lock, _owner(lock))
    try:
        yield lock
    finally:
        owner = _owner(lock)
        if owner is not None and owner["pid"] == mine["pid"] and owner.get("since") == mine["since"]:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(lock)
