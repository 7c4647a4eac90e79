"""Finding trained models without flags: the "front door" after ``emotalk demo``.

A new user runs ``emotalk demo`` (which trains G_L and G_T into ``<out>/checkpoints``, by default
``runs/demo/checkpoints``) and then ``emotalk generate --image me.jpg --audio me.wav --emotion happy``.
That second command must find the models the first one made, and say which it used. The search order,
first match wins:

1. an explicit folder (``--checkpoints DIR`` / ``Pipeline.from_checkpoints(DIR)``) - used as given, its
   problems reported as they are;
2. ``./checkpoints`` (the layout ``emotalk train`` users keep by hand);
3. the folder the last ``emotalk demo`` recorded in the user-level file :func:`latest_record`:
   ``$EMOTALK_HOME/latest`` when ``EMOTALK_HOME`` is set, else ``$XDG_CACHE_HOME/emotalk/latest``, else
   ``~/.cache/emotalk/latest`` (one line: an absolute path), so the demo's models are found from any
   working directory;
4. ``./runs/demo/checkpoints`` (the demo's default output, for a demo run before the record existed).

A candidate counts only when it holds a ``landmark/`` folder (and ``texture/`` when the neural renderer
needs G_T): the repository ships an empty ``checkpoints/`` with a README, which must not stop the search.
When nothing is found the error names the commands that make the models.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from emotalk.errors import CheckpointError
from emotalk.utils.io import atomic_write_text

__all__ = ["FoundCheckpoints", "find_checkpoints", "latest_record", "remember_checkpoints", "user_dir",
           "DEMO_CHECKPOINTS", "MAKE_MODELS_HINT"]

log = logging.getLogger(__name__)

#: where ``emotalk demo`` trains with its default ``--out runs/demo``
DEMO_CHECKPOINTS = Path("runs") / "demo" / "checkpoints"
#: the commands that produce a usable checkpoints folder (quoted in every "not found" error)
MAKE_MODELS_HINT = ("run 'emotalk demo' (trains small models on a CPU in minutes and records them for "
                    "'emotalk generate'), or train your own with 'emotalk train --config landmark/mead' and "
                    "'emotalk train --config texture/mead' into checkpoints/landmark and checkpoints/texture, "
                    "or pass --checkpoints DIR")


def user_dir() -> Path:
    """emotalk's user-level folder: ``$EMOTALK_HOME``, else ``$XDG_CACHE_HOME/emotalk``, else
    ``~/.cache/emotalk``. Read from the environment on every call so tests can isolate it."""
    home = os.environ.get("EMOTALK_HOME")
    if home:
        return Path(home).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME")
    base = Path(cache).expanduser() if cache else Path.home() / ".cache"
    return base / "emotalk"


def latest_record() -> Path:
    """The file in which ``emotalk demo`` records the checkpoints folder it trained."""
    return user_dir() / "latest"


def remember_checkpoints(folder: str | Path) -> Path | None:
    """Record ``folder`` (absolute) as the latest trained checkpoints, for :func:`find_checkpoints`.
    Failing to write (read-only home) only logs a warning: the models are there, only the shortcut is
    missing. Returns the record file, or None when it could not be written."""
    record = latest_record()
    try:
        record.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(record, f"{Path(folder).expanduser().resolve()}\n")
    except OSError as e:
        log.warning("could not record the checkpoints folder in %s (%s); pass --checkpoints %s to "
                    "'emotalk generate'", record, e, folder)
        return None
    log.info("recorded %s in %s: 'emotalk generate' finds these models without --checkpoints", folder, record)
    return record


@dataclass(frozen=True)
class FoundCheckpoints:
    """A checkpoints folder and how it was found (for the log line that says which models are used)."""

    path: Path
    source: str  # "--checkpoints", "./checkpoints", the record file, or "runs/demo/checkpoints"


def _usable(folder: Path, texture: bool) -> bool:
    return (folder / "landmark").exists() and (not texture or (folder / "texture").exists())


def _recorded() -> Path | None:
    record = latest_record()
    try:
        text = record.read_text().strip()
    except OSError:
        return None
    return Path(text) if text else None


def candidates(cwd: str | Path | None = None) -> list[tuple[Path, str]]:
    """The implicit search order (steps 2-4 of the module docstring) as ``(folder, source)`` pairs."""
    here = Path(cwd) if cwd is not None else Path.cwd()
    out = [(here / "checkpoints", "./checkpoints")]
    recorded = _recorded()
    if recorded is not None:
        out.append((recorded, str(latest_record())))
    out.append((here / DEMO_CHECKPOINTS, str(DEMO_CHECKPOINTS)))
    return out


def find_checkpoints(explicit: str | Path | None = None, texture: bool = True,
                     cwd: str | Path | None = None) -> FoundCheckpoints:
    """The checkpoints folder to use (see the module docstring for the order). ``texture``: whether G_T is
    needed (the neural renderer); a folder with only ``landmark/`` then does not count. An ``explicit``
    folder is returned as given (loading reports what is wrong with it). CheckpointError with the commands
    that make models when nothing is found."""
    if explicit is not None:
        return FoundCheckpoints(Path(explicit), "--checkpoints")
    looked = []
    for folder, source in candidates(cwd):
        if _usable(folder, texture):
            log.info("using the models in %s (found via %s)", folder, source)
            return FoundCheckpoints(folder, source)
        looked.append(str(folder))
    need = "landmark/ and texture/" if texture else "landmark/"
    raise CheckpointError(f"no trained models found (looked for {need} in {', '.join(looked)}); {MAKE_MODELS_HINT}")
