"""A small synthetic processed dataset with known structure, for tests and smoke runs.

Mouth opening follows the "speech energy" carried by feature channel 0; brows and lip corners follow
the emotion (scaled by intensity); every subject has its own neutral face shape. A model that uses its
inputs beats "copy the neutral face"; one that ignores them cannot.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from emotalk.data.io.clip import Clip, DatasetManifest, clip_path, save_clip
from emotalk.data.emotions import EMOTIONS
from emotalk.models.face_graph import BROWS, INNER_LIP_PAIRS, canonical_template

#: per-emotion displacement recipe: (brow dy, inner-brow dy, lip-corner dy, lip-corner dx) at level 1
_EMOTION_MOTION = {
    "neutral": (0.0, 0.0, 0.0, 0.0),
    "angry": (0.05, 0.06, 0.01, -0.01),
    "contempt": (0.0, 0.0, -0.02, 0.02),
    "disgusted": (0.03, 0.03, 0.03, -0.01),
    "fear": (-0.05, -0.07, 0.02, 0.02),
    "happy": (0.0, 0.0, -0.05, 0.04),
    "sad": (0.0, -0.06, 0.04, -0.01),
    "surprised": (-0.09, -0.09, 0.0, -0.01),
}


def emotion_displacement(emotion: str, level: int) -> np.ndarray:
    brow, inner, corner_dy, corner_dx = (v * (0.6 + 0.4 * level) for v in _EMOTION_MOTION[emotion])
    d = np.zeros((68, 2), np.float32)
    d[list(BROWS), 1] += brow
    d[[21, 22], 1] += inner - brow * 0.5
    d[[48, 60], 1] += corner_dy
    d[[54, 64], 1] += corner_dy if emotion != "contempt" else 0.0
    d[[48, 60], 0] -= corner_dx
    d[[54, 64], 0] += corner_dx
    return d


def mouth_displacement(energy: np.ndarray) -> np.ndarray:
    """(T,) energy in [0, 1] -> (T, 68, 2) opening of lips and jaw."""
    T = energy.shape[0]
    d = np.zeros((T, 68, 2), np.float32)
    for up, lo in INNER_LIP_PAIRS:
        d[:, up, 1] -= 0.04 * energy
        d[:, lo, 1] += 0.12 * energy
    d[:, 55:60, 1] += 0.13 * energy[:, None]
    d[:, 50:53, 1] -= 0.03 * energy[:, None]
    d[:, 5:12, 1] += 0.08 * energy[:, None]
    return d


def make_toy_dataset(root: str | Path, subjects: int = 4, clips_per_emotion: int = 1, frames: int = 40,
                     feature_dim: int = 8, window: int = 6, seed: int = 0,
                     emotions: tuple[str, ...] = EMOTIONS) -> Path:
    rng = np.random.default_rng(seed)
    root = Path(root)
    template = canonical_template()
    for s in range(subjects):
        subject = f"T{s:03d}"
        shape = template.copy()
        shape[:, 0] *= 1.0 + rng.uniform(-0.08, 0.08)
        shape[:, 1] *= 1.0 + rng.uniform(-0.08, 0.08)
        shape += rng.normal(0, 0.01, shape.shape).astype(np.float32)
        for emotion in emotions:
            for level in ([1] if emotion == "neutral" else [1, 3]):
                for k in range(clips_per_emotion):
                    # smooth energy with pauses
                    raw = rng.uniform(0, 1, frames + window)
                    kernel = np.ones(4) / 4
                    energy_ext = np.clip(np.convolve(raw, kernel, mode="same") * 1.6 - 0.4, 0, 1)
                    energy_ext[rng.uniform(size=energy_ext.size) < 0.15] = 0.0
                    feats = rng.normal(0, 0.3, (frames + window, feature_dim)).astype(np.float32)
                    feats[:, 0] = energy_ext * 2.0 - 0.5
                    half = window // 2
                    energy = energy_ext[half:half + frames]
                    windows = np.stack([feats[t:t + window] for t in range(frames)])
                    disp = mouth_displacement(energy) + emotion_displacement(emotion, level)[None]
                    landmarks = template[None] + disp
                    clip = Clip(landmarks=landmarks.astype(np.float32), neutral_landmarks=shape,
                                audio_features=windows, emotion=emotion, intensity=level, fps=30.0,
                                subject=subject, clip_id=f"{emotion}_{level}_{k:03d}",
                                feature_kind="toy", dataset="toy")
                    save_clip(clip, clip_path(root, subject, clip.clip_id))
    DatasetManifest(feature_kind="toy", feature_dim=feature_dim, window=window, fps=30.0, source="toy",
                    emotions=list(emotions), intensity_levels=3, crop_size=0).save(root)
    return root
