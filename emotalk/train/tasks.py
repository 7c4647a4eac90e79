"""Task registry: config ``task:`` name -> the Task class that trains it."""
from __future__ import annotations

import importlib
from typing import Any

from emotalk.errors import ConfigError

TASK_CLASSES: dict[str, str] = {
    "landmark": "emotalk.train.landmark_task:LandmarkTask",
    "texture": "emotalk.train.texture_task:TextureTask",
    "emotion": "emotalk.eval.emotion_classifier:EmotionTask",
}


def build_task(cfg: Any):
    name = getattr(cfg, "task", None)
    if name not in TASK_CLASSES:
        raise ConfigError(f"config task {name!r} is not trainable; trainable tasks: {', '.join(TASK_CLASSES)}")
    module, cls = TASK_CLASSES[name].split(":")
    return getattr(importlib.import_module(module), cls)(cfg)


def train_from_config(config: str | None, overrides: list[str] | None = None, resume: str | None = None,
                      task: str | None = None) -> tuple[Any, dict]:
    """Load a config (or a run folder's saved config when resuming), train, return (trainer, last row)."""
    from pathlib import Path

    from emotalk.config import load_config
    from emotalk.train.trainer import Trainer

    overrides = list(overrides or [])
    if config is None:
        if resume is None:
            raise ConfigError("give --config CONFIG (or --resume RUN_DIR to continue a run)")
        run = Path(resume)
        run = run if run.is_dir() else run.parent.parent
        saved = run / "config.yaml"
        if not saved.is_file():
            raise ConfigError(f"{saved} not found; pass --config together with --resume")
        config = str(saved)
        overrides = [f"train.run_dir={run}"] + overrides
    cfg = load_config(config, overrides, task=task)
    trainer = Trainer(build_task(cfg), resume=resume)
    try:
        last = trainer.fit()
    finally:
        trainer.close()
    return trainer, last
