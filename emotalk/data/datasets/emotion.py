"""Face crops and emotion labels for the emotion classifier (trained as the task ``emotion``).

Both sides of the classifier need this: training reads the dataset, evaluation measures a trained
classifier on held-out subjects and converts generated frames with the same :func:`preprocess_frames`
(the classifier sees generated videos exactly as it saw its training crops).
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from emotalk.data.io.clip import list_clips, load_clip


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
    """Grey face crops and class indices from processed clips (frames decoded once at build time:
    ``frames_per_clip`` evenly spaced frames of every clip whose emotion is one of ``emotions``)."""

    def __init__(self, root: str | Path, subjects: Sequence[str], emotions: Sequence[str], image_size: int,
                 frames_per_clip: int = 8, max_clips: int = 0):
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
