"""``emotalk <command>``: one CLI over the package.

Each command lives in its own module ``emotalk.cli.<module>`` exposing ``add_arguments(parser)`` and
``run(args) -> int | None``; modules are imported only when their command runs, so ``emotalk --help``
stays fast. User errors (:class:`emotalk.errors.EmotalkError`) become one line on stderr and a non-zero
exit code, never a traceback.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from emotalk.errors import EmotalkError

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
}


def build_parser() -> argparse.ArgumentParser:
    from emotalk import __version__

    parser = argparse.ArgumentParser(prog="emotalk", description="Emotion-controllable, one-shot talking-face "
                                     "generation (IJCAI 2022 reimplementation).")
    parser.add_argument("--version", action="version", version=f"emotalk {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="<command>")
    for name, (module, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if not argv or argv[0] in ("-h", "--help") or argv[0] == "--version":
        parser.parse_args(argv or ["--help"])
        return 0
    name = argv[0]
    if name not in COMMANDS:
        parser.error(f"unknown command {name!r}; choose one of: {', '.join(COMMANDS)}")
    module_name, help_text = COMMANDS[name]
    try:
        module = importlib.import_module(f"emotalk.cli.{module_name}")
    except ModuleNotFoundError as e:
        if e.name and e.name.startswith("emotalk.cli."):
            print(f"error: command {name!r} is not available in this version", file=sys.stderr)
            return 2
        raise
    sub = argparse.ArgumentParser(prog=f"emotalk {name}", description=help_text)
    module.add_arguments(sub)
    args = sub.parse_args(argv[1:])
    try:
        code = module.run(args)
    except EmotalkError as e:
        msg = " ".join(str(e).split())
        print(f"error: {msg}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    return int(code or 0)


def console() -> None:  # pragma: no cover
    sys.exit(main())


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
