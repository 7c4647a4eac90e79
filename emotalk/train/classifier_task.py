"""What the two emotion classifiers share as training tasks: the face-crop CNN behind Emo-Acc
(:mod:`emotalk.train.emotion_task`) and the landmark-geometry MLP behind Emo-Acc-LM
(:mod:`emotalk.train.landmark_emotion_task`).

Both split the processed dataset by *subject* (validation on held-out people, so accuracy measures emotion,
not identity), build one ``classifier`` module through :func:`emotalk.data.loading.build_model`, train it
with cross-entropy and record their class list and subjects in every checkpoint. A subclass says only what
differs: how a split becomes a dataset, how a batch becomes the network's input, and its augmentation.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from emotalk.data.datasets.landmark import dataset_subjects
from emotalk.data.datasets.splits import split_subjects
from emotalk.data.emotions import EMOTIONS, canonical_emotion
from emotalk.data.loading import build_model
from emotalk.errors import ConfigError, DataError, InputError
from emotalk.train.task import Task


@dataclass
class ClassifierDataConfig:
    """The ``data`` section both classifiers share (subclasses add their own fields)."""

    root: str = "data/processed/mead"
    split: str = ""  # a named split (configs/splits/, e.g. mead-field) | auto | "" with explicit lists
    train_subjects: list[str] = field(default_factory=list)  # with split "": explicit lists
    val_subjects: list[str] = field(default_factory=list)
    val_fraction: float = 0.1
    emotions: list[str] = field(default_factory=lambda: list(EMOTIONS))  # the classes, in order

    def validate(self) -> None:
        """Canonical, distinct class names (at least two), written back in canonical form."""
        try:
            names = [canonical_emotion(e) for e in self.emotions]
        except InputError as e:
            raise ConfigError(f"data.emotions: {e}") from None
        if len(set(names)) != len(names) or len(names) < 2:
            raise ConfigError(f"data.emotions must list at least two distinct emotions, got {self.emotions}")
        self.emotions = names


class ClassifierTask(Task):
    """Cross-entropy training of ``classifier`` over ``cfg.data.emotions``; see the module docstring.

    Subclasses set ``kind`` (also the model kind for :func:`build_model`) and ``what`` (for log lines and
    errors), and implement :meth:`make_dataset` (a dataset with ``labels`` and ``emotions``),
    :meth:`inputs` and :meth:`augment`."""

    what: str = "classifier"

    def __init__(self, cfg):
        super().__init__(cfg)
        self._datasets = None
        self.subjects: dict[str, list[str]] = {}

    # --- what differs -----------------------------------------------------------------------------------
    def make_dataset(self, subjects: list[str], emotions: list[str], train: bool) -> Dataset:
        raise NotImplementedError

    def inputs(self, batch: dict) -> torch.Tensor:
        raise NotImplementedError

    def augment(self, x: torch.Tensor) -> torch.Tensor:
        return x

    # --- shared -----------------------------------------------------------------------------------------
    @property
    def emotions(self) -> list[str]:
        return [canonical_emotion(e) for e in self.cfg.data.emotions]

    def build_datasets(self):
        if self._datasets is None:
            d = self.cfg.data
            train_s, val_s = split_subjects(dataset_subjects(d.root), d.train_subjects, d.val_subjects,
                                            d.val_fraction, split=d.split, root=d.root)
            train = self.make_dataset(train_s, self.emotions, True)
            if len(train) == 0:
                raise DataError(f"{d.root}: no clips with an emotion in {self.emotions} for subjects "
                                f"{', '.join(train_s)}; the {self.what} needs processed clips of those "
                                f"emotions (check data.root and data.emotions)")
            val = self.make_dataset(val_s, self.emotions, False) if val_s else None
            self._datasets = (train, val)
            self.subjects = {"train": train_s, "val": val_s}
        return self._datasets

    def build_modules(self):
        return {"classifier": build_model(self.kind, self.cfg.model, num_classes=len(self.cfg.data.emotions))}

    def on_start(self, ctx, log) -> None:
        train, val = self.build_datasets()
        counts = np.bincount(train.labels.numpy(), minlength=len(train.emotions))
        log(f"{self.what} data: {len(train)} train frames ({len(self.subjects['train'])} subjects), "
            f"{len(val) if val else 0} val frames ({len(self.subjects['val'])} subjects); per class "
            + ", ".join(f"{e}={c}" for e, c in zip(train.emotions, counts)))

    def train_step(self, batch, ctx):
        x = self.augment(self.inputs(batch))
        with ctx.autocast():
            logits = ctx.models["classifier"](x)
        loss = F.cross_entropy(logits.float(), batch["label"])
        ctx.step("classifier", loss)
        return ctx.log_values({"ce": loss, "acc": (logits.argmax(1) == batch["label"]).float().mean()})

    @torch.no_grad()
    def validate_step(self, batch, ctx):
        logits = ctx.raw["classifier"](self.inputs(batch))
        return {"ce": float(F.cross_entropy(logits, batch["label"])),
                "acc": float((logits.argmax(1) == batch["label"]).float().mean())}

    def metadata(self) -> dict:
        return {"emotions": self.emotions, "subjects": self.subjects}
