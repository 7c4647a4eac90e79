"""Atomic file writes: a file either appears complete under its final name or not at all."""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Iterator

from emotalk.errors import InputError


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


#: mode of a new file under the process's umask (``mkstemp`` creates 0600 files, which a finished output
#: must not keep: a video or checkpoint should be as readable as any other file the user writes)
FILE_MODE = 0o666 & ~_umask()


def reserve_temp(path: Path, tag: str = "", suffix: str | None = None) -> Path:
    """A new, uniquely named hidden empty file beside ``path`` (same folder, so renaming it onto ``path``
    is atomic; unique, so concurrent writers of one name never share a temp file)."""
    parent = path.parent if str(path.parent) else Path(".")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{tag + '.' if tag else ''}",
                               suffix=suffix or (path.suffix or ".tmp"), dir=parent)
    os.close(fd)
    os.chmod(tmp, FILE_MODE)
    return Path(tmp)


@contextlib.contextmanager
def atomic_path(path: str | Path, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds."""
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    try:
        parent.mkdir(parents=True, exist_ok=True)
        tmp_path = reserve_temp(path, suffix=suffix)
    except OSError as e:
        raise InputError(f"cannot write {path}: {e.strerror or e}; choose a writable location") from None
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    except OSError as e:
        if e.filename is None:  # e.g. numpy's writers: name the file the user asked for
            e.filename = str(path)
        raise
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def missing_folders(path: str | Path) -> list[Path]:
    """The folders ``Path(path).mkdir(parents=True)`` would create, innermost first (empty if it exists)."""
    out, p = [], Path(path).absolute()
    while not p.exists() and p != p.parent:
        out.append(p)
        p = p.parent
    return out


def remove_created_folders(created: list[Path], contents: bool = False) -> None:
    """Undo :func:`missing_folders`' mkdir after a refused command: the innermost folder goes with its
    ``contents`` if asked (the caller knows they are only its own), its new parents only while empty.
    Nothing that existed before is touched."""
    import shutil

    for i, folder in enumerate(created):
        try:
            if i == 0 and contents:
                shutil.rmtree(folder)
            else:
                folder.rmdir()
        except OSError:
            return
