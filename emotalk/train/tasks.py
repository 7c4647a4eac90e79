"""The registry of trainable tasks: config ``task:`` name -> (config dataclass, Task class).

This is the only place that knows which tasks exist; :mod:`emotalk.config` reads a file into whichever
dataclass its caller passes (here :data:`TRAIN_CONFIGS`), so the config layer never reaches up into the
training code.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from emotalk.config import config_from_dict, load_config
from emotalk.errors import ConfigError
from emotalk.train.emotion_task import EmotionTask, EmotionTrainConfig
from emotalk.train.landmark_emotion_task import LandmarkEmotionTask, LandmarkEmotionTrainConfig
from emotalk.train.landmark_task import LandmarkTask, LandmarkTrainConfig
from emotalk.train.texture_task import TextureTask, TextureTrainConfig
from emotalk.train.trainer import Task, Trainer

#: task name -> (its top-level config dataclass, the Task that trains it)
TRAIN_TASKS: dict[str, tuple[type, type[Task]]] = {
    "landmark": (LandmarkTrainConfig, LandmarkTask),
    "texture": (TextureTrainConfig, TextureTask),
    "emotion": (EmotionTrainConfig, EmotionTask),
    "landmark_emotion": (LandmarkEmotionTrainConfig, LandmarkEmotionTask),  # Emo-Acc-LM
}
#: task name -> config dataclass (the ``schema`` for :func:`emotalk.config.load_config`)
TRAIN_CONFIGS: dict[str, type] = {name: cfg for name, (cfg, _) in TRAIN_TASKS.items()}


def load_train_config(path: str | Path, overrides: list[str] | None = None, task: str | None = None) -> Any:
    """A training config file (``landmark/tiny``, a path, a run's saved ``config.yaml``) as its dataclass."""
    return load_config(path, overrides, schema=TRAIN_CONFIGS, task=task)


def train_config_from_dict(data: dict) -> Any:
    """A saved training config (e.g. a checkpoint's ``config``) as its dataclass."""
    return config_from_dict(data, TRAIN_CONFIGS)


def build_task(cfg: Any) -> Task:
    name = getattr(cfg, "task", None)
    if name not in TRAIN_TASKS:
        raise ConfigError(f"config task {name!r} is not trainable; trainable tasks: {', '.join(TRAIN_TASKS)}")
    return TRAIN_TASKS[name][1](cfg)


def train_from_config(config: str | None, overrides: list[str] | None = None, resume: str | None = None,
                      task: str | None = None) -> tuple[Trainer, dict]:
    """Load a config (or a run folder's saved config when resuming), train, return (trainer, last row)."""
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
    cfg = load_train_config(config, overrides, task=task)
    trainer = Trainer(build_task(cfg), resume=resume)
    try:
        last = trainer.fit()
    finally:
        trainer.close()
    return trainer, last
