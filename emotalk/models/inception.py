"""Inception v3 as pytorch-fid builds it: the feature network of FID (Heusel et al. 2017).

torchvision's ``inception_v3`` layout with the patches of the TensorFlow FID graph: average pools that
exclude padding, a max pool in the last block, 1008 classes. Parameter names equal torchvision's
(``num_classes=1008``, no aux head), so pytorch-fid's ``pt_inception-2015-12-05-6726825d.pth`` loads with
``strict=True``. No file I/O here: :mod:`emotalk.eval.detectors` reads the weights file.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from emotalk.utils.weights import load_state_strict

INCEPTION_FILE = "pt_inception-2015-12-05-6726825d.pth"


def _fid_blocks():
    from torchvision.models import inception as tv

    class FIDInceptionA(tv.InceptionA):
        def forward(self, x):
            b1 = self.branch1x1(x)
            b5 = self.branch5x5_2(self.branch5x5_1(x))
            b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
            bp = self.branch_pool(F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False))
            return torch.cat([b1, b5, b3, bp], 1)

    class FIDInceptionC(tv.InceptionC):
        def forward(self, x):
            b1 = self.branch1x1(x)
            b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
            bd = self.branch7x7dbl_1(x)
            for layer in (self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4, self.branch7x7dbl_5):
                bd = layer(bd)
            bp = self.branch_pool(F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False))
            return torch.cat([b1, b7, bd, bp], 1)

    class FIDInceptionE(tv.InceptionE):
        def __init__(self, in_channels: int, max_pool: bool):
            super().__init__(in_channels)
            self.max_pool = max_pool

        def forward(self, x):
            b1 = self.branch1x1(x)
            b3 = self.branch3x3_1(x)
            b3 = torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], 1)
            bd = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
            bd = torch.cat([self.branch3x3dbl_3a(bd), self.branch3x3dbl_3b(bd)], 1)
            if self.max_pool:  # the TF FID graph max-pools here (pytorch-fid's FIDInceptionE_2)
                pooled = F.max_pool2d(x, 3, stride=1, padding=1)
            else:
                pooled = F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)
            return torch.cat([b1, b3, bd, self.branch_pool(pooled)], 1)

    return FIDInceptionA, FIDInceptionC, FIDInceptionE


class FIDInceptionV3(nn.Module):
    """Inception v3 as pytorch-fid builds it; ``forward`` maps RGB in [0, 1] to 2048-D pool3 features.

    Parameter names equal torchvision's ``inception_v3`` (num_classes=1008, no aux head), so
    ``pt_inception-2015-12-05-6726825d.pth`` loads with ``strict=True``.
    """

    def __init__(self):
        super().__init__()
        from torchvision.models import inception_v3

        A, C, E = _fid_blocks()
        net = inception_v3(weights=None, num_classes=1008, aux_logits=False, init_weights=False)
        net.Mixed_5b = A(192, pool_features=32)
        net.Mixed_5c = A(256, pool_features=64)
        net.Mixed_5d = A(288, pool_features=64)
        net.Mixed_6b = C(768, channels_7x7=128)
        net.Mixed_6c = C(768, channels_7x7=160)
        net.Mixed_6d = C(768, channels_7x7=160)
        net.Mixed_6e = C(768, channels_7x7=192)
        net.Mixed_7b = E(1280, max_pool=False)
        net.Mixed_7c = E(2048, max_pool=True)
        self.net = net

    def load_fid_state_dict(self, state: dict, source: str = "Inception weights") -> None:
        load_state_strict(self.net, state, f"{source}: not pytorch-fid's Inception weights",
                          f"use {INCEPTION_FILE}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = self.net
        x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
        x = 2 * x - 1
        x = n.maxpool1(n.Conv2d_2b_3x3(n.Conv2d_2a_3x3(n.Conv2d_1a_3x3(x))))
        x = n.maxpool2(n.Conv2d_4a_3x3(n.Conv2d_3b_1x1(x)))
        for block in (n.Mixed_5b, n.Mixed_5c, n.Mixed_5d, n.Mixed_6a, n.Mixed_6b, n.Mixed_6c, n.Mixed_6d,
                      n.Mixed_6e, n.Mixed_7a, n.Mixed_7b, n.Mixed_7c):
            x = block(x)
        return F.adaptive_avg_pool2d(x, 1).flatten(1)
