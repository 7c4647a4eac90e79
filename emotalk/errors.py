"""Typed exceptions. Every message says what went wrong *and* what the user can do about it.

The CLI catches :class:`EmotalkError` and prints ``error: <message>`` as one line on stderr with a
non-zero exit code; anything else is a bug and keeps its traceback.
"""
from __future__ import annotations

import errno

#: OSError numbers that mean "the disk (or the file-size limit, quota) ran out": never one bad item, always
#: the end of the run (see :class:`NoSpaceError`)
NO_SPACE_ERRNOS = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)


class EmotalkError(Exception):
    """Base class of all user-facing errors."""

    exit_code = 2


class ConfigError(EmotalkError):
    """A config file or a ``key=value`` override is invalid."""


class DataError(EmotalkError):
    """A dataset, processed clip or input media file is missing, empty or malformed."""


class CheckpointError(EmotalkError):
    """A checkpoint is missing, corrupt or of the wrong kind."""


class MissingWeightsError(EmotalkError):
    """Third-party weights that cannot be downloaded here were not supplied by the user."""


class InputError(EmotalkError):
    """A user input (photo, audio, emotion, output path) cannot be used."""


class NoFaceError(InputError):
    """No (large enough) face was found in an image."""


class DependencyError(EmotalkError):
    """An optional dependency or external tool is not installed."""


class NoSpaceError(EmotalkError):
    """The disk (or the file-size limit, ``ulimit -f``) ran out while writing; nothing partial is kept."""


class BusyError(EmotalkError):
    """A folder is in use by another live emotalk process (see :mod:`emotalk.utils.lock`)."""
