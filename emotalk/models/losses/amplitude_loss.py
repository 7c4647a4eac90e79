"""Region amplitude loss for G_L (not in the paper): match how far each region moves, not only where.

Why: eq. (2) is a squared error, minimised by the conditional *mean* of the target. Wherever the input
(speech, emotion, neutral face X) does not determine the target exactly -- subject-specific responses of
the landmark detector, blinks, detector jitter -- the mean of the possible targets lies closer to X than
any of them, so G_L's expressions come out smaller than real ones ("regression to the mean"). On mead-mini
v2's held-out subjects a tiny G_L trained with eq. (2) alone moves the eyes only about half as far as the
real faces do, while its direction is right (the landmark emotion classifier reads the emotion from G_L's
raw landmarks as well as from the ground truth). The paper counters this with its LSGAN term (eq. 3),
which acts slowly; this term says it directly and cheaply:

    L_amp = mean over the batch of  sum over regions r of  (a_r(X') - a_r(X^))^2,
    a_r(Y) = sqrt(mean over the region's points i of |Y_i - X_i|^2)

(the root-mean-square displacement of the region from the neutral face X). It constrains only the size
of the movement; the direction comes from eq. (2). Why the RMS and not the mean distance: the gradient of
``a_r`` with respect to a point's displacement is proportional to that displacement, so together with
eq. (2) the optimum is eq. (2)'s prediction *scaled up* within each region -- points that the emotion
does not move stay where eq. (2) puts them. With the mean distance every point would get a push of the
same size in whatever direction it happens to point, painting movements that no emotion makes (measured:
the landmark emotion classifier then misreads G_L's faces). ``eps`` keeps the gradient finite at rest.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import torch
from torch import Tensor

from emotalk.models.face_graph import BROWS, EYES, MOUTH

#: The regions whose amplitude is matched by default (the ones the expression validation reports).
AMPLITUDE_REGIONS: dict[str, tuple[int, ...]] = {"brows": BROWS, "eyes": EYES, "mouth": MOUTH}


def region_amplitudes(points: Tensor, neutral: Tensor, regions: Mapping[str, Sequence[int]] = AMPLITUDE_REGIONS,
                      eps: float = 1e-12) -> Tensor:
    """``(B, N, 2)`` landmarks and their neutral faces -> ``(B, R)`` root-mean-square point distance from
    neutral per region (columns in the order of ``regions``)."""
    sq = (points - neutral).pow(2).sum(dim=-1)  # (B, N)
    return torch.stack([(sq[:, list(idx)].mean(dim=1) + eps).sqrt() for idx in regions.values()], dim=1)


def amplitude_loss(pred: Tensor, target: Tensor, neutral: Tensor,
                   regions: Mapping[str, Sequence[int]] = AMPLITUDE_REGIONS,
                   weights: Tensor | None = None) -> Tensor:
    """Scalar ``L_amp`` (module docstring) for ``(B, N, 2)`` prediction, target and neutral faces.

    ``weights``: ``(R,)`` per-region or ``(B, R)`` per-sample-and-region factors on the squared amplitude
    differences (columns in the order of ``regions``; 0 drops a region of a sample, e.g. the eyes of a
    blink frame); None = 1 everywhere (the formula above)."""
    if pred.shape != target.shape or pred.shape != neutral.shape:
        raise ValueError(f"amplitude_loss: prediction {tuple(pred.shape)}, target {tuple(target.shape)} and "
                         f"neutral {tuple(neutral.shape)} must have the same shape")
    if pred.dim() != 3:
        raise ValueError(f"amplitude_loss expects (B, N, 2) landmark graphs, got {tuple(pred.shape)}")
    diff = (region_amplitudes(pred, neutral, regions) - region_amplitudes(target, neutral, regions)).pow(2)
    if weights is not None:
        diff = diff * weights.to(diff)
    return diff.sum(dim=1).mean()
