"""Our own facial-emotion classifier for the emotion-accuracy metric (``emotalk train-emotion``).

The paper measures emotion accuracy with the classifier of EVP (Ji et al. 2021), trained on MEAD. This is
the same idea with a small CNN: it reads the processed dataset's face crops (the frames G_T learns to
produce, so generated videos are classified in the framing the classifier was trained on), converted to
grey and resized to ``model.image_size``, and predicts one of ``data.emotions``. It is trained by the one
:class:`~emotalk.train.trainer.Trainer` as the task ``emotion`` (config: ``configs/emotion/*.yaml``) and
evaluated on held-out *subjects*, so its accuracy measures emotion, not identity.

Data: ``data.frames_per_clip`` evenly spaced frames of every clip are decoded once into memory (grey,
``image_size`` squared, uint8). Augmentation (random shift/scale, horizontal flip, brightness/contrast) is
done on the batch in ``train_step`` with the torch RNG, so an exactly resumed run sees the same batches.

Checkpoints are the trainer's (``<run_dir>/checkpoints/step_*.json`` + ``.safetensors``, kind ``emotion``);
:func:`load_emotion_classifier` rebuilds the model from the saved config, and
:func:`predict_frames` gives per-frame probabilities for the metric.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from emotalk.data.emotions import EMOTIONS, canonical_emotion
from emotalk.errors import ConfigError, DataError
from emotalk.train.trainer import OptimConfig, Task, TrainerConfig


@dataclass
class EmotionDataConfig:
    root: str = "data/processed/mead"
    train_subjects: list[str] = field(default_factory=list)  # empty: all but the validation subjects
    val_subjects: list[str] = field(default_factory=list)
    val_fraction: float = 0.1
    emotions: list[str] = field(default_factory=lambda: list(EMOTIONS))  # the classes, in order
    frames_per_clip: int = 8  # evenly spaced frames taken from each clip (memory: N x image_size^2 bytes)
    max_clips: int = 0  # 0 = all


@dataclass
class EmotionModelConfig:
    image_size: int = 64
    width: int = 32  # channels of the first block (doubled per block)
    blocks: int = 4
    dropout: float = 0.3


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
        if not self.data.emotions:
            raise ConfigError("data.emotions must name at least two classes")
        try:
            names = [canonical_emotion(e) for e in self.data.emotions]
        except Exception as e:  # InputError -> ConfigError
            raise ConfigError(f"data.emotions: {e}") from None
        if len(set(names)) != len(names) or len(names) < 2:
            raise ConfigError(f"data.emotions must list at least two distinct emotions, got {self.data.emotions}")
        self.data.emotions = names
        if self.model.image_size < 16 or self.model.image_size % (2 ** self.model.blocks):
            raise ConfigError(f"model.image_size must be >= 16 and divisible by 2^model.blocks "
                              f"(= {2 ** self.model.blocks}), got {self.model.image_size}")
        if self.data.frames_per_clip < 1:
            raise ConfigError("data.frames_per_clip must be >= 1")


class EmotionCNN(nn.Module):
    """Grey ``(N, 1, S, S)`` face crops in [0, 1] -> ``(N, classes)`` logits."""

    def __init__(self, num_classes: int, width: int = 32, blocks: int = 4, dropout: float = 0.3):
        super().__init__()
        layers, cin = [], 1
        for b in range(blocks):
            cout = width * 2 ** b
            layers += [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
                       nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
                       nn.MaxPool2d(2)]
            cin = cout
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(dropout), nn.Linear(cin, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (x - 0.5) / 0.25
        return self.head(F.adaptive_avg_pool2d(self.features(x), 1))


def preprocess_frames(frames: np.ndarray, image_size: int) -> np.ndarray:
    """RGB uint8 (T, H, W, 3) face crops -> grey uint8 (T, S, S), the classifier's input."""
    import cv2

    frames = np.asarray(frames)
    if frames.ndim == 3:
        frames = frames[None]
    out = np.empty((len(frames), image_size, image_size), np.uint8)
    for i, f in enumerate(frames):
        g = cv2.cvtColor(np.ascontiguousarray(f), cv2.COLOR_RGB2GRAY)
        out[i] = cv2.resize(g, (image_size, image_size), interpolation=cv2.INTER_AREA)
    return out


class EmotionFrameDataset(Dataset):
    """Grey face crops and class indices from processed clips (frames decoded once at build time)."""

    def __init__(self, root: str | Path, subjects: Sequence[str], emotions: Sequence[str], image_size: int,
                 frames_per_clip: int = 8, max_clips: int = 0):
        from emotalk.data.io.clip import list_clips, load_clip

        self.emotions = list(emotions)
        images, labels, self.clip_subjects = [], [], []
        paths = list_clips(root, list(subjects)) if subjects else []
        if max_clips:
            paths = paths[:max_clips]
        for p in paths:
            clip = load_clip(p, validate=False)
            if clip.emotion not in self.emotions or not clip.has_frames:
                continue
            idx = np.unique(np.linspace(0, clip.num_frames - 1, frames_per_clip).round().astype(int))
            images.append(preprocess_frames(np.stack([clip.frame(int(t)) for t in idx]), image_size))
            labels += [self.emotions.index(clip.emotion)] * len(idx)
            self.clip_subjects.append(clip.subject)
        self.images = torch.from_numpy(np.concatenate(images)) if images else \
            torch.zeros((0, image_size, image_size), dtype=torch.uint8)
        self.labels = torch.tensor(labels, dtype=torch.long)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"image": self.images[i], "label": self.labels[i]}


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


class EmotionTask(Task):
    kind = "emotion"

    def __init__(self, cfg: EmotionTrainConfig):
        super().__init__(cfg)
        self._datasets = None

    def build_datasets(self):
        if self._datasets is None:
            from emotalk.data.datasets.landmark import dataset_subjects
            from emotalk.data.datasets.splits import split_subjects

            d, m = self.cfg.data, self.cfg.model
            subjects = dataset_subjects(d.root)
            train_s, val_s = split_subjects(subjects, d.train_subjects, d.val_subjects, d.val_fraction)
            train = EmotionFrameDataset(d.root, train_s, d.emotions, m.image_size, d.frames_per_clip, d.max_clips)
            if len(train) == 0:
                raise DataError(f"{d.root}: no clips with frames and an emotion in {d.emotions} for subjects "
                                f"{', '.join(train_s)}; the emotion classifier needs a dataset with face crops")
            val = EmotionFrameDataset(d.root, val_s, d.emotions, m.image_size, d.frames_per_clip) if val_s else None
            self._datasets = (train, val)
            self.subjects = {"train": train_s, "val": val_s}
        return self._datasets

    def build_modules(self):
        m = self.cfg.model
        return {"classifier": EmotionCNN(len(self.cfg.data.emotions), m.width, m.blocks, m.dropout)}

    def on_start(self, ctx, log) -> None:
        train, val = self.build_datasets()
        counts = np.bincount(train.labels.numpy(), minlength=len(train.emotions))
        log(f"emotion data: {len(train)} train frames ({len(self.subjects['train'])} subjects), "
            f"{len(val) if val else 0} val frames ({len(self.subjects['val'])} subjects); per class "
            + ", ".join(f"{e}={c}" for e, c in zip(train.emotions, counts)))

    def train_step(self, batch, ctx):
        x = batch["image"].float().unsqueeze(1) / 255.0
        x = augment_batch(x, self.cfg.augment)
        with ctx.autocast():
            logits = ctx.models["classifier"](x)
        loss = F.cross_entropy(logits.float(), batch["label"])
        ctx.step("classifier", loss)
        acc = (logits.argmax(1) == batch["label"]).float().mean()
        return {"ce": float(loss.detach()), "acc": float(acc)}

    @torch.no_grad()
    def validate_step(self, batch, ctx):
        logits = ctx.raw["classifier"](batch["image"].float().unsqueeze(1) / 255.0)
        return {"ce": float(F.cross_entropy(logits, batch["label"])),
                "acc": float((logits.argmax(1) == batch["label"]).float().mean())}

    def metadata(self) -> dict:
        return {"emotions": list(self.cfg.data.emotions), "image_size": self.cfg.model.image_size,
                "subjects": getattr(self, "subjects", {})}


# --- using a trained classifier -----------------------------------------------------------------------

@dataclass
class LoadedEmotionClassifier:
    model: EmotionCNN
    emotions: list[str]
    image_size: int
    path: str

    @torch.no_grad()
    def predict_proba(self, frames: np.ndarray, device="cpu", batch_size: int = 64) -> np.ndarray:
        """(T, classes) softmax probabilities of RGB uint8 face-crop frames."""
        return predict_frames(self, frames, device, batch_size)


def load_emotion_classifier(path: str | Path) -> LoadedEmotionClassifier:
    """A trained classifier from a run folder, checkpoints folder or checkpoint file."""
    from emotalk.config import config_from_dict
    from emotalk.data.io.checkpoint import load_checkpoint, load_module

    tensors, meta = load_checkpoint(path, kind="emotion", prefixes=("model/",))
    cfg: EmotionTrainConfig = config_from_dict(meta["config"])
    m = cfg.model
    model = EmotionCNN(len(cfg.data.emotions), m.width, m.blocks, m.dropout)
    load_module(model, tensors, "classifier")
    return LoadedEmotionClassifier(model.eval(), list(cfg.data.emotions), m.image_size, meta["path"])


@torch.no_grad()
def predict_frames(clf: LoadedEmotionClassifier, frames: np.ndarray, device="cpu", batch_size: int = 64) -> np.ndarray:
    model = clf.model.to(device).eval()
    grey = preprocess_frames(frames, clf.image_size)
    out = []
    for i in range(0, len(grey), batch_size):
        x = torch.from_numpy(grey[i:i + batch_size]).to(device).float().unsqueeze(1) / 255.0
        out.append(torch.softmax(model(x), 1).double().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, len(clf.emotions)))


@torch.no_grad()
def frame_accuracy(clf: LoadedEmotionClassifier, dataset: EmotionFrameDataset, device="cpu") -> float:
    """Per-frame accuracy on a dataset built with the classifier's emotions and image size."""
    if len(dataset) == 0:
        raise DataError("no frames to evaluate the emotion classifier on")
    model = clf.model.to(device).eval()
    correct = 0
    for i in range(0, len(dataset), 256):
        x = dataset.images[i:i + 256].to(device).float().unsqueeze(1) / 255.0
        correct += int((model(x).argmax(1).cpu() == dataset.labels[i:i + 256]).sum())
    return correct / len(dataset)
