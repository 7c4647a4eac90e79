"""Spontaneous eye blinks: when they happen, how the lids move, and what that does to the landmarks.

Blink onsets follow a renewal process with a refractory gap: inter-blink intervals are ``min_gap`` plus
an exponential with mean ``1/rate - min_gap`` (adults blink ~15–20 times a minute while talking). Each
blink closes in ~80 ms, stays shut ~40 ms and reopens more slowly (~170 ms), with a cosine profile;
``closure`` 1 means the upper lid lies on the lower lid.
"""
from __future__ import annotations

import numpy as np

from emotalk.models.face_graph import EYELID_PAIRS

CLOSE_S, HOLD_S, OPEN_S = 0.08, 0.04, 0.17


def blink_onsets(duration: float, rng: np.random.Generator, rate: float = 0.3,
                 min_gap: float = 1.2) -> np.ndarray:
    """Blink start times (s) within ``[0, duration)``; the process starts at a random phase."""
    mean_extra = max(1.0 / rate - min_gap, 0.05)
    t = -rng.uniform(0.0, min_gap + mean_extra)  # random phase: the previous blink was before the clip
    out = []
    while True:
        t += min_gap + rng.exponential(mean_extra)
        if t >= duration:
            break
        if t >= 0:
            out.append(t)
    return np.array(out)


def blink_profile(t: np.ndarray) -> np.ndarray:
    """Lid closure 0..1 at times ``t`` (s) after a blink's onset."""
    t = np.asarray(t, dtype=np.float64)
    c = np.zeros_like(t)
    closing = (t >= 0) & (t < CLOSE_S)
    c[closing] = 0.5 - 0.5 * np.cos(np.pi * t[closing] / CLOSE_S)
    c[(t >= CLOSE_S) & (t < CLOSE_S + HOLD_S)] = 1.0
    opening = (t >= CLOSE_S + HOLD_S) & (t < CLOSE_S + HOLD_S + OPEN_S)
    c[opening] = 0.5 + 0.5 * np.cos(np.pi * (t[opening] - CLOSE_S - HOLD_S) / OPEN_S)
    return c


def blink_track(onsets: np.ndarray, num_frames: int, fps: float = 30.0) -> np.ndarray:
    """(T,) closure per frame, sampled at the middle of each frame's exposure."""
    times = (np.arange(num_frames) + 0.5) / fps
    c = np.zeros(num_frames)
    for t0 in np.asarray(onsets, dtype=np.float64):
        c = np.maximum(c, blink_profile(times - t0))
    return c


def apply_blink(points: np.ndarray, closure: np.ndarray) -> np.ndarray:
    """Close the lids of ``points`` (T, 68, 2) by ``closure`` (T,): the upper lid travels 80 % of the gap,
    the lower lid 20 %; the brows dip slightly."""
    pts = np.array(points, dtype=np.float64, copy=True)
    c = np.asarray(closure, dtype=np.float64)[:, None]
    for up, lo in EYELID_PAIRS:
        gap = np.maximum(pts[:, lo, 1] - pts[:, up, 1], 0.0)[:, None]
        pts[:, up, 1] += (0.8 * c * gap)[:, 0]
        pts[:, lo, 1] -= (0.2 * c * gap)[:, 0]
    pts[:, 17:27, 1] += 0.008 * c
    return pts
