"""``emotalk app [--checkpoints DIR] [--host 127.0.0.1] [--port 7860]``: the web page on a local port.

Needs the optional extra ``pip install -e ".[app]"`` (Gradio). The models are found as for ``emotalk
generate`` (``--checkpoints``, ``./checkpoints``, then what ``emotalk demo`` trained); without any the page
still opens and says how to make them. The default host serves this machine only; ``--host 0.0.0.0``
opens it to the network (there is no login: do that only on a trusted network).
"""
from __future__ import annotations

import argparse
import logging

from emotalk.app import AppLimits, Studio, build_app, launch
from emotalk.errors import InputError

log = logging.getLogger(__name__)

_LIMITS = AppLimits()


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoints", default=None, metavar="DIR",
                   help="folder with landmark/ and texture/ checkpoints (default: searched as by 'emotalk generate')")
    p.add_argument("--host", default="127.0.0.1", help="address to serve on (default: 127.0.0.1, this machine only)")
    p.add_argument("--port", type=int, default=7860, help="port (default: 7860)")
    p.add_argument("--concurrency", type=int, default=2, metavar="N",
                   help="requests accepted at once (they render one after the other; default: 2)")
    p.add_argument("--max-seconds", type=float, default=_LIMITS.max_seconds, metavar="S",
                   help=f"longest speech the page renders (default: {_LIMITS.max_seconds:g})")
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda or cuda:N")
    p.add_argument("--no-examples", action="store_true", help="do not prepare the example inputs")


def check_arguments(args: argparse.Namespace) -> None:
    """Impossible numbers fail with one line before anything is built or served (issue 17)."""
    if not 0 < args.port < 65536:
        raise InputError(f"--port must be between 1 and 65535, got {args.port}")
    if args.concurrency < 1:
        raise InputError(f"--concurrency must be at least 1, got {args.concurrency}")
    if not 0 < args.max_seconds < float("inf"):
        raise InputError(f"--max-seconds must be a positive number of seconds, got {args.max_seconds}")


def run(args: argparse.Namespace) -> int:
    check_arguments(args)
    limits = AppLimits(max_seconds=args.max_seconds)
    studio = Studio(args.checkpoints, limits, device=args.device)
    blocks = build_app(studio=studio, examples=not args.no_examples, concurrency=args.concurrency)
    log.info("serving on http://%s:%d (Ctrl+C stops)", args.host, args.port)
    launch(blocks, args.host, args.port)
    return 0
