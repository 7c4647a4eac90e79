"""Emotion-FAN (Meng, Peng, Wang, Qiao: "Frame attention networks for facial expression recognition in
videos", ICIP 2019): the video emotion classifier behind the field's MEAD Acc_emo (fine-tuned on MEAD, 8
classes including neutral, by the works that report it).

Written from the paper's description:

- a ResNet-18 (BasicBlocks [2, 2, 2, 2], 64-128-256-512 channels, global average pool) embeds each frame
  into ``f_i`` (512-d);
- **self-attention**: ``alpha_i = sigmoid(q0 . f_i)`` (a 512 -> 1 linear layer), and the video's global
  feature ``f'_v = sum_i alpha_i f_i / sum_i alpha_i``;
- **relation-attention**: ``beta_i = sigmoid(q1 . [f_i ; f'_v])`` (a 1024 -> 1 linear layer), and the final
  representation ``f_v = sum_i alpha_i beta_i [f_i ; f'_v] / sum_i alpha_i beta_i`` (1024-d);
- a linear classifier on ``f_v`` (1024 -> classes).

Parameter names follow torchvision's ResNet (``conv1``, ``bn1``, ``layer1.0.conv1``, ``downsample.0`` ...)
plus ``alpha``, ``beta`` and ``pred_fc`` heads, so a converted third-party state dict can be loaded strictly.
Input: ``(B, T, 3, 224, 224)`` RGB in [0, 1] (the evaluation crops and resizes faces,
:mod:`emotalk.eval.metrics.emotion`). No file I/O here (models layer); the weights are the user's file.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

#: MEAD's 8 classes in alphabetical order: the class order assumed for a MEAD-fine-tuned Emotion-FAN
#: unless ``metrics.emotion_fan_classes`` says otherwise
EMOTION_FAN_CLASSES: tuple[str, ...] = ("angry", "contempt", "disgusted", "fear", "happy", "neutral", "sad",
                                        "surprised")
INPUT_SIZE = 224


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        y = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(y)) + identity)


class EmotionFAN(nn.Module):
    """ResNet-18 frame embeddings + self-attention + relation-attention (see the module docstring)."""

    def __init__(self, num_classes: int = len(EMOTION_FAN_CLASSES)):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        widths = (64, 128, 256, 512)
        layers, cin = [], 64
        for i, w in enumerate(widths):
            stride = 1 if i == 0 else 2
            layers.append(nn.Sequential(BasicBlock(cin, w, stride), BasicBlock(w, w)))
            cin = w
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.alpha = nn.Sequential(nn.Linear(512, 1), nn.Sigmoid())  # self-attention weight
        self.beta = nn.Sequential(nn.Linear(1024, 1), nn.Sigmoid())  # relation-attention weight
        self.pred_fc = nn.Linear(1024, num_classes)

    def frame_features(self, frames: Tensor) -> Tensor:
        """``(N, 3, H, W)`` -> ``(N, 512)`` ResNet-18 embeddings."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(frames))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return torch.flatten(self.avgpool(x), 1)

    def forward(self, video: Tensor) -> Tensor:
        """``(B, T, 3, H, W)`` frames -> ``(B, classes)`` logits of the whole clip."""
        b, t = video.shape[:2]
        f = self.frame_features(video.flatten(0, 1)).view(b, t, 512)
        alpha = self.alpha(f)  # (B, T, 1)
        global_f = (alpha * f).sum(1) / alpha.sum(1).clamp_min(1e-8)  # f'_v
        cat = torch.cat([f, global_f[:, None].expand(-1, t, -1)], dim=2)  # [f_i ; f'_v]
        weight = alpha * self.beta(cat)
        video_f = (weight * cat).sum(1) / weight.sum(1).clamp_min(1e-8)
        return self.pred_fc(video_f)
