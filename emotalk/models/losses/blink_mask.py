"""Which frames of a landmark track show a blink, read from the landmarks themselves (G_L, not in the paper).

Why: a spontaneous blink is not part of the emotion. The paper's G_L predicts the expression from speech and
the emotion label; blinks are added afterwards by a separate module (here: :mod:`emotalk.data.face.blinks`
at inference). Blink frames in the ground truth therefore only teach G_L noise it cannot predict (when a
person blinks is random), and they inflate the ground truth's eye "expression" amplitude by a movement that
no deterministic G_L should make. Both the eye-region training losses and the held-out expression
amplitude (``emotalk.train.landmark_validation``) leave these frames out.

How: the eye aperture (eyelid gap over eye width, both eyes: the eye-aspect ratio, ~0.3 open, 0 shut) dips
during a blink. A clip's open-eye aperture is taken as the 75th percentile of its frames (an emotion that
narrows or widens the eyes for the whole clip moves the baseline with it, so squinting in *happy* is not a
blink; blinks cover a few percent of the frames, so they cannot reach the 75th percentile); a frame whose
aperture is below :data:`BLINK_THRESHOLD` of it is a blink, and :data:`BLINK_DILATE` frames on each side
are added (the lids' closing and reopening flanks dip less than the threshold but are still moving).
No sidecar is used, so the same rule works on real MEAD landmarks.

Measured on mead-mini v2 (dlib landmarks re-detected on the rendered frames, all 8 subjects, 30 k frames,
the generator's own closure track as the answer): the threshold alone finds 70 % of the frames with
closure > 0.5 (the renderer does not always close the eye fully: the others barely dip in the re-detected
landmarks) and marks 0.9 % of the blink-free frames; with the dilation 87 % of the closure > 0.5 frames and
81 % of all blink frames are found, 3.5 % of the blink-free frames are marked, 8.7 % of all frames are left
out.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from emotalk.models.face_graph import EYELID_PAIRS, REGIONS

#: A frame is a blink when its eye aperture is below this fraction of the clip's open-eye aperture.
BLINK_THRESHOLD = 0.85
#: Percentile of a clip's apertures taken as its open-eye aperture.
OPEN_PERCENTILE = 75.0
#: Frames added on each side of a detected dip (a blink lasts ~0.3 s = ~9 frames at 30 fps, its centre
#: third dips below the threshold).
BLINK_DILATE = 2

# (outer corner, inner corner) and the two lid pairs of each eye
_EYES = ((REGIONS["right_eye"][0], REGIONS["right_eye"][3], EYELID_PAIRS[:2]),
         (REGIONS["left_eye"][3], REGIONS["left_eye"][0], EYELID_PAIRS[2:]))


def eye_aperture(points: Tensor | np.ndarray) -> Tensor:
    """``(..., 68, 2)`` landmarks -> ``(...)`` mean over both eyes of the eyelid gap (mean of the two lid
    pairs' vertical distances) over the eye's corner-to-corner width."""
    p = torch.as_tensor(points, dtype=torch.float32)
    out = []
    for outer, inner, pairs in _EYES:
        width = (p[..., inner, :] - p[..., outer, :]).norm(dim=-1).clamp_min(1e-6)
        gap = sum(p[..., lo, 1] - p[..., up, 1] for up, lo in pairs) / len(pairs)
        out.append(gap / width)
    return (out[0] + out[1]) / 2


def blink_frames(aperture: Tensor | np.ndarray, threshold: float = BLINK_THRESHOLD,
                 dilate: int = BLINK_DILATE) -> Tensor:
    """``(T,)`` eye apertures of one clip, in frame order -> ``(T,)`` bool, True on blink frames."""
    a = torch.as_tensor(aperture, dtype=torch.float32).reshape(-1)
    if a.numel() == 0:
        return torch.zeros(0, dtype=torch.bool)
    base = torch.quantile(a, OPEN_PERCENTILE / 100.0)
    dip = a < threshold * base
    if dilate > 0 and bool(dip.any()):
        k = 2 * dilate + 1
        dip = torch.nn.functional.max_pool1d(dip.float()[None, None], k, stride=1, padding=dilate)[0, 0] > 0
    return dip


def open_eye_mask(landmarks: Tensor | np.ndarray, clip_index: np.ndarray,
                  threshold: float = BLINK_THRESHOLD, dilate: int = BLINK_DILATE) -> Tensor:
    """``(F, 68, 2)`` landmarks of many clips and their ``(F, 2)`` ``[clip id, frame in clip]`` table ->
    ``(F,)`` bool, True where the eyes are open (not a blink frame). Each clip's frames are put in frame order
    before the dips are found, so the table's row order does not matter."""
    idx = np.asarray(clip_index)
    if idx.ndim != 2 or idx.shape[1] != 2 or len(idx) != len(landmarks):
        raise ValueError(f"clip_index must be ({len(landmarks)}, 2) [clip id, frame], got {idx.shape}")
    aperture = eye_aperture(landmarks)
    keep = torch.ones(len(idx), dtype=torch.bool)
    for cid in np.unique(idx[:, 0]):
        rows = np.nonzero(idx[:, 0] == cid)[0]
        rows = rows[np.argsort(idx[rows, 1], kind="stable")]
        sel = torch.from_numpy(rows)
        keep[sel] = ~blink_frames(aperture[sel], threshold, dilate)
    return keep
