"""SyncNet (Chung & Zisserman 2016), the ``S`` network of ``joonson/syncnet_python``.

Two streams map 0.2 s of speech and of video to 1024-D embeddings whose Euclidean distance is small when
they are in sync:

- audio: MFCC (13 coefficients x 20 frames at 100 Hz, i.e. 0.2 s) shaped ``(N, 1, 13, 20)``;
- video: 5 consecutive 224x224 face crops at 25 fps shaped ``(N, 3, 5, 224, 224)``, BGR channel order,
  raw 0..255 values (that is what syncnet_python feeds: ``cv2.imread`` frames as float).

Module names (``netcnnaud``, ``netfcaud``, ``netcnnlip``, ``netfclip``) equal syncnet_python's, so its
released ``syncnet_v2.model`` (a state dict of these parameters) loads with ``strict=True``. No file I/O
here; :mod:`emotalk.eval.detectors` loads the weights and :mod:`emotalk.eval.metrics.lse` computes LSE-C / LSE-D.
"""
from __future__ import annotations

import torch
from torch import nn


class SyncNet(nn.Module):
    def __init__(self, embedding_dim: int = 1024):
        super().__init__()
        self.netcnnaud = nn.Sequential(
            nn.Conv2d(1, 64, kernel_size=3, stride=1, padding=1),
            nn.BatchNorm2d(64),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=1, stride=1),

            nn.Conv2d(64, 192, kernel_size=3, stride=1, padding=1),
            nn.BatchNorm2d(192),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=(1, 2)),

            nn.Conv2d(192, 384, kernel_size=3, padding=1),
            nn.BatchNorm2d(384),
            nn.ReLU(inplace=True),

            nn.Conv2d(384, 256, kernel_size=3, padding=1),
            nn.BatchNorm2d(256),
            nn.ReLU(inplace=True),

            nn.Conv2d(256, 256, kernel_size=3, padding=1),
            nn.BatchNorm2d(256),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),

            nn.Conv2d(256, 512, kernel_size=(5, 4), padding=0),
            nn.BatchNorm2d(512),
            nn.ReLU(),
        )
        self.netfcaud = nn.Sequential(
            nn.Linear(512, 512),
            nn.BatchNorm1d(512),
            nn.ReLU(),
            nn.Linear(512, embedding_dim),
        )
        self.netfclip = nn.Sequential(
            nn.Linear(512, 512),
            nn.BatchNorm1d(512),
            nn.ReLU(),
            nn.Linear(512, embedding_dim),
        )
        self.netcnnlip = nn.Sequential(
            nn.Conv3d(3, 96, kernel_size=(5, 7, 7), stride=(1, 2, 2), padding=0),
            nn.BatchNorm3d(96),
            nn.ReLU(inplace=True),
            nn.MaxPool3d(kernel_size=(1, 3, 3), stride=(1, 2, 2)),

            nn.Conv3d(96, 256, kernel_size=(1, 5, 5), stride=(1, 2, 2), padding=(0, 1, 1)),
            nn.BatchNorm3d(256),
            nn.ReLU(inplace=True),
            nn.MaxPool3d(kernel_size=(1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1)),

            nn.Conv3d(256, 256, kernel_size=(1, 3, 3), padding=(0, 1, 1)),
            nn.BatchNorm3d(256),
            nn.ReLU(inplace=True),

            nn.Conv3d(256, 256, kernel_size=(1, 3, 3), padding=(0, 1, 1)),
            nn.BatchNorm3d(256),
            nn.ReLU(inplace=True),

            nn.Conv3d(256, 256, kernel_size=(1, 3, 3), padding=(0, 1, 1)),
            nn.BatchNorm3d(256),
            nn.ReLU(inplace=True),
            nn.MaxPool3d(kernel_size=(1, 3, 3), stride=(1, 2, 2)),

            nn.Conv3d(256, 512, kernel_size=(1, 6, 6), padding=0),
            nn.BatchNorm3d(512),
            nn.ReLU(inplace=True),
        )

    def forward_aud(self, mfcc: torch.Tensor) -> torch.Tensor:
        """(N, 1, 13, 20) MFCC windows -> (N, 1024)."""
        mid = self.netcnnaud(mfcc)
        return self.netfcaud(mid.reshape(mid.shape[0], -1))

    def forward_lip(self, frames: torch.Tensor) -> torch.Tensor:
        """(N, 3, 5, 224, 224) BGR 0..255 face crops -> (N, 1024)."""
        mid = self.netcnnlip(frames)
        return self.netfclip(mid.reshape(mid.shape[0], -1))

    def forward(self, mfcc: torch.Tensor, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.forward_aud(mfcc), self.forward_lip(frames)
