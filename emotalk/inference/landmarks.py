"""Landmark prediction and animation (paper Fig. 2, G_L: ``X' = X + δ`` from audio and emotion).

:class:`LandmarkPredictor` wraps a loaded G_L with the facts needed to run it (its emotion vocabulary,
speech-feature settings and frame rate, from the checkpoint). :meth:`LandmarkPredictor.predict_batch`
runs one batch of frames - per-frame audio windows and per-frame emotion control vectors - so a caller
can drive G_L frame batch by frame batch (streaming, emotion timelines); :meth:`LandmarkPredictor.predict`
runs a whole clip through it.

After G_L, :func:`animate` smooths the landmarks over time (Savitzky-Golay: removes frame-to-frame
jitter, keeps mouth closures) and adds spontaneous blinks (the paper adds them to G_L's output before
G_T; :mod:`emotalk.data.face.blinks`).
"""
from __future__ import annotations

from typing import Mapping

import numpy as np
import torch

from emotalk.data.emotions import emotion_vector
from emotalk.data.face.blinks import apply_blink, blink_onsets, blink_track
from emotalk.data.face.track import savgol_smooth
from emotalk.data.loading import LoadedModel
from emotalk.data.speech.features import FEATURE_BACKENDS
from emotalk.errors import CheckpointError, InputError
from emotalk.inference.feature_stream import ArrayFeatures, AudioFeatures
from emotalk.inference.progress import progress_bar
from emotalk.models.face_graph import canonical_template

#: G_L frames per forward pass (a few MB of activations for the paper-size model).
DEFAULT_BATCH = 512


class LandmarkPredictor:
    """G_L plus its checkpoint's facts. Landmarks are ``(68, 2)`` in the photo's aligned canonical space."""

    def __init__(self, loaded: LoadedModel, device: torch.device):
        self.device = device
        self.G = loaded.module.to(device).eval()
        self.model_config = loaded.model_config
        self.meta = loaded.meta
        m, meta = loaded.model_config, loaded.meta
        self.emotions: list[str] = list(m.emotions)
        self.intensity_levels = int(m.intensity_levels)
        self.emotion_dim = int(m.emotion_dim)
        self.feature_kind = str(meta.feature_kind or "unknown")
        self.feature_dim = int(meta.feature_dim or m.feature_dim)
        self.window = int(meta.window or m.window)
        self.fps = float(meta.fps or 30.0)
        data = meta.config.get("data") if isinstance(meta.config.get("data"), dict) else {}
        #: "subject": G_L was trained on each subject's own neutral graph X; "template": on the canonical
        #: template (its motion is then moved onto the photo's face)
        self.graph_input = str(data.get("graph_input", "subject"))
        self._template = canonical_template().astype(np.float32)

    def emotion_vector(self, emotion: str | Mapping[str, float] = "neutral", intensity: float = 1) -> np.ndarray:
        """G_L's control vector ``(E + I,)``; InputError for unknown emotions or an intensity outside
        ``1 .. levels``."""
        return emotion_vector(emotion, intensity, self.emotions, self.intensity_levels)

    def features(self, speech, num_frames: int, fps: float | None = None, source=None) -> AudioFeatures:
        """This checkpoint's speech features for ``speech`` (a :class:`~emotalk.inference.speech.Speech`),
        checked against what G_L expects."""
        fps = float(fps or self.fps)
        backend = FEATURE_BACKENDS.get(self.feature_kind)
        if backend is not None and backend.video_rate and abs(fps - self.fps) > 1e-6:
            raise InputError(f"this landmark checkpoint's {self.feature_kind} features are windows of video frames "
                             f"at {self.fps:g} fps; generate at that rate (fps=None), not at {fps:g}")
        feats = AudioFeatures(self.feature_kind, speech, num_frames, fps, self.window, source=source)
        if feats.dim != self.feature_dim or feats.window != self.window:
            raise CheckpointError(f"the landmark checkpoint expects {self.feature_kind} features of "
                             f"{self.window} x {self.feature_dim}, but this installation computes "
                             f"{feats.window} x {feats.dim}; use the same feature settings as in training")
        return feats

    def _check_neutral(self, neutral: np.ndarray) -> np.ndarray:
        neutral = np.asarray(neutral, np.float32)
        if neutral.shape != (68, 2):
            raise InputError(f"neutral landmarks must be (68, 2), got {neutral.shape}")
        return neutral

    @torch.no_grad()
    def predict_batch(self, windows: np.ndarray, emotion: np.ndarray, neutral: np.ndarray) -> np.ndarray:
        """One batch: audio windows ``(B, W, D)``, emotion control vectors ``(B, E + I)`` (or one
        ``(E + I,)`` for all), the face's aligned neutral landmarks X ``(68, 2)`` -> ``(B, 68, 2)``
        landmarks ``X + δ`` (unsmoothed)."""
        w = np.asarray(windows, np.float32)
        if w.ndim != 3 or w.shape[1:] != (self.window, self.feature_dim):
            raise InputError(f"audio features are {' x '.join(map(str, w.shape[1:]))} per frame but the "
                             f"landmark model expects {self.window} x {self.feature_dim}")
        B = w.shape[0]
        neutral = self._check_neutral(neutral)
        e = np.asarray(emotion, np.float32)
        if e.ndim == 1:
            e = np.broadcast_to(e, (B, e.shape[0]))
        if e.shape != (B, self.emotion_dim):
            raise InputError(f"emotion vector must be ({self.emotion_dim},) or ({B}, {self.emotion_dim}), "
                             f"got {np.asarray(emotion).shape}")
        x_in = self._template if self.graph_input == "template" else neutral
        X = torch.from_numpy(x_in).to(self.device)
        audio = torch.from_numpy(np.ascontiguousarray(w)).to(self.device)
        emo = torch.from_numpy(np.ascontiguousarray(e)).to(self.device)
        out = self.G(audio, emo, X[None].expand(B, -1, -1))["landmarks"].float().cpu().numpy()
        if self.graph_input == "template":  # G_L moved the template: put that motion on this face
            out = neutral[None] + (out - self._template[None])
        return out

    def predict(self, features, emotion: np.ndarray, neutral: np.ndarray, batch_size: int = DEFAULT_BATCH,
                progress: bool = False) -> np.ndarray:
        """G_L over a whole clip. ``features``: :class:`AudioFeatures` or ``(T, W, D)`` windows;
        ``emotion``: ``(E + I,)`` or per frame ``(T, E + I)``. Returns ``(T, 68, 2)`` float32."""
        if not isinstance(features, (AudioFeatures, ArrayFeatures)):
            features = ArrayFeatures(features)
        T = len(features)
        emo = np.asarray(emotion, np.float32)
        if emo.shape[-1:] != (self.emotion_dim,) or emo.ndim not in (1, 2) or (emo.ndim == 2 and emo.shape[0] != T):
            raise InputError(f"emotion vector must be ({self.emotion_dim},) or ({T}, {self.emotion_dim}), "
                             f"got {emo.shape}")
        neutral = self._check_neutral(neutral)
        out = np.empty((T, 68, 2), np.float32)
        bar = progress_bar(T, progress, "landmarks")
        try:
            for a, b, windows in features.batches(batch_size):
                out[a:b] = self.predict_batch(windows, emo if emo.ndim == 1 else emo[a:b], neutral)
                bar.update(b - a)
        finally:
            bar.close()
        return out


def smooth_landmarks(landmarks: np.ndarray, window: int = 5, order: int = 2) -> np.ndarray:
    """Savitzky-Golay smoothing along time (removes frame-to-frame jitter, keeps mouth closures);
    ``window <= 1`` leaves the landmarks as they are."""
    lm = np.asarray(landmarks, np.float32)
    if window <= 1 or len(lm) < 3:
        return lm
    return savgol_smooth(lm, window, order)


def add_blinks(landmarks: np.ndarray, fps: float = 30.0, seed: int = 0, rate: float = 0.3
               ) -> tuple[np.ndarray, np.ndarray]:
    """Spontaneous blinks on canonical landmarks ``(T, 68, 2)`` at ``rate`` per second (seeded);
    returns ``(landmarks with blinks, closure (T,))``."""
    lm = np.asarray(landmarks, np.float32)
    T = len(lm)
    onsets = blink_onsets(T / float(fps), np.random.default_rng(seed), rate=rate)
    closure = blink_track(onsets, T, fps)
    return apply_blink(lm, closure).astype(np.float32), closure.astype(np.float32)


def animate(landmarks: np.ndarray, fps: float, blink: bool = True, seed: int = 0, smooth_window: int = 5
            ) -> tuple[np.ndarray, np.ndarray]:
    """Temporal smoothing then spontaneous blinks: ``(landmarks (T, 68, 2), blink closure (T,))``."""
    lm = smooth_landmarks(landmarks, smooth_window)
    if blink:
        return add_blinks(lm, fps, seed)
    return lm, np.zeros(len(lm), np.float32)
