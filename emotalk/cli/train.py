"""``emotalk train --config CONFIG [key=value ...] [--resume RUN]``"""
from __future__ import annotations

import argparse
import logging

from emotalk.train.tasks import train_from_config

log = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="YAML config path or name (e.g. landmark/tiny, texture/mead)")
    p.add_argument("--resume", metavar="RUN", help="continue from a run folder or checkpoint (exact resume)")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="config overrides, e.g. train.steps=200 optim.lr=1e-4 data.root=data/processed/mead")


def run(args: argparse.Namespace) -> int:
    trainer, last = train_from_config(args.config, args.overrides, args.resume)
    if trainer.is_main:
        losses = ", ".join(f"{k}={v:.4g}" for k, v in last.items() if k not in ("step", "split"))
        log.info("done: %s step %d%s", trainer.run_dir, trainer.step, f" ({losses})" if losses else "")
    return 0
