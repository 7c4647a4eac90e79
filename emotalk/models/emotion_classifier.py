"""The facial-emotion classifier network behind the Emo-Acc metric (trained as the task ``emotion``).

The paper scores emotion accuracy with EVP's MEAD-trained classifier; emotalk trains its own small CNN on
the processed dataset's face crops (see :mod:`emotalk.train.emotion_task`). Only the network and its
architecture settings live here, so that training, loading (:mod:`emotalk.data.loading`) and evaluation
(:mod:`emotalk.eval.emotion_classifier`) share one definition without importing each other.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class EmotionModelConfig:
    """Architecture of :class:`EmotionCNN`. The number of classes is not here: it is the length of the
    training config's ``data.emotions`` (the class names travel with the checkpoint)."""

    image_size: int = 64
    width: int = 32  # channels of the first block (doubled per block)
    blocks: int = 4
    dropout: float = 0.3


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

    @classmethod
    def from_config(cls, cfg: EmotionModelConfig, num_classes: int) -> "EmotionCNN":
        return cls(num_classes, cfg.width, cfg.blocks, cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (x - 0.5) / 0.25
        return self.head(F.adaptive_avg_pool2d(self.features(x), 1))
