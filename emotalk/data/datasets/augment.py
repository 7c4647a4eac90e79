"""Colour and illumination augmentation for G_T training (paper appendix, Fig. 9).

MEAD has little variety in colour and illumination, so the paper augments it. Every sample of a batch
gets its own random photometric transform, and that *same* transform is applied to every image of the
sample (the identity image and the target frame), so the target stays what G_T should produce from the
augmented identity. The transform, in order, on images in [0, 1]:

1. white balance: per-channel gains in ``[1 - channel_gain, 1 + channel_gain]``;
2. brightness: a factor in ``[1 - brightness, 1 + brightness]``;
3. contrast: blend with the sample's mean grey level (of its first image) by a factor in
   ``[1 - contrast, 1 + contrast]``;
4. saturation: blend with the pixel's luma by a factor in ``[1 - saturation, 1 + saturation]``;
5. gamma: ``x ** γ`` with ``log γ`` uniform in ``[-log(1 + gamma), log(1 + gamma)]``;
6. illumination: a multiplicative linear gradient ``1 + s · (n · p)`` across the image, ``p`` the normalised
   pixel position in [-1, 1]², ``n`` a random unit direction and ``s`` uniform in ``[0, illumination]``
   (a light source from one side);

then clamping to [0, 1]. Each sample is augmented with probability ``p`` (else left untouched).

All random numbers are drawn on the CPU from torch's RNG (the global one unless a ``generator`` is
given), a fixed number per sample, so runs are reproducible and a resumed run continues the exact
stream (the trainer checkpoints torch's RNG state). Works batched on any device; images are in
[-1, 1] (G_T's convention) unless ``value_range=(0, 1)``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from emotalk.errors import ConfigError

_LUMA = (0.299, 0.587, 0.114)


@dataclass
class ColorAugmentConfig:
    enabled: bool = True
    p: float = 0.8  # probability that a sample is augmented
    channel_gain: float = 0.1
    brightness: float = 0.3
    contrast: float = 0.3
    saturation: float = 0.3
    gamma: float = 0.3
    illumination: float = 0.5

    def validate(self) -> None:
        if not 0.0 <= self.p <= 1.0:
            raise ConfigError(f"data.augment.p must be in [0, 1], got {self.p}")
        for k in ("channel_gain", "brightness", "contrast", "saturation"):
            v = getattr(self, k)
            if not 0.0 <= v < 1.0:
                raise ConfigError(f"data.augment.{k} must be in [0, 1), got {v}")
        if self.gamma < 0 or self.illumination < 0 or self.illumination >= 1:
            raise ConfigError("data.augment.gamma must be >= 0 and data.augment.illumination in [0, 1)")


def _luma(x: Tensor) -> Tensor:
    """(B, 3, H, W) -> (B, 1, H, W) Rec. 601 luma, with Python-float weights (no host-to-device copy)."""
    return x[:, 0:1] * _LUMA[0] + x[:, 1:2] * _LUMA[1] + x[:, 2:3] * _LUMA[2]


def _uniform(u: Tensor, amount: float) -> Tensor:
    """Map U(0, 1) draws to ``[1 - amount, 1 + amount]``."""
    return 1.0 + amount * (2 * u - 1)


def sample_params(batch: int, cfg: ColorAugmentConfig, generator: torch.Generator | None = None
                  ) -> dict[str, Tensor]:
    """Draw the per-sample transform parameters (CPU tensors; 10 uniforms per sample, always)."""
    u = torch.rand(batch, 10, generator=generator)
    apply = (u[:, 0] < cfg.p).float()
    params = {
        "gain": _uniform(u[:, 1:4], cfg.channel_gain),
        "brightness": _uniform(u[:, 4], cfg.brightness),
        "contrast": _uniform(u[:, 5], cfg.contrast),
        "saturation": _uniform(u[:, 6], cfg.saturation),
        "gamma": torch.exp(math.log1p(cfg.gamma) * (2 * u[:, 7] - 1)),
        "illum_angle": 2 * math.pi * u[:, 8],
        "illum_strength": cfg.illumination * u[:, 9],
    }
    # samples that are not augmented get the identity transform
    ident = {"gain": 1.0, "brightness": 1.0, "contrast": 1.0, "saturation": 1.0, "gamma": 1.0,
             "illum_angle": 0.0, "illum_strength": 0.0}
    for k, v in params.items():
        a = apply.view(-1, *([1] * (v.dim() - 1)))
        params[k] = a * v + (1 - a) * ident[k]
    params["apply"] = apply
    return params


def params_to(params: dict[str, Tensor], device: torch.device, dtype: torch.dtype) -> dict[str, Tensor]:
    """All parameters to ``device`` in one (non-blocking) copy: packed into one ``(B, n)`` CPU tensor
    (pinned when the target is a GPU), moved once, then viewed apart; one copy per parameter would make
    the CPU wait for the GPU once each."""
    if all(v.device == torch.device(device) and v.dtype == dtype for v in params.values()):
        return params
    keys = list(params)
    cols = [params[k].reshape(params[k].shape[0], -1).to(torch.float32) for k in keys]
    packed = torch.cat(cols, dim=1)
    if torch.device(device).type == "cuda":
        packed = packed.pin_memory()
    packed = packed.to(device, dtype, non_blocking=True)
    out, i = {}, 0
    for k, c in zip(keys, cols):
        n = c.shape[1]
        out[k] = packed[:, i:i + n].reshape(params[k].shape)
        i += n
    return out


def apply_params(image01: Tensor, params: dict[str, Tensor], centre: Tensor) -> Tensor:
    """Apply sampled parameters to ``(B, 3, H, W)`` images in [0, 1]; ``centre`` (B,) is the contrast pivot."""
    B, _, H, W = image01.shape
    dev, dt = image01.device, image01.dtype
    p = params_to(params, dev, dt)
    x = image01 * p["gain"].view(B, 3, 1, 1)
    x = x * p["brightness"].view(B, 1, 1, 1)
    c = centre.to(dev, dt).view(B, 1, 1, 1)
    x = (x - c) * p["contrast"].view(B, 1, 1, 1) + c
    luma = _luma(x)
    x = (x - luma) * p["saturation"].view(B, 1, 1, 1) + luma
    x = x.clamp(0, 1) ** p["gamma"].view(B, 1, 1, 1)
    ys = (torch.arange(H, device=dev, dtype=dt) * 2 + 1) / H - 1
    xs = (torch.arange(W, device=dev, dtype=dt) * 2 + 1) / W - 1
    nx, ny = torch.cos(p["illum_angle"]), torch.sin(p["illum_angle"])
    ramp = nx.view(B, 1, 1, 1) * xs.view(1, 1, 1, W) + ny.view(B, 1, 1, 1) * ys.view(1, 1, H, 1)
    x = x * (1 + p["illum_strength"].view(B, 1, 1, 1) * ramp)
    return x.clamp(0, 1)


def augment_consistent(*images: Tensor, cfg: ColorAugmentConfig | None = None,
                       generator: torch.Generator | None = None,
                       value_range: tuple[float, float] = (-1.0, 1.0)) -> tuple[Tensor, ...]:
    """Apply one random photometric transform per sample, identically to every ``(B, 3, H, W)`` image.

    Images may differ in size (the illumination ramp is defined in normalised coordinates). Returns the
    augmented images in the same value range and order.
    """
    cfg = cfg or ColorAugmentConfig()
    if not images:
        return ()
    B = images[0].shape[0]
    if any(im.dim() != 4 or im.shape[0] != B or im.shape[1] != 3 for im in images):
        raise ValueError("augment_consistent expects (B, 3, H, W) images with the same batch size")
    if not cfg.enabled:
        return tuple(images)
    lo, hi = value_range
    first01 = (images[0] - lo) / (hi - lo)
    params = params_to(sample_params(B, cfg, generator), first01.device, first01.dtype)
    centre = _luma(first01)[:, 0].mean(dim=(1, 2))
    out = []
    for im in images:
        x01 = (im - lo) / (hi - lo)
        out.append(apply_params(x01, params, centre) * (hi - lo) + lo)
    return tuple(out)
