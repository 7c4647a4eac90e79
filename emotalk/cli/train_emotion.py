"""``emotalk train-emotion --config CONFIG [key=value ...] [--resume RUN]``: train the facial-emotion
classifier behind the Emo-Acc metric (task ``emotion``, :mod:`emotalk.eval.emotion_classifier`)."""
from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default=None,
                   help="emotion classifier config (default: emotion/tiny; e.g. emotion/mead)")
    p.add_argument("--resume", metavar="RUN", help="continue from a run folder or checkpoint (exact resume)")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="config overrides, e.g. data.root=data/processed/mead train.steps=500")


def run(args: argparse.Namespace) -> int:
    from emotalk.train.tasks import train_from_config

    config = args.config
    if config is None and args.resume is None:
        config = "emotion/tiny"
    trainer, last = train_from_config(config, args.overrides, args.resume, task="emotion")
    if trainer.is_main:
        val = [r for r in trainer.history if r.get("split") == "val"]
        acc = f", held-out frame accuracy {val[-1]['acc']:.3f}" if val and "acc" in val[-1] else ""
        print(f"done: {trainer.run_dir} step {trainer.step}{acc}; use it with "
              f"metrics.emotion_classifier={trainer.run_dir}")
    return 0
