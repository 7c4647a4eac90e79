"""Landmark quality: M-LD, M-LVD (mouth points 48-67) and F-LD, F-LVD (all 68 points).

Landmarks are detected with dlib (:mod:`emotalk.eval.face_features`) on the generated and the
ground-truth frames, unless the sample already carries them. As in the common
reference implementation (the ``LMDMeter`` of AD-NeRF/RAD-NeRF-style evaluation code), each frame's points
are *centred*: the mean of the points used (mouth points for M-*, all 68 for F-*) is subtracted, so a
global shift of the face does not count.

- LD  (landmark distance) = mean over frames and points of ``|| p_gen - p_gt ||`` (pixels).
- LVD (landmark velocity difference, Ji et al. 2021 / EVP) = mean over consecutive frame pairs and
  points of ``|| (p_gen[t+1] - p_gen[t]) - (p_gt[t+1] - p_gt[t]) ||`` on the same centred points.

F-LVD uses all 68 points (one public implementation evaluates mouth points there by mistake).
Frames where dlib finds no face on either side are skipped (counted in ``details``). The dataset value is
the mean over all frames (pairs) of all videos, as the reference meters accumulate it.

Units (``metrics.landmark_units``): ``pixels`` (default) = pixels of the frames scored, i.e. the processed
dataset's similarity-aligned face crops (256x256 with the MEAD configs, smaller in the CPU configs), so
compare numbers only at the same frame size; ``pixels256`` = the same distances rescaled to a 256x256
aligned crop (``x 256 / frame width``), the field's convention, comparable across frame sizes.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from emotalk.eval.face_features import sample_landmarks
from emotalk.eval.feature_store import Side
from emotalk.eval.metrics.base import MetricOptions, MetricResult, VideoSample, register_metric
from emotalk.models.face_graph import MOUTH, NUM_LANDMARKS

FACE = tuple(range(NUM_LANDMARKS))


def _centred(lms: np.ndarray, points: Sequence[int]) -> np.ndarray:
    p = np.asarray(lms, dtype=np.float64)[:, list(points)]
    return p - p.mean(axis=1, keepdims=True)


def landmark_distance(gen: np.ndarray, gt: np.ndarray, points: Sequence[int] = FACE) -> np.ndarray:
    """Per-frame LD ``(T,)`` between (T, 68, 2) landmark sequences (NaN where either is missing)."""
    n = min(len(gen), len(gt))
    a, b = _centred(gen[:n], points), _centred(gt[:n], points)
    return np.linalg.norm(a - b, axis=-1).mean(axis=-1)


def landmark_velocity_difference(gen: np.ndarray, gt: np.ndarray, points: Sequence[int] = FACE) -> np.ndarray:
    """Per-frame-pair LVD ``(T - 1,)`` (NaN where any of the four frames is missing)."""
    n = min(len(gen), len(gt))
    a, b = _centred(gen[:n], points), _centred(gt[:n], points)
    va, vb = np.diff(a, axis=0), np.diff(b, axis=0)
    return np.linalg.norm(va - vb, axis=-1).mean(axis=-1)


def _pooled(samples: Sequence[VideoSample], opts: MetricOptions, fn, points, display: str) -> MetricResult:
    values, per_video, skipped = [], {}, 0
    for i, s in enumerate(samples):
        gen = sample_landmarks(s, Side.GENERATED, opts)
        gt = sample_landmarks(s, Side.GROUND_TRUTH, opts)
        v = fn(gen, gt, points) * unit_scale(s, opts.landmark_units)
        ok = np.isfinite(v)
        skipped += int((~ok).sum())
        values.append(v[ok])
        per_video[s.name or str(i)] = float(v[ok].mean()) if ok.any() else None
    allv = np.concatenate(values) if values else np.zeros(0)
    value = float(allv.mean()) if allv.size else float("nan")
    return MetricResult(display, value, {"per_video": per_video, "frames": int(allv.size),
                                         "skipped_frames": skipped, "units": opts.landmark_units})


def unit_scale(sample: VideoSample, units: str) -> float:
    """Factor from the sample's frame pixels to ``units`` (``pixels``: 1; ``pixels256``: 256 / width)."""
    return 256.0 / float(sample.generated.shape[2]) if units == "pixels256" else 1.0


_NEEDS = ("generated", "ground_truth")


@register_metric("m_ld", display="M-LD", needs=_NEEDS, higher_is_better=False)
def m_ld(samples: Sequence[VideoSample], opts: MetricOptions) -> MetricResult:
    """Mouth landmark distance (points 48-67, centred per frame), pixels."""
    return _pooled(samples, opts, landmark_distance, MOUTH, "M-LD")


@register_metric("m_lvd", display="M-LVD", needs=_NEEDS, higher_is_better=False)
def m_lvd(samples: Sequence[VideoSample], opts: MetricOptions) -> MetricResult:
    """Mouth landmark velocity difference (points 48-67), pixels per frame."""
    return _pooled(samples, opts, landmark_velocity_difference, MOUTH, "M-LVD")


@register_metric("f_ld", display="F-LD", needs=_NEEDS, higher_is_better=False)
def f_ld(samples: Sequence[VideoSample], opts: MetricOptions) -> MetricResult:
    """Face landmark distance (all 68 points, centred per frame), pixels."""
    return _pooled(samples, opts, landmark_distance, FACE, "F-LD")


@register_metric("f_lvd", display="F-LVD", needs=_NEEDS, higher_is_better=False)
def f_lvd(samples: Sequence[VideoSample], opts: MetricOptions) -> MetricResult:
    """Face landmark velocity difference (all 68 points), pixels per frame."""
    return _pooled(samples, opts, landmark_velocity_difference, FACE, "F-LVD")
