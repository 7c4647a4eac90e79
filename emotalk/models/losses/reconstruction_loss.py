"""Eq. (6): reconstruction loss ``L_rec = |I_E - Î|`` between the generated and ground-truth frames (§3.2).

Reduction: the mean absolute error over every pixel, channel and batch item (element-wise L1 mean). With
images in [-1, 1] (G_T's convention) this is twice the value on a [0, 1] scale; λ_rec of eq. (9) applies
to this scale.
"""
from __future__ import annotations

from torch import Tensor


def reconstruction_loss(pred: Tensor, target: Tensor) -> Tensor:
    """Element-wise mean L1 between ``pred`` and ``target`` (same shape)."""
    if pred.shape != target.shape:
        raise ValueError(f"reconstruction_loss: prediction {tuple(pred.shape)} and target "
                         f"{tuple(target.shape)} must have the same shape")
    return (pred.float() - target.float()).abs().mean()
