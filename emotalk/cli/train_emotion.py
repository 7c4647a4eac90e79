"""``emotalk train-emotion --config CONFIG [key=value ...] [--resume RUN]``: train the facial-emotion
classifier behind the Emo-Acc metric (task ``emotion``, :mod:`emotalk.train.emotion_task`)."""
from __future__ import annotations

import argparse
import logging

from emotalk.errors import ConfigError
from emotalk.train.tasks import load_train_config, train_from_config

#: the classifiers this command trains: pixels (Emo-Acc) or landmark geometry (Emo-Acc-LM)
EMOTION_TASKS = ("emotion", "landmark_emotion")

log = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default=None,
                   help="emotion classifier config (default: emotion/tiny; e.g. emotion/mead)")
    p.add_argument("--resume", metavar="RUN", help="continue from a run folder or checkpoint (exact resume)")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="config overrides, e.g. data.root=data/processed/mead train.steps=500")


def run(args: argparse.Namespace) -> int:
    config = args.config
    if config is None and args.resume is None:
        config = "emotion/tiny"
    task = None
    if config is not None:
        task = load_train_config(config, args.overrides).task
        if task not in EMOTION_TASKS:
            raise ConfigError(f"{config}: is a {task!r} config; train-emotion trains {' or '.join(EMOTION_TASKS)} "
                              f"(e.g. emotion/tiny, emotion/landmark-tiny); use 'emotalk train' for the rest")
    trainer, last = train_from_config(config, args.overrides, args.resume, task=task)
    if trainer.is_main:
        val = [r for r in trainer.history if r.get("split") == "val"]
        acc = f", held-out frame accuracy {val[-1]['acc']:.3f}" if val and "acc" in val[-1] else ""
        key = "landmark_emotion_classifier" if trainer.task.kind == "landmark_emotion" else "emotion_classifier"
        log.info("done: %s step %d%s; use it with metrics.%s=%s", trainer.run_dir, trainer.step, acc, key,
                 trainer.run_dir)
    return 0
