"""The landmark animation shown beside the video: G_L's output alone, as a small looping GIF.

It shows what the landmark generator decided (mouth shapes, the emotion's brows and lips, blinks)
separately from how G_T rendered it, which is the first thing to look at when a video looks wrong. The
points are drawn as the usual 68-point outline (jaw, brows, nose, eyes, lips); frames are subsampled to
at most ``max_fps`` so a GIF of a minute of speech stays small.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["write_landmark_gif", "draw_landmarks"]

#: (first, last, closed) index ranges of the 68-point outline
_STROKES = ((0, 16, False), (17, 21, False), (22, 26, False), (27, 30, False), (31, 35, False),
            (36, 41, True), (42, 47, True), (48, 59, True), (60, 67, True))


def draw_landmarks(frames: np.ndarray, size: int = 160, margin: float = 0.12) -> np.ndarray:
    """``(T, 68, 2)`` landmarks -> ``(T, size, size, 3)`` uint8 drawings, all frames in one common frame of
    reference (the bounding box of the whole clip), so movement shows as movement."""
    import cv2

    lm = np.asarray(frames, np.float32)
    if lm.ndim != 3 or lm.shape[1:] != (68, 2) or len(lm) == 0:
        raise ValueError(f"landmarks must be (T, 68, 2), got {lm.shape}")
    lo, hi = lm.reshape(-1, 2).min(0), lm.reshape(-1, 2).max(0)
    scale = (1 - 2 * margin) * size / max(float((hi - lo).max()), 1e-6)
    offset = (size - scale * (hi - lo)) / 2 - scale * lo
    pts = np.round((lm * scale + offset) * 16).astype(np.int32)  # 4 fractional bits: smooth lines
    out = np.full((len(lm), size, size, 3), 255, np.uint8)
    for img, p in zip(out, pts):
        for a, b, closed in _STROKES:
            cv2.polylines(img, [p[a:b + 1]], closed, (40, 90, 200), 1, cv2.LINE_AA, shift=4)
        for x, y in p:
            cv2.circle(img, (int(x), int(y)), 16, (200, 40, 40), -1, cv2.LINE_AA, shift=4)
    return out


def write_landmark_gif(landmarks: np.ndarray, path: str | Path, fps: float, max_fps: float = 12.5,
                       size: int = 160) -> Path:
    """Write ``landmarks`` ``(T, 68, 2)`` at ``fps`` as a looping GIF at most ``max_fps``; returns ``path``."""
    from PIL import Image

    step = max(1, int(round(fps / max_fps)))
    frames = draw_landmarks(np.asarray(landmarks)[::step], size)
    images = [Image.fromarray(f) for f in frames]
    path = Path(path)
    images[0].save(path, save_all=True, append_images=images[1:], duration=int(round(1000 * step / fps)), loop=0)
    return path
