"""Ground-truth face motion of one clip in canonical space: emotion AUs + speech visemes + blinks.

Order of composition per frame: the subject's neutral shape, plus the emotion's action-unit field (with
a slow ±6 % "breathing" of its strength so held expressions are not frozen), then the speech articulation
(:func:`emotalk.mini.visemes.apply_speech`, whose jaw track also carries the AU26 jaw drop), then
blinks. All inputs are deterministic functions of the phones and the random generator passed in.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from emotalk.mini.action_units import emotion_displacement, level_scale
from emotalk.data.face.blinks import apply_blink, blink_onsets, blink_track
from emotalk.mini.visemes import JAW, apply_speech, viseme_track
from emotalk.models.face_graph import INNER_LIP_PAIRS

#: speaking style per emotion at level 3: articulation gain (how wide the jaw/lips move)
EMOTION_ARTICULATION = {"neutral": 1.0, "happy": 1.05, "sad": 0.82, "angry": 1.12, "surprised": 1.1,
                        "fear": 1.0, "disgusted": 0.9, "contempt": 0.88}


def separate_lips(points: np.ndarray) -> np.ndarray:
    """Lips never pass through each other: where a lower inner-lip point (65-67) ends up above its upper
    partner (61-63) — pressing AUs (AU17/23/24) on top of a speech closure — both meet half-way."""
    pts = np.array(points, dtype=np.float64, copy=True)
    for up, lo in INNER_LIP_PAIRS:
        crossed = pts[:, lo, 1] < pts[:, up, 1]
        mid = 0.5 * (pts[:, lo, 1] + pts[:, up, 1])
        pts[crossed, up, 1] = mid[crossed]
        pts[crossed, lo, 1] = mid[crossed]
    return pts


@dataclass
class ClipMotion:
    landmarks: np.ndarray  # (T, 68, 2) canonical
    visemes: np.ndarray  # (T, 5) viseme parameters (jaw includes the AU jaw drop)
    blink: np.ndarray  # (T,) lid closure
    blink_onsets: np.ndarray  # (B,) seconds
    emotion_gain: np.ndarray  # (T,) AU strength multiplier over time


def clip_motion(neutral: np.ndarray, phones, num_frames: int, emotion: str, level: int,
                rng: np.random.Generator, fps: float = 30.0, articulation: float = 1.0,
                blink_rate: float = 0.3) -> ClipMotion:
    """Per-frame canonical landmarks of a subject with rest shape ``neutral`` (68, 2) saying ``phones``."""
    neutral = np.asarray(neutral, dtype=np.float64)
    T = int(num_frames)
    times = (np.arange(T) + 0.5) / fps
    # emotion: static AU field, gently modulated
    au_disp, au_jaw = emotion_displacement(emotion, level, neutral)
    period, phase = rng.uniform(2.0, 4.0), rng.uniform(0, 2 * np.pi)
    gain = 1.0 + 0.06 * np.sin(2 * np.pi * times / period + phase)
    base = neutral[None] + gain[:, None, None] * au_disp[None]
    # speech
    k = level_scale(level) if emotion != "neutral" else 0.0
    style = 1.0 + k * (EMOTION_ARTICULATION.get(emotion, 1.0) - 1.0)
    vis = viseme_track(phones, T, fps=fps, strength=articulation * style)
    vis[:, JAW] += gain * au_jaw
    pts = apply_speech(base, vis, neutral)
    pts = separate_lips(pts)
    # blinks (surprise and fear stare: fewer blinks)
    rate = blink_rate * (0.5 if emotion in ("surprised", "fear") else 1.0)
    onsets = blink_onsets(T / fps, rng, rate=rate)
    blink = blink_track(onsets, T, fps)
    pts = apply_blink(pts, blink)
    return ClipMotion(landmarks=pts, visemes=vis, blink=blink, blink_onsets=onsets, emotion_gain=gain)
