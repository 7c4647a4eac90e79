"""``emotalk <command>``: one CLI over the package.

Each command lives in its own module ``emotalk.cli.<module>`` exposing ``add_arguments(parser)`` and
``run(args) -> int | None``; modules are imported only when their command runs, so ``emotalk --help``
stays fast. User errors (:class:`emotalk.errors.EmotalkError`) become one line on stderr and a non-zero
exit code, never a traceback.

Output goes through :mod:`logging` (set up in :mod:`emotalk.utils.log`): ``--verbose`` / ``-v`` adds debug
messages, ``--quiet`` / ``-q`` keeps only warnings and errors. Both are accepted before the command
(``emotalk -q generate ...``) and after it (``emotalk generate ... --quiet``); a command that has its own
``--quiet`` (no progress bars) gets both effects from the one flag.
"""
from __future__ import annotations

import argparse
import errno
import importlib
import logging
import sys

from emotalk import __version__
from emotalk.errors import EmotalkError, NoSpaceError
from emotalk.utils.log import level_for, setup_logging

log = logging.getLogger(__name__)

#: command -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("train", "train a model (G_L, G_T, emotion classifier) from a YAML config"),
    "finetune": ("finetune", "one-shot fine-tune G_T on a single neutral photo"),
    "preprocess": ("preprocess", "turn a raw dataset (MEAD, CREMA-D, RAVDESS, mead-mini) into processed clips"),
    "make-mini": ("make_mini", "generate the offline mead-mini dataset in MEAD's raw layout"),
    "generate": ("generate", "photo + speech + emotion -> talking-face mp4"),
    "evaluate": ("evaluate", "evaluate checkpoints on a processed test split and write the paper's tables"),
    "train-emotion": ("train_emotion", "train the facial-emotion classifier used by evaluation"),
    "demo": ("demo", "the whole pipeline on a fresh CPU machine, end to end, with an HTML report"),
    "app": ("app", "a local web page (Gradio): photo + speech + emotion or timeline -> video"),
    "deepspeech-info": ("deepspeech_info", "list a frozen DeepSpeech graph's weights and check it can be run"),
}


def _add_logging_options(parser: argparse.ArgumentParser) -> None:
    """``--verbose/-v`` and ``--quiet/-q``, skipping any spelling the command already defines."""
    taken = parser._option_string_actions  # argparse has no public "is this option defined" query
    group = parser.add_argument_group("output")
    if "--verbose" not in taken:
        group.add_argument(*[o for o in ("-v", "--verbose") if o not in taken], action="store_true",
                           help="also print debug messages")
    if "--quiet" not in taken:
        group.add_argument(*[o for o in ("-q", "--quiet") if o not in taken], action="store_true",
                           help="print only warnings and errors")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="emotalk", description="Emotion-controllable, one-shot talking-face "
                                     "generation (IJCAI 2022 reimplementation).")
    parser.add_argument("--version", action="version", version=f"emotalk {__version__}")
    _add_logging_options(parser)
    sub = parser.add_subparsers(dest="command", metavar="<command>")
    for name, (module, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


_GLOBAL_FLAGS = {"-v": "verbose", "--verbose": "verbose", "-q": "quiet", "--quiet": "quiet"}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    flags = {"verbose": False, "quiet": False}
    while argv and argv[0] in _GLOBAL_FLAGS:  # options before the command name
        flags[_GLOBAL_FLAGS[argv.pop(0)]] = True
    if not argv or argv[0] in ("-h", "--help") or argv[0] == "--version":
        parser.parse_args(argv or ["--help"])
        return 0
    name = argv[0]
    if name not in COMMANDS:
        parser.error(f"unknown command {name!r}; choose one of: {', '.join(COMMANDS)}")
    setup_logging(level_for(**flags))
    module_name, help_text = COMMANDS[name]
    try:
        module = importlib.import_module(f"emotalk.cli.{module_name}")
    except ModuleNotFoundError as e:
        if e.name and e.name.startswith("emotalk.cli."):
            log.error("command %r is not available in this version", name)
            return 2
        raise
    sub = argparse.ArgumentParser(prog=f"emotalk {name}", description=help_text)
    module.add_arguments(sub)
    _add_logging_options(sub)
    args = sub.parse_args(argv[1:])
    if flags["quiet"] and hasattr(args, "quiet"):  # `emotalk -q cmd` also silences the command's bars
        args.quiet = True
    setup_logging(level_for(verbose=flags["verbose"] or getattr(args, "verbose", False),
                            quiet=flags["quiet"] or getattr(args, "quiet", False)))
    try:
        code = module.run(args)
    except EmotalkError as e:
        log.error("%s", " ".join(str(e).split()))
        return e.exit_code
    except OSError as e:
        message = os_error_message(e)
        if message is None:
            raise  # not the environment's fault: a bug, keep its traceback
        log.error("%s", message)
        return NoSpaceError.exit_code
    except MemoryError:
        log.error("out of memory; close other programs, or use smaller inputs (a shorter clip, a smaller "
                  "--batch-size or train.batch_size)")
        return 2
    except KeyboardInterrupt:
        log.error("interrupted")
        return 130
    return int(code or 0)


#: errno -> (what happened, what to do) for failures caused by the machine, not by emotalk
_ENVIRONMENT_ERRNOS = {
    errno.ENOSPC: ("no space left on the device", "free some disk space or write somewhere else, then run the "
                                                  "command again"),
    errno.EFBIG: ("no space: the file grew past the allowed file size (ulimit -f)",
                  "raise the limit or write somewhere else, then run the command again"),
    errno.EDQUOT: ("no space: the disk quota is exhausted", "free some space or write somewhere else, then run "
                                                            "the command again"),
    errno.EACCES: ("permission denied", "choose a location you may write to / a file you may read"),
    errno.EPERM: ("operation not permitted", "choose a location you may write to / a file you may read"),
    errno.EROFS: ("the file system is read-only", "write somewhere else"),
    errno.EMFILE: ("too many open files", "raise the limit (ulimit -n) or use fewer --workers"),
    errno.ENAMETOOLONG: ("file name too long", "choose a shorter path"),
}


def os_error_message(e: OSError) -> str | None:
    """One line for an :class:`OSError` the machine caused (disk full, file-size limit, permissions), or
    None for any other OSError (a bug, which keeps its traceback). The writers write to temporary files and
    rename them only when complete, so no partial output is left behind and the message can say so."""
    if e.errno not in _ENVIRONMENT_ERRNOS:
        return None
    what, todo = _ENVIRONMENT_ERRNOS[e.errno]
    where = f" ({e.filename})" if e.filename else ""
    kept = " (no partial output was kept)" if e.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT) else ""
    return f"{what}{where}; {todo}{kept}"


def console() -> None:  # pragma: no cover
    sys.exit(main())


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
