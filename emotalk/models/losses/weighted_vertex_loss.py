"""Options on eq. (2) for G_L (not in the paper): per-region weights and an L1 norm.

Why: the paper's vertex loss (``vertex_loss.py``) is a squared L2 over all 68 points. Two things it does to
a small, briefly trained G_L (issue 12 §3):

* the brows (10 points) and eyes (12) are a third of the graph and move a few hundredths of a unit, the
  jaw and mouth move more; their squared errors barely register in the sum, so the emotion's brow and
  eye shape is learned last. ``point_weights`` scales each point's squared error;
* a squared error is minimised by the conditional *mean*: when speech does not determine the mouth shape
  exactly, the mean shape opens less than any real frame (regression to the mean shrinks amplitudes).
  ``norm="l1"`` (sum of absolute coordinate errors) is minimised by the median, which shrinks less.

With ``point_weights=None`` and ``norm="l2"`` this is exactly eq. (2) (the default everywhere).
"""
from __future__ import annotations

from typing import Mapping

import torch
from torch import Tensor

from emotalk.models.face_graph import BROWS, EYES, MOUTH, NUM_LANDMARKS, REGIONS

NORMS = ("l2", "l1")
#: Region names accepted by :func:`region_point_weights`: the 8 pooling regions plus three unions.
REGION_GROUPS: dict[str, tuple[int, ...]] = {**REGIONS, "brows": BROWS, "eyes": EYES, "mouth": MOUTH}


def region_point_weights(weights: Mapping[str, float]) -> Tensor | None:
    """``{region: weight}`` -> ``(68,)`` per-point weights (1 elsewhere; a later key overrides an earlier
    one on shared points); ``None`` for an empty mapping (the unweighted loss)."""
    if not weights:
        return None
    w = torch.ones(NUM_LANDMARKS)
    for name, value in weights.items():
        if name not in REGION_GROUPS:
            raise ValueError(f"unknown face region {name!r}; choose from {', '.join(REGION_GROUPS)}")
        if value < 0:
            raise ValueError(f"region weight for {name!r} must be >= 0, got {value}")
        w[list(REGION_GROUPS[name])] = float(value)
    return w


def weighted_vertex_loss(pred: Tensor, target: Tensor, point_weights: Tensor | None = None,
                         norm: str = "l2") -> Tensor:
    """``(..., N, 2)`` prediction and target -> scalar: per graph, the sum over points of
    ``w_i · err_i`` (``err_i`` = squared coordinate error for "l2", absolute for "l1", summed over x, y),
    then the mean over the leading dimensions — eq. (2)'s reduction. ``point_weights`` is ``(N,)`` or, for
    weights that differ per graph (e.g. the eyes of blink frames at 0), ``(..., N)``."""
    if pred.shape != target.shape:
        raise ValueError(f"weighted_vertex_loss: prediction {tuple(pred.shape)} and target "
                         f"{tuple(target.shape)} must have the same shape")
    if norm not in NORMS:
        raise ValueError(f"vertex loss norm must be one of {NORMS}, got {norm!r}")
    diff = pred - target
    per_point = (diff.pow(2) if norm == "l2" else diff.abs()).sum(dim=-1)  # (..., N)
    if point_weights is not None:
        per_point = per_point * point_weights.to(per_point)
    return per_point.sum(dim=-1).mean()
