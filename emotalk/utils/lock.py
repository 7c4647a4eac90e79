"""A folder lock, so two processes never write one run folder (checkpoints, metrics, config) at once.

``with FolderLock(run_dir, "training"):`` holds ``<run_dir>/.emotalk.lock`` for the block. The file holds
the owner's pid, host and purpose (for the message a second process prints), and the lock itself is an
exclusive ``flock`` on it: the kernel releases it when the owner exits in any way, SIGKILL included, so
a lock left behind by a dead process is free and simply taken over (with a warning naming the dead pid),
and a live owner can never be mistaken for a dead one because its pid was reused.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import socket
from pathlib import Path
from typing import Iterator

from emotalk.errors import BusyError, InputError
from emotalk.utils.io import missing_folders, remove_created_folders

log = logging.getLogger(__name__)

LOCK_NAME = ".emotalk.lock"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


class FolderLock:
    """Exclusive ownership of ``folder`` by this process for ``purpose`` (e.g. ``"training"``)."""

    def __init__(self, folder: str | Path, purpose: str = "a run"):
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self.purpose = purpose
        self._fd: int | None = None

    def _owner(self) -> dict:
        try:
            data = json.loads(self.path.read_text() or "{}")
            return data if isinstance(data, dict) else {}
        except (OSError, ValueError):
            return {}

    def acquire(self) -> "FolderLock":
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise InputError(f"cannot create {self.folder}: {e.strerror or e}; choose another folder") from None
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                owner = self._owner()
                pid = owner.get("pid", "?")
                raise BusyError(f"{self.folder} is in use by process {pid} on {owner.get('host', 'this machine')} "
                                f"({owner.get('purpose', 'another emotalk command')}); wait for it to finish, stop "
                                f"it, or choose another folder") from None
            # the file may have been unlinked by its previous owner between our open and flock: then we hold
            # a lock on a file nobody else sees, so start again on the current one
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        previous = self._owner()
        if previous.get("pid") not in (None, os.getpid()) and not _pid_alive(int(previous["pid"])):
            log.warning("%s: taking over the lock left by process %s, which is no longer running (it was "
                        "interrupted); continuing", self.folder, previous["pid"])
        record = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "purpose": self.purpose})
        os.ftruncate(fd, 0)
        os.pwrite(fd, record.encode() + b"\n", 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            self.path.unlink(missing_ok=True)  # while still holding it: nobody can take a file we then delete
        except OSError:
            pass
        os.close(self._fd)  # releases the flock
        self._fd = None

    def __enter__(self) -> "FolderLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def remove_hidden_files(folder: Path) -> int:
    """Delete the hidden files in ``folder``'s tree: the temporary files of writers that were killed before
    they could rename them into place (``.<name>.<random>.<ext>``). Only for trees a command owns entirely,
    while it holds their :class:`FolderLock` (a live writer's temp files look the same)."""
    n = 0
    for p in sorted(folder.rglob(".*")) if folder.is_dir() else ():
        if p.is_file() and p.name != LOCK_NAME:
            p.unlink(missing_ok=True)
            n += 1
    if n:
        log.info("%s: removed %d temporary file(s) left by an interrupted run", folder, n)
    return n


@contextlib.contextmanager
def owned_folder(folder: str | Path, purpose: str, clean: tuple[str, ...] = ()) -> Iterator[Path]:
    """Hold ``folder``'s lock for a command that writes it, after clearing the temp files an interrupted
    earlier run left in its subfolders ``clean``. If the command fails and the folder did not exist
    before, the folders made for it are removed again while empty (a refused command leaves nothing)."""
    folder = Path(folder)
    created = missing_folders(folder)
    lock = FolderLock(folder, purpose).acquire()
    try:
        for sub in clean:
            remove_hidden_files(folder / sub)
        yield folder
    except BaseException:
        lock.release()
        remove_created_folders(created)
        raise
    else:
        lock.release()
