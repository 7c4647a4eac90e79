"""Training the facial-emotion classifier behind the Emo-Acc metric (task ``emotion``,
``emotalk train-emotion``, configs ``configs/emotion/*.yaml``).

The paper measures emotion accuracy with the classifier of EVP (Ji et al. 2021), trained on MEAD. This is
the same idea with a small CNN (:class:`emotalk.models.emotion_classifier.EmotionCNN`): it reads the
processed dataset's face crops (the frames G_T learns to produce, so generated videos are classified in
the framing the classifier was trained on), converted to grey and resized to ``model.image_size``, and
predicts one of ``data.emotions``. It is trained by the one :class:`~emotalk.train.trainer.Trainer` and
validated on held-out *subjects*, so its accuracy measures emotion, not identity.

Data: ``data.frames_per_clip`` evenly spaced frames of every clip are decoded once into memory
(:class:`emotalk.data.datasets.emotion.EmotionFrameDataset`). Augmentation (random shift/scale, horizontal
flip, brightness/contrast) is done on the batch in ``train_step`` with the torch RNG, so an exactly
resumed run sees the same batches. Checkpoints are the trainer's (kind ``emotion``, module
``classifier``); :func:`emotalk.data.loading.load_model` rebuilds the classifier and
:mod:`emotalk.eval.emotion_classifier` applies it.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from emotalk.data.datasets.emotion import EmotionFrameDataset

from emotalk.errors import ConfigError
from emotalk.models.emotion_classifier import EmotionModelConfig
from emotalk.train.classifier_task import ClassifierDataConfig, ClassifierTask
from emotalk.train.task import OptimConfig, TrainerConfig

@dataclass
class EmotionDataConfig(ClassifierDataConfig):
    frames_per_clip: int = 8  # evenly spaced frames taken from each clip (memory: N x image_size^2 bytes)
    max_clips: int = 0  # 0 = all

@dataclass
class EmotionAugmentConfig:
    shift: float = 0.06  # max translation, fraction of the image
    scale: float = 0.08  # max relative zoom in/out
    flip: bool = True
    brightness: float = 0.15
    contrast: float = 0.2

@dataclass
class EmotionTrainConfig:
    task: str = "emotion"
    data: EmotionDataConfig = field(default_factory=EmotionDataConfig)
    model: EmotionModelConfig = field(default_factory=EmotionModelConfig)
    augment: EmotionAugmentConfig = field(default_factory=EmotionAugmentConfig)
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=1e-3, betas=(0.9, 0.999)))
    train: TrainerConfig = field(default_factory=lambda: TrainerConfig(run_dir="runs/emotion", steps=3000,
                                                                       batch_size=64, ckpt_every=1000))

    def validate(self) -> None:
        self.data.validate()
        if self.model.image_size < 16 or self.model.image_size % (2 ** self.model.blocks):
            raise ConfigError(f"model.image_size must be >= 16 and divisible by 2^model.blocks "
                              f"(= {2 ** self.model.blocks}), got {self.model.image_size}")
        if self.data.frames_per_clip < 1:
            raise ConfigError("data.frames_per_clip must be >= 1")

def augment_batch(x: torch.Tensor, cfg: EmotionAugmentConfig) -> torch.Tensor:
    """Random similarity jitter, flips and photometric changes of (N, 1, S, S) images in [0, 1]."""
    n = x.shape[0]
    dev = x.device
    scale = 1 + (torch.rand(n, device=dev) * 2 - 1) * cfg.scale
    shift = (torch.rand(n, 2, device=dev) * 2 - 1) * cfg.shift * 2  # normalised coords span 2
    sx = scale.clone()
    if cfg.flip:
        sx = torch.where(torch.rand(n, device=dev) < 0.5, -sx, sx)
    theta = torch.zeros(n, 2, 3, device=dev)
    theta[:, 0, 0], theta[:, 1, 1] = sx, scale
    theta[:, :, 2] = shift
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, padding_mode="border", align_corners=False)
    b = (torch.rand(n, 1, 1, 1, device=dev) * 2 - 1) * cfg.brightness
    c = 1 + (torch.rand(n, 1, 1, 1, device=dev) * 2 - 1) * cfg.contrast
    mean = x.mean(dim=(2, 3), keepdim=True)
    return ((x - mean) * c + mean + b).clamp(0, 1)

class EmotionTask(ClassifierTask):
    kind = "emotion"
    what = "emotion classifier (face crops)"

    def make_dataset(self, subjects, emotions, train):
        d, m = self.cfg.data, self.cfg.model
        return EmotionFrameDataset(d.root, subjects, emotions, m.image_size, d.frames_per_clip,
                                   d.max_clips if train else 0)

    def inputs(self, batch):
        return batch["image"].float().unsqueeze(1) / 255.0

    def augment(self, x):
        return augment_batch(x, self.cfg.augment)

    def metadata(self) -> dict:
        return {**super().metadata(), "image_size": self.cfg.model.image_size}
