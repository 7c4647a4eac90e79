"""Applying our own facial-emotion classifier for the emotion-accuracy metric (Emo-Acc).

The network is :class:`emotalk.models.emotion_classifier.EmotionCNN`; it is trained by the task ``emotion``
(:mod:`emotalk.train.emotion_task`, ``emotalk train-emotion``) on grey face crops of the processed dataset
(:mod:`emotalk.data.datasets.emotion`). Here: :func:`load_emotion_classifier` rebuilds a trained one
through :func:`emotalk.data.loading.load_model`, :func:`predict_frames` gives per-frame probabilities for
the metric and :func:`frame_accuracy` measures it on held-out subjects.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from emotalk.data.datasets.emotion import EmotionFrameDataset, preprocess_frames
from emotalk.data.loading import load_model
from emotalk.errors import DataError
from emotalk.models.emotion_classifier import EmotionCNN

__all__ = ["EmotionCNN", "EmotionFrameDataset", "LoadedEmotionClassifier", "frame_accuracy",
           "load_emotion_classifier", "predict_frames", "preprocess_frames"]


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
    loaded = load_model(path, "emotion")
    return LoadedEmotionClassifier(loaded.module, list(loaded.meta.emotions), loaded.model_config.image_size,
                                   str(loaded.meta.path))


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
