"""``emotalk demo [--out runs/demo]``: the whole pipeline, end to end, with an HTML report."""
from __future__ import annotations

import argparse
import logging

from emotalk.demo.run import Demo, DemoOptions

log = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="runs/demo", help="output folder (stages already there are reused)")
    p.add_argument("--size", default="small", choices=["tiny", "small"], help="mead-mini size (default small)")
    p.add_argument("--workers", type=int, default=2, help="parallel workers for data generation/preprocessing")
    p.add_argument("--landmark-steps", type=int, help="G_L training steps (default: configs/landmark/tiny.yaml)")
    p.add_argument("--texture-steps", type=int, help="G_T training steps (default: configs/texture/tiny.yaml)")
    p.add_argument("--finetune-steps", type=int, default=5, help="one-shot fine-tuning iterations")
    p.add_argument("--eval-clips", type=int, default=2, help="evaluated clips per held-out subject")
    p.add_argument("-q", "--quiet", action="store_true",
                   help="no progress bars; print only warnings and errors")


def run(args: argparse.Namespace) -> int:
    opts = DemoOptions(out=args.out, size=args.size, workers=args.workers, finetune_steps=args.finetune_steps,
                       eval_clips_per_subject=args.eval_clips, progress=not args.quiet)
    if args.landmark_steps is not None:
        opts.landmark_overrides.append(f"train.steps={args.landmark_steps}")
    if args.texture_steps is not None:
        opts.texture_overrides.append(f"train.steps={args.texture_steps}")
    demo = Demo(opts)
    path = demo.run()
    width = max(len(k) for k in demo.stage_seconds)
    lines = ["stage times (s):"] + [f"  {k:<{width}}  {v:7.1f}" for k, v in demo.stage_seconds.items()]
    lines.append(f"  {'total':<{width}}  {sum(demo.stage_seconds.values()):7.1f}")
    lines.append(f"report: {path}")
    for line in lines:
        log.info(line)
    return 0
