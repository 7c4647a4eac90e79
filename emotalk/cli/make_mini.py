"""``emotalk make-mini``: generate the offline mead-mini dataset in MEAD's raw layout.

    emotalk make-mini --out data/mead-mini --size tiny
    emotalk make-mini --out data/mead-mini --size small --photos me.jpg:M friend.png:W --workers 2

See :mod:`emotalk.mini.generator` for the layout, the subject ids and the landmark sidecars.
"""
from __future__ import annotations

import argparse
import logging

from emotalk.errors import InputError
from emotalk.mini.generator import SIZES, generate_mini

log = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, help="output folder, e.g. data/mead-mini (new, empty, or an "
                                                "earlier mead-mini to regenerate)")
    p.add_argument("--size", default="tiny", choices=list(SIZES),
                   help="tiny: 3 subjects x 4 clips, seconds (tests); small: 8 subjects (2 held out) x all "
                        "8 emotions and levels, a few minutes on two cores (default tiny)")
    p.add_argument("--photos", nargs="+", default=[], metavar="PHOTO",
                   help="extra frontal face photos, each expanded into several subjects in addition to the "
                        "built-in public-domain ones; append :M or :W to set the subject id letter and voice "
                        "(default M)")
    p.add_argument("--seed", type=int, default=0, help="random seed; the same seed gives the same dataset "
                                                       "(default 0)")
    p.add_argument("--workers", type=int, default=1, help="parallel worker processes (default 1)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    if args.workers < 1:
        raise InputError(f"--workers must be at least 1, got {args.workers}")
    info = generate_mini(args.out, size=args.size, seed=args.seed, photos=args.photos, workers=args.workers,
                         progress=False if args.quiet else None)
    log.info(f"mead-mini {info['size']}: {info['num_clips']} clips, {len(info['subject_ids'])} subjects "
          f"(test: {', '.join(info['splits']['test']) or 'none'}), {info['duration_s']:.1f} s of video, "
          f"written to {args.out} in {info['generation_s']:.1f} s")
    return 0
