"""Eq. (2): landmark vertex distance loss ``L_ver = ||X̂ - (X + δ)||²₂`` (§3.1).

Reduction: the squared L2 (Frobenius) norm over all vertices and coordinates of one landmark graph —
i.e. the *sum* of squared coordinate errors over the ``(N, 2)`` graph, as the equation writes it — then
the mean over every leading (batch / time) dimension. With N = 68 this is 136 × the element-wise MSE;
the λ_ver of eq. (4) applies to this scale.
"""
from __future__ import annotations

from torch import Tensor


def vertex_loss(pred: Tensor, target: Tensor) -> Tensor:
    """``pred`` = X + δ and ``target`` = X̂, both ``(..., N, 2)`` -> scalar."""
    if pred.shape != target.shape:
        raise ValueError(f"vertex_loss: prediction {tuple(pred.shape)} and target {tuple(target.shape)} "
                         f"must have the same shape")
    if pred.dim() < 2:
        raise ValueError(f"vertex_loss expects (..., N, 2) landmark graphs, got {tuple(pred.shape)}")
    return (pred - target).pow(2).sum(dim=(-2, -1)).mean()
