"""One writer per run folder: an exclusive `flock` on `<run>/.lock`, refused clearly to a second writer and released
by the kernel when its holder exits (however it exits), so a dead holder's folder is taken over and a live one's never.
Training (`scripts/train.py`), re-evaluation (`scripts/evaluate.py`) and the campaign runner all go through it.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import fcntl
import json
import os
import platform
import time
from pathlib import Path

from recsys.runs import RunError, host_id

LOCK_FILE = ".lock"


class RunLock:
    """The one process allowed to write a run folder: an exclusive `flock` on `<run>/.lock`, which also records who
    holds it (host, pid, since when, command). The kernel drops the lock when its holder exits, however it exits
    (kill -9 included), so a later writer takes over a dead holder's folder and never a live one's. Used as a context
    manager; a second writer gets a RunError naming the holder. The file is removed on release, so a finished run
    folder holds only its artefacts."""

    def __init__(self, path: Path, command: str = ""):
        self.path, self.command, self._created = Path(path), command, False
        self._fd: int | None = None  # the open lock file while held

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def acquire(self) -> None:
        if self.path.is_symlink():
            raise RunError(f"{self.path}: a symbolic link; refusing to write through it")
        self._created = not self.path.exists()
        self.path.mkdir(parents=True, exist_ok=True)
        lock = self.path / LOCK_FILE
        tries = 0
        while True:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                tries += 1
                if tries < 5:  # a status reader's momentary shared lock, not a writer: ask again shortly
                    time.sleep(0.1)
                    continue
                raise RunError(f"{self.path}: {describe_holder(lock_holder(self.path))}; a run folder has one writer "
                               f"at a time (wait for it, or stop that process first)") from None
            try:  # the holder before us may have removed the file between our open and our lock: lock the new one
                same = os.fstat(fd).st_ino == os.stat(lock, follow_symlinks=False).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        holder = {"pid": os.getpid(), "host": platform.node(), "host_id": host_id(),
                  "since": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"), "command": self.command}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(holder).encode(), 0)
        self._fd = fd
        remove_stale_temporaries(self.path)


    def release(self) -> None:
        if self._fd is None:
            return
        try:
            (self.path / LOCK_FILE).unlink(missing_ok=True)  # while still holding it: see acquire's inode check
        finally:
            os.close(self._fd)
            self._fd = None
        if self._created:  # a folder this lock made for a run that then wrote nothing (a configuration error)
            with contextlib.suppress(OSError):
                self.path.rmdir()


def lock_holder(path: Path) -> dict | None:
    """Who is writing the run folder `path` right now ({pid, host, since, command}), or None when nobody is (no lock
    file, or a lock file left by a process that has exited). Takes no lock that would block a writer."""
    lock = Path(path) / LOCK_FILE
    try:
        fd = os.open(lock, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                holder = json.loads(os.pread(fd, 4096, 0) or b"{}")
            except ValueError:
                holder = {}
            return holder if isinstance(holder, dict) else {}
        return None
    finally:
        os.close(fd)


def describe_holder(holder: dict | None) -> str:
    if not holder:
        return "being written by another process"
    return (f"being written by pid {holder.get('pid', '?')} on {holder.get('host', '?')} since "
            f"{holder.get('since', '?')}")


def remove_stale_temporaries(path: Path) -> None:
    """Delete what an atomic write killed half-way left (`<file>.<random>.tmp`): only the lock holder may, since
    nobody else can be writing the folder then."""
    for folder in (path, path / "resume"):
        if folder.is_dir() and not folder.is_symlink():
            for tmp in folder.glob("*.tmp"):
                if tmp.is_file() and not tmp.is_symlink():
                    tmp.unlink(missing_ok=True)
