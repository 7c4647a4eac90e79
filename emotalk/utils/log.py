"""Console logging for the ``emotalk`` command (library code only ever calls ``logging.getLogger(__name__)``).

Why a handler of our own rather than ``logging.basicConfig``:

- what a command *reports* (``wrote out.mp4``, stage times, tables) is its output, so INFO and DEBUG go to
  **stdout**, where a user can redirect or pipe it; warnings and errors go to **stderr**, prefixed with
  ``warning:`` / ``error:`` like the CLI's one-line errors;
- the streams are looked up when a record is written, not when the handler is made, so a caller that
  swaps ``sys.stdout`` (pytest's capture, a notebook) still sees the messages;
- :func:`setup_logging` may run once per command in the same process (tests call ``main()`` many times):
  it replaces its own handler instead of adding a second one, and never touches the root logger's
  handlers, so an application embedding emotalk keeps its own logging configuration.
"""
from __future__ import annotations

import logging
import sys

#: the package logger every ``emotalk.*`` module logger propagates to
PACKAGE_LOGGER = "emotalk"

QUIET, NORMAL, VERBOSE = logging.WARNING, logging.INFO, logging.DEBUG


class ConsoleHandler(logging.Handler):
    """INFO/DEBUG -> the current ``sys.stdout``; WARNING and above -> the current ``sys.stderr``."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            stream = sys.stderr if record.levelno >= logging.WARNING else sys.stdout
            stream.write(self.format(record) + "\n")
            stream.flush()
        except Exception:  # noqa: BLE001 - logging must never crash the program it reports on
            self.handleError(record)


class ConsoleFormatter(logging.Formatter):
    """Plain messages for INFO; ``warning: ...`` / ``error: ...``; ``debug: module: ...`` when verbose."""

    def format(self, record: logging.LogRecord) -> str:
        msg = record.getMessage()
        if record.exc_info and record.levelno >= logging.ERROR:
            msg += "\n" + self.formatException(record.exc_info)
        if record.levelno >= logging.ERROR:
            return f"error: {msg}"
        if record.levelno >= logging.WARNING:
            return f"warning: {msg}"
        if record.levelno < logging.INFO:
            return f"debug: {record.name}: {msg}"
        return msg


def level_for(verbose: bool = False, quiet: bool = False) -> int:
    """``--verbose`` -> DEBUG, ``--quiet`` -> WARNING (only problems), neither -> INFO; quiet wins."""
    return QUIET if quiet else VERBOSE if verbose else NORMAL


def setup_logging(level: int = NORMAL) -> logging.Logger:
    """Send ``emotalk.*`` log records at ``level`` and above to the console (see the module docstring)."""
    logger = logging.getLogger(PACKAGE_LOGGER)
    for h in list(logger.handlers):
        if isinstance(h, ConsoleHandler):
            logger.removeHandler(h)
    handler = ConsoleHandler()
    handler.setFormatter(ConsoleFormatter())
    logger.addHandler(handler)
    logger.setLevel(level)
    return logger
