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
from torch.utils.data import Dataset

from emotalk.data.io.clip import list_clips, load_clip
from emotalk.errors import ConfigError
from emotalk.models.face_graph import MIRROR, canonical_template
from emotalk.models.landmark_emotion import LandmarkEmotionModelConfig
from emotalk.train.classifier_task import ClassifierDataConfig, ClassifierTask
from emotalk.train.task import OptimConfig, TrainerConfig

@dataclass
class LandmarkEmotionDataConfig(ClassifierDataConfig):
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
        self.data.validate()
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
        self.labels = torch.tensor(ys, dtype=torch.long)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"x": self.x[i], "label": self.labels[i]}

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

class LandmarkEmotionTask(ClassifierTask):
    kind = "landmark_emotion"
    what = "landmark emotion classifier"

    def make_dataset(self, subjects, emotions, train):
        return LandmarkEmotionDataset(self.cfg.data.root, subjects, emotions, self.cfg.data.frame_stride)

    def inputs(self, batch):
        return batch["x"].float()

    def augment(self, x):
        return augment_displacements(x, self.cfg.augment)
