"""Training the landmark-geometry emotion classifier behind Emo-Acc-LM (task ``landmark_emotion``,
``emotalk train-emotion --config emotion/landmark-tiny``).

Data: every frame of every clip of the training subjects, as the expression displacement the classifier
reads (:mod:`emotalk.models.landmark_emotion`): a processed clip stores its landmarks retargeted onto the
template, ``template + (aligned - aligned_neutral)``, so the displacement is ``clip.landmarks - template``
-- the ground truth's own geometry, independent of any renderer. Validation is on held-out *subjects*.

Augmentation, in ``train_step`` with the torch RNG (an exactly resumed run sees the same batches): a
horizontal mirror (points permuted left <-> right), a small random rotation and scale of the displacement,
and Gaussian jitter of each point, standing in for the noise of landmarks re-detected on rendered frames.
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
from emotalk.data.io.clip import list_clips, load_clip
from emotalk.data.loading import build_model
from emotalk.errors import ConfigError, DataError, InputError
from emotalk.models.face_graph import MIRROR, canonical_template
from emotalk.models.landmark_emotion import LandmarkEmotionModelConfig
from emotalk.train.task import OptimConfig, Task, TrainerConfig


@dataclass
class LandmarkEmotionDataConfig:
    root: str = "data/processed/mead"
    train_subjects: list[str] = field(default_factory=list)  # empty: all but the validation subjects
    val_subjects: list[str] = field(default_factory=list)
    val_fraction: float = 0.1
    emotions: list[str] = field(default_factory=lambda: list(EMOTIONS))  # the classes, in order
    frame_stride: int = 1  # take every k-th frame of each clip


@dataclass
class LandmarkEmotionAugmentConfig:
    mirror: bool = True
    rotate_deg: float = 3.0
    scale: float = 0.1  # relative amplitude change of the displacement
    jitter: float = 0.01  # per-point Gaussian noise, eye distances (dlib's re-detection noise is ~0.01)


@dataclass
class LandmarkEmotionTrainConfig:
    task: str = "landmark_emotion"
    data: LandmarkEmotionDataConfig = field(default_factory=LandmarkEmotionDataConfig)
    model: LandmarkEmotionModelConfig = field(default_factory=LandmarkEmotionModelConfig)
    augment: LandmarkEmotionAugmentConfig = field(default_factory=LandmarkEmotionAugmentConfig)
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=2e-3, betas=(0.9, 0.999), weight_decay=1e-4))
    train: TrainerConfig = field(default_factory=lambda: TrainerConfig(run_dir="runs/landmark_emotion", steps=1500,
                                                                       batch_size=256, ckpt_every=500))

    def validate(self) -> None:
        try:
            names = [canonical_emotion(e) for e in self.data.emotions]
        except InputError as e:
            raise ConfigError(f"data.emotions: {e}") from None
        if len(set(names)) != len(names) or len(names) < 2:
            raise ConfigError(f"data.emotions must list at least two distinct emotions, got {self.data.emotions}")
        if self.data.frame_stride < 1:
            raise ConfigError("data.frame_stride must be >= 1")


def expression_displacement(retargeted: np.ndarray) -> np.ndarray:
    """Retargeted canonical landmarks (..., 68, 2) -> the displacement from the neutral face (float32)."""
    return (np.asarray(retargeted, np.float64) - canonical_template()).astype(np.float32)


class LandmarkEmotionDataset(Dataset):
    """Per-frame expression displacements and class indices of the processed clips of ``subjects``."""

    def __init__(self, root: str, subjects: list[str], emotions: list[str], frame_stride: int = 1):
        self.emotions = list(emotions)
        xs, ys = [], []
        for p in list_clips(root, subjects) if subjects else []:
            clip = load_clip(p, validate=False)
            if clip.emotion not in self.emotions:
                continue
            d = expression_displacement(clip.landmarks[::frame_stride])
            xs.append(d)
            ys += [self.emotions.index(clip.emotion)] * len(d)
        self.x = torch.from_numpy(np.concatenate(xs)) if xs else torch.zeros((0, 68, 2))
        self.y = torch.tensor(ys, dtype=torch.long)

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"x": self.x[i], "label": self.y[i]}


def augment_displacements(x: torch.Tensor, cfg: LandmarkEmotionAugmentConfig) -> torch.Tensor:
    """Mirror / rotate / scale / jitter a batch of (N, 68, 2) displacements (see module docstring)."""
    n = x.shape[0]
    if cfg.mirror:
        flip = torch.rand(n, device=x.device) < 0.5
        mirrored = x[:, torch.as_tensor(MIRROR, device=x.device)] * torch.tensor([-1.0, 1.0], device=x.device)
        x = torch.where(flip[:, None, None], mirrored, x)
    a = (torch.rand(n, device=x.device) * 2 - 1) * np.deg2rad(cfg.rotate_deg)
    s = 1 + (torch.rand(n, device=x.device) * 2 - 1) * cfg.scale
    rot = torch.stack([torch.stack([a.cos(), -a.sin()], -1), torch.stack([a.sin(), a.cos()], -1)], -2)
    x = torch.einsum("nij,npj->npi", rot * s[:, None, None], x)
    return x + torch.randn_like(x) * cfg.jitter


class LandmarkEmotionTask(Task):
    kind = "landmark_emotion"

    def __init__(self, cfg: LandmarkEmotionTrainConfig):
        super().__init__(cfg)
        self._datasets = None
        self.subjects: dict[str, list[str]] = {}

    def build_datasets(self):
        if self._datasets is None:
            d = self.cfg.data
            emotions = [canonical_emotion(e) for e in d.emotions]
            train_s, val_s = split_subjects(dataset_subjects(d.root), d.train_subjects, d.val_subjects,
                                            d.val_fraction)
            train = LandmarkEmotionDataset(d.root, train_s, emotions, d.frame_stride)
            if len(train) == 0:
                raise DataError(f"{d.root}: no clips with an emotion in {emotions} for subjects "
                                f"{', '.join(train_s)}; check data.root and data.emotions")
            val = LandmarkEmotionDataset(d.root, val_s, emotions, d.frame_stride) if val_s else None
            self._datasets = (train, val)
            self.subjects = {"train": train_s, "val": val_s}
        return self._datasets

    def build_modules(self):
        return {"classifier": build_model("landmark_emotion", self.cfg.model, num_classes=len(self.cfg.data.emotions))}

    def on_start(self, ctx, log) -> None:
        train, val = self.build_datasets()
        counts = np.bincount(train.y.numpy(), minlength=len(train.emotions))
        log(f"landmark emotion data: {len(train)} train frames ({len(self.subjects['train'])} subjects), "
            f"{len(val) if val else 0} val frames ({len(self.subjects['val'])} subjects); per class "
            + ", ".join(f"{e}={c}" for e, c in zip(train.emotions, counts)))

    def train_step(self, batch, ctx):
        x = augment_displacements(batch["x"].float(), self.cfg.augment)
        logits = ctx.models["classifier"](x)
        loss = F.cross_entropy(logits.float(), batch["label"])
        ctx.step("classifier", loss)
        return {"ce": float(loss.detach()), "acc": float((logits.argmax(1) == batch["label"]).float().mean())}

    @torch.no_grad()
    def validate_step(self, batch, ctx):
        logits = ctx.raw["classifier"](batch["x"].float())
        return {"ce": float(F.cross_entropy(logits, batch["label"])),
                "acc": float((logits.argmax(1) == batch["label"]).float().mean())}

    def metadata(self) -> dict:
        return {"emotions": [canonical_emotion(e) for e in self.cfg.data.emotions], "subjects": self.subjects}
