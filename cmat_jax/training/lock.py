"""The workdir lock: one run at a time writes a workdir.

`lock_workdir(workdir)` takes `<workdir>/run.lock` for this process and returns
a `WorkdirLock`; `release()` gives it back (and removes the file). The file
names its holder (pid, host, start time, command) and the holder keeps an
exclusive `flock` on it while it runs, which the kernel drops when the process
ends however it ends. So:

- a second run (train or resume) on a workdir whose lock is held is refused at
  once with `WorkdirInUse`, a one-line message naming the holder;
- a lock file left by a run that was killed (its pid no longer runs on this
  host, and its flock is gone) is taken over with a warning that names it;
- a lock file written on another host cannot be checked from this one: it is
  refused, and the message says to delete the file if that run has ended.

The pid check backs up the flock on file systems where flock is not shared.
Within one process the lock is shared: taking it again for a workdir this
process holds counts one more holder (e.g. a second Trainer built after a failed
one in a notebook), and the file goes when the last one releases it, or at
exit. With several processes (hosts), process 0 alone takes it
(training/run_state.py's make_checkpointer).
"""

from __future__ import annotations

import atexit
import contextlib
import datetime
import fcntl
import json
import os
import socket
import sys
from typing import Optional

from absl import logging

LOCK_FILE = "run.lock"


class WorkdirInUse(OSError):
    """Another run holds the workdir's lock (or its lock file cannot be checked); the message names it."""


def _holder_text(record: Optional[dict]) -> str:
    if not record:
        return "a run that is still starting (its details are not written yet)"
    return (f"pid {record.get('pid')} on host {record.get('host')}, started {record.get('started')}"
            + (f": {record['command']}" if record.get("command") else ""))


def _pid_runs(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: it runs
        return True
    return True


def _read_record(fd: int) -> Optional[dict]:
    """The holder record in the open lock file, or None when it is empty or not a record."""
    os.lseek(fd, 0, os.SEEK_SET)
    raw = b""
    while chunk := os.read(fd, 65536):
        raw += chunk
    try:
        record = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    return record if isinstance(record, dict) else None


class WorkdirLock:
    """This process's hold on one workdir's lock; `release()` once per `lock_workdir` call."""

    def __init__(self, path: str, fd: int):
        self.path, self._fd, self._holders = path, fd, 1

    def release(self) -> None:
        if self._holders == 0:
            return
        self._holders -= 1
        if self._holders:
            return
        _HELD.pop(self.path, None)
        try:
            # Unlinked before the flock drops, and only while the path is still this file: a run that takes
            # the workdir next then creates a new file instead of locking an unlinked one.
            if os.stat(self.path).st_ino == os.fstat(self._fd).st_ino:
                os.unlink(self.path)
        except FileNotFoundError:
            pass
        finally:
            os.close(self._fd)


_HELD: dict[str, WorkdirLock] = {}


def _release_all() -> None:
    for lock in list(_HELD.values()):
        lock._holders = 1
        lock.release()


atexit.register(_release_all)


def lock_workdir(workdir: str) -> WorkdirLock:
    """Takes `<workdir>/run.lock` for this process (creating `workdir`); WorkdirInUse if another run holds it."""
    workdir = os.path.abspath(workdir)
    if os.path.exists(workdir) and not os.path.isdir(workdir):
        raise NotADirectoryError(f"workdir {workdir} is a file, not a directory; choose another --config.workdir")
    path = os.path.realpath(os.path.join(workdir, LOCK_FILE))
    if path in _HELD:
        _HELD[path]._holders += 1
        return _HELD[path]
    os.makedirs(workdir, exist_ok=True)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            record = _read_record(fd)
            os.close(fd)
            raise WorkdirInUse(f"{workdir} is in use by another run ({_holder_text(record)}); wait for it to end "
                               "or stop it, or choose another --config.workdir") from None
        try:
            same_file = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same_file = False
        if same_file:
            break
        os.close(fd)  # the holder released it (and removed the file) between our open and our flock: again
    try:
        _take_over(fd, path, workdir)
    except BaseException as e:
        if not isinstance(e, WorkdirInUse):  # the file is ours (flocked) and holds no holder: not left behind
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        os.close(fd)
        if isinstance(e, OSError) and not isinstance(e, WorkdirInUse) and e.filename is None:
            raise OSError(e.errno, e.strerror, path) from e  # a full disk names the file it could not write
        raise
    _HELD[path] = lock = WorkdirLock(path, fd)
    return lock


def _take_over(fd: int, path: str, workdir: str) -> None:
    """Checks what a lock file we could flock says of its last holder, then writes this process in."""
    record = _read_record(fd)
    host = socket.gethostname()
    if record is not None:
        pid = record.get("pid")
        if record.get("host") != host:
            raise WorkdirInUse(f"{workdir} is locked by a run on another host ({_holder_text(record)}), which "
                               f"this host cannot check; if that run has ended, delete {path} and start again")
        if isinstance(pid, int) and pid != os.getpid() and _pid_runs(pid):
            raise WorkdirInUse(f"{workdir} is in use by another run ({_holder_text(record)}); wait for it to end "
                               f"or stop it, or choose another --config.workdir (if pid {pid} is not a run, "
                               f"delete {path})")
        logging.warning("taking over the lock of %s: %s, which is no longer running", workdir, _holder_text(record))
    started = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    payload = json.dumps({"pid": os.getpid(), "host": host, "started": started,
                          "command": " ".join(sys.argv)}).encode("utf-8")
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, payload)
    os.fsync(fd)
