"""The landmark-geometry emotion classifier behind Emo-Acc-LM (trained as the task ``landmark_emotion``).

Input: a face's 68 landmarks similarity-aligned to the canonical template *minus the same subject's aligned
neutral face* -- the expression displacement, in canonical units (1 = the template's outer-eye-corner
distance). Subtracting the subject's own neutral face removes face shape, so the classifier reads
expression, not identity; reading points instead of pixels makes it blind to texture, so a renderer that
paints a face without moving its features cannot score. Output: logits over the training config's
``data.emotions`` (the class names travel with the checkpoint, as for :mod:`.emotion_classifier`).

A small MLP is enough for 136 numbers; the input is scaled by ``input_scale`` so that typical
displacements (a few hundredths of an eye distance) reach unit range.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class LandmarkEmotionModelConfig:
    """Architecture of :class:`LandmarkEmotionMLP` (the class count is the length of ``data.emotions``)."""

    hidden: int = 128
    layers: int = 2  # hidden layers
    dropout: float = 0.1
    input_scale: float = 10.0  # displacements are ~0.01-0.1 eye distances


class LandmarkEmotionMLP(nn.Module):
    """``(N, 68, 2)`` aligned displacements from the subject's neutral face -> ``(N, classes)`` logits."""

    def __init__(self, num_classes: int, hidden: int = 128, layers: int = 2, dropout: float = 0.1,
                 input_scale: float = 10.0, num_points: int = 68):
        super().__init__()
        self.input_scale = float(input_scale)
        blocks, cin = [], num_points * 2
        for _ in range(layers):
            blocks += [nn.Linear(cin, hidden), nn.LayerNorm(hidden), nn.GELU(), nn.Dropout(dropout)]
            cin = hidden
        self.body = nn.Sequential(*blocks)
        self.head = nn.Linear(cin, num_classes)

    @classmethod
    def from_config(cls, cfg: LandmarkEmotionModelConfig, num_classes: int) -> "LandmarkEmotionMLP":
        return cls(num_classes, cfg.hidden, cfg.layers, cfg.dropout, cfg.input_scale)

    def forward(self, displacement: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(displacement.flatten(1) * self.input_scale))
