"""``emotalk demo [--out runs/demo]``: the whole pipeline, end to end, with an HTML report."""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

from emotalk.demo.run import Demo, DemoOptions
from emotalk.errors import InputError

log = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="runs/demo", help="output folder (stages already there are reused)")
    p.add_argument("--size", default="small", choices=["tiny", "quick", "small"],
                   help="mead-mini size (default small: 8 subjects x 48 clips; quick: 25 clips each, "
                        "about a quarter faster, emotions learnt less well)")
    p.add_argument("--mini", metavar="DIR", help="use this mead-mini folder (made by 'emotalk make-mini', e.g. "
                   "with your own photos) instead of generating one; it is only read")
    p.add_argument("--workers", type=int, default=2, help="parallel workers for data generation/preprocessing")
    p.add_argument("--landmark-steps", type=int, help="G_L training steps (default: configs/landmark/tiny.yaml)")
    p.add_argument("--texture-steps", type=int, help="G_T training steps (default: configs/texture/tiny.yaml)")
    p.add_argument("--finetune-steps", type=int, default=5, help="one-shot fine-tuning iterations")
    p.add_argument("--eval-clips", type=int, default=1,
                   help="evaluated clips per held-out subject (default 1: the demo's time budget; more = "
                        "steadier Table 2 numbers, about a minute per extra clip per subject on 2 cores)")
    p.add_argument("--landmarks", default="detect", choices=["detect", "sidecar"],
                   help="training landmarks: 'detect' runs dlib on every clip as for real MEAD, for the emotion "
                        "classifier (G_L and G_T train on mead-mini's exact landmarks, kept beside dlib's); "
                        "'sidecar' reads mead-mini's ground-truth landmarks for all (no detector error, faster "
                        "preprocessing)")
    p.add_argument("-q", "--quiet", action="store_true",
                   help="no progress bars; print only warnings and errors")


def check_arguments(args: argparse.Namespace) -> None:
    """Refuse impossible numbers and an --out that is a file before any stage starts (issue 17)."""
    if Path(args.out).exists() and not Path(args.out).is_dir():
        raise InputError(f"--out {args.out} is a file; give a folder for the demo's outputs")
    for flag, value, low in (("--workers", args.workers, 1), ("--finetune-steps", args.finetune_steps, 0),
                             ("--eval-clips", args.eval_clips, 1)):
        if value < low:
            raise InputError(f"{flag} must be at least {low}, got {value}")
    for flag, value in (("--landmark-steps", args.landmark_steps), ("--texture-steps", args.texture_steps)):
        if value is not None and value < 1:
            raise InputError(f"{flag} must be at least 1 (train.steps >= 1), got {value}")


def run(args: argparse.Namespace) -> int:
    check_arguments(args)
    opts = DemoOptions(out=args.out, size=args.size, workers=args.workers, finetune_steps=args.finetune_steps,
                       eval_clips_per_subject=args.eval_clips, progress=not args.quiet, mini_source=args.mini,
                       landmarks=args.landmarks)
    if args.landmark_steps is not None:
        opts.landmark_overrides.append(f"train.steps={args.landmark_steps}")
    if args.texture_steps is not None:
        opts.texture_overrides.append(f"train.steps={args.texture_steps}")
    demo = Demo(opts)
    path = demo.run()
    width = max(len(k) for k in demo.stage_seconds)
    lines = ["stage times (s):"] + [f"  {k:<{width}}  {v:7.1f}" for k, v in demo.stage_seconds.items()]
    lines.append(f"  {'total':<{width}}  {sum(demo.stage_seconds.values()):7.1f}")
    if demo.machine is not None:  # beside the times: a slow or busy machine explains itself
        lines.append(demo.machine.line())
    if demo.budget is not None:  # the plan: which stage overran, scaled to this machine
        lines.append(demo.budget.line())
    lines.append(f"report: {path}")
    for line in lines:
        log.info(line)
    return 0
