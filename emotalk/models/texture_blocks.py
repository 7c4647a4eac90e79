"""Building blocks of G_T and its frame discriminator D (split out of :mod:`texture_generator` for size).

Convolution blocks (BatchNorm, as FOMM), AdaIN (Huang & Belongie 2017), backward warping with a normalised
flow (``grid_sample``) and the PatchGAN frame discriminator of eq. (8). Shapes and conventions are those
of :mod:`emotalk.models.texture_generator`.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F


# ----------------------------------------------------------------------------------------------- blocks
class ConvBlock(nn.Sequential):
    """conv (k×k, stride) -> BatchNorm -> ReLU."""

    def __init__(self, cin: int, cout: int, k: int = 3, stride: int = 1):
        super().__init__(nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class UpBlock(nn.Module):
    """×2 upsampling, concatenation with a skip, conv -> BatchNorm -> ReLU."""

    def __init__(self, cin: int, cskip: int, cout: int):
        super().__init__()
        self.conv = ConvBlock(cin + cskip, cout)

    def forward(self, x: Tensor, skip: Tensor) -> Tensor:
        x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
        return self.conv(torch.cat([x, skip], dim=1))


class AdaIN(nn.Module):
    """``(1 + γ(s)) · InstanceNorm(x) + β(s)`` with ``γ, β`` a learned linear map of the style vector s."""

    def __init__(self, channels: int, style_dim: int):
        super().__init__()
        self.norm = nn.InstanceNorm2d(channels, affine=False)
        self.affine = nn.Linear(style_dim, 2 * channels)

    def forward(self, x: Tensor, style: Tensor) -> Tensor:
        gamma, beta = self.affine(style).unsqueeze(-1).unsqueeze(-1).chunk(2, dim=1)
        return (1 + gamma) * self.norm(x) + beta


class AdaINResBlock(nn.Module):
    def __init__(self, channels: int, style_dim: int):
        super().__init__()
        self.norm1 = AdaIN(channels, style_dim)
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.norm2 = AdaIN(channels, style_dim)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor, style: Tensor) -> Tensor:
        h = self.conv1(F.relu(self.norm1(x, style)))
        h = self.conv2(F.relu(self.norm2(h, style)))
        return x + h


def style_statistics(f: Tensor, eps: float = 1e-5) -> Tensor:
    """``(B, C, H, W)`` -> ``(B, 2C)``: per-channel mean and standard deviation (AdaIN's style)."""
    mean = f.mean(dim=(2, 3))
    std = (f.var(dim=(2, 3), unbiased=False) + eps).sqrt()
    return torch.cat([mean, std], dim=1)


def identity_grid(h: int, w: int, device=None, dtype=None) -> Tensor:
    """``(1, h, w, 2)`` sampling grid of pixel centres in normalised coordinates (align_corners=False)."""
    ys = (torch.arange(h, device=device, dtype=dtype) * 2 + 1) / h - 1
    xs = (torch.arange(w, device=device, dtype=dtype) * 2 + 1) / w - 1
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([gx, gy], dim=-1).unsqueeze(0)


def warp(features: Tensor, flow: Tensor) -> Tensor:
    """Backward-warp ``features`` (B, C, H, W) with a normalised displacement ``flow`` (B, 2, h, w) of any
    grid size (resampled to H x W first)."""
    H, W = features.shape[-2:]
    flow = flow.float()
    if flow.shape[-2] < H:  # a coarser flow: bilinear upsampling
        flow = F.interpolate(flow, size=(H, W), mode="bilinear", align_corners=False)
    elif flow.shape[-2] > H:  # a finer flow (model.flow_stride < 4) onto coarser features: its local mean
        flow = F.adaptive_avg_pool2d(flow, (H, W))
    grid = identity_grid(H, W, flow.device, torch.float32) + flow.permute(0, 2, 3, 1)
    out = F.grid_sample(features.float(), grid, mode="bilinear", padding_mode="border", align_corners=False)
    return out.to(features.dtype)


class FrameDiscriminator(nn.Module):
    """Frame discriminator D of eq. (8): a PatchGAN (pix2pix) returning a map of real/fake logits.

    ``disc_layers`` stride-2 4×4 convs (widths c, 2c, 4c, ... capped at 8c), one stride-1 conv and a 1-channel
    output conv; InstanceNorm + LeakyReLU(0.2) except on the first layer. Input: images in [-1, 1].
    At 256² with 3 layers each output logit sees a 70×70 patch.
    """

    def __init__(self, channels: int = 64, layers: int = 3, in_channels: int = 3):
        super().__init__()
        c = channels
        mods: list[nn.Module] = [nn.Conv2d(in_channels, c, 4, 2, 1), nn.LeakyReLU(0.2, inplace=True)]
        cin = c
        for i in range(1, layers):
            cout = min(c * 2 ** i, 8 * c)
            mods += [nn.Conv2d(cin, cout, 4, 2, 1), nn.InstanceNorm2d(cout), nn.LeakyReLU(0.2, inplace=True)]
            cin = cout
        cout = min(c * 2 ** layers, 8 * c)
        mods += [nn.Conv2d(cin, cout, 4, 1, 1), nn.InstanceNorm2d(cout), nn.LeakyReLU(0.2, inplace=True),
                 nn.Conv2d(cout, 1, 4, 1, 1)]
        self.net = nn.Sequential(*mods)

    def forward(self, image: Tensor) -> Tensor:
        return self.net(image)
