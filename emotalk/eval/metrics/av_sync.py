"""An offline audio-visual sync score that needs no weights (``"av_sync_conf"`` -> AV-sync-conf,
``"av_sync_offset"`` -> AV-sync-offset).

The same offset search as SyncNet's LSE (:mod:`emotalk.eval.metrics.lse`) over +-``vshift`` frames, but
the two "embeddings" are one number per video frame each: the mouth opening (inner-lip gap over the
outer-eye-corner distance, dlib landmarks) and the speech log-energy in the frame's 1/fps window. The score
per shift is their Pearson correlation. AV-sync-conf = ``max - median`` of the correlation over shifts (in
[0, 2], larger = clearer sync); AV-sync-offset = the median over videos of the best shift. Not comparable
with SyncNet numbers, hence the different names.

Sign convention as SyncNet's: a positive offset ``k`` means the video lags the audio by ``k`` frames (the
mouth opens for the sound of frame ``t`` at frame ``t + k``).
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from emotalk.eval.audio import frame_log_energy
from emotalk.eval.face_features import sample_landmarks
from emotalk.eval.feature_store import Feature, Side
from emotalk.eval.metrics.base import MetricOptions, MetricResult, VideoSample, register_metric
from emotalk.models.face_graph import eye_distance, mouth_opening


def normalised_mouth_opening(landmarks: np.ndarray) -> np.ndarray:
    """(T,) inner-lip gap divided by the outer-eye-corner distance (NaN where landmarks are missing)."""
    p = np.asarray(landmarks, np.float64)
    eye = eye_distance(p)
    return mouth_opening(p) / np.where(eye > 0, eye, np.nan)


def shifted_correlation(video_signal: np.ndarray, audio_signal: np.ndarray, vshift: int) -> np.ndarray:
    """(2 vshift + 1,) Pearson correlation of ``video[t]`` with ``audio[t - o]`` for ``o = -vshift..vshift``
    over the frames where both exist (NaN where fewer than half the frames overlap)."""
    v = np.asarray(video_signal, np.float64)
    a = np.asarray(audio_signal, np.float64)
    T = min(len(v), len(a))
    v, a = v[:T], a[:T]
    out = np.full(2 * vshift + 1, np.nan)
    for j, o in enumerate(range(-vshift, vshift + 1)):
        t = np.arange(max(0, o), min(T, T + o))
        if len(t) == 0:
            continue
        x, y = v[t], a[t - o]
        ok = np.isfinite(x) & np.isfinite(y)
        if ok.sum() < max(3, T // 2):
            continue
        x, y = x[ok] - x[ok].mean(), y[ok] - y[ok].mean()
        den = math.sqrt(float((x * x).sum() * (y * y).sum()))
        if den > 0:
            out[j] = float((x * y).sum() / den)
    return out


def av_sync(landmarks: np.ndarray, audio: np.ndarray, sample_rate: int, fps: float, vshift: int = 15) -> dict:
    """Offline sync of one video: ``{"offset", "conf", "corr"}`` (see module docstring)."""
    mouth = normalised_mouth_opening(landmarks)
    energy = frame_log_energy(audio, sample_rate, fps, len(mouth))
    corr = shifted_correlation(mouth, energy, vshift)
    if not np.isfinite(corr).any():
        return {"offset": None, "conf": float("nan"), "corr": corr.tolist()}
    best = int(np.nanargmax(corr))
    return {"offset": best - vshift, "conf": float(np.nanmax(corr) - np.nanmedian(corr)),
            "corr": corr.tolist()}


def _sample_av_sync(sample: VideoSample, opts: MetricOptions) -> dict:
    return sample.features.get_or_compute(
        Side.GENERATED, Feature.AV_SYNC, params=opts.sync_vshift,
        compute=lambda: av_sync(sample_landmarks(sample, Side.GENERATED, opts), sample.audio, sample.sample_rate,
                                sample.fps, opts.sync_vshift))


@register_metric("av_sync_conf", display="AV-sync-conf", needs=("generated", "audio"))
def av_sync_conf(samples: Sequence[VideoSample], opts: MetricOptions) -> MetricResult:
    """Offline sync confidence: max - median over shifts of corr(mouth opening, speech energy)."""
    res = [_sample_av_sync(s, opts) for s in samples]
    per_video = {s.name or str(i): r["conf"] for i, (s, r) in enumerate(zip(samples, res))}
    vals = [r["conf"] for r in res if np.isfinite(r["conf"])]
    return MetricResult("AV-sync-conf", float(np.mean(vals)) if vals else float("nan"),
                        {"per_video": per_video, "offsets": {s.name or str(i): r["offset"]
                                                             for i, (s, r) in enumerate(zip(samples, res))}})


@register_metric("av_sync_offset", display="AV-sync-offset", needs=("generated", "audio"), higher_is_better=False)
def av_sync_offset(samples: Sequence[VideoSample], opts: MetricOptions) -> MetricResult:
    """Offline sync offset in frames (positive: video lags audio), median over videos."""
    res = [_sample_av_sync(s, opts) for s in samples]
    per_video = {s.name or str(i): r["offset"] for i, (s, r) in enumerate(zip(samples, res))}
    offs = [r["offset"] for r in res if r["offset"] is not None]
    return MetricResult("AV-sync-offset", float(np.median(offs)) if offs else float("nan"),
                        {"per_video": per_video, "mean_abs_offset": float(np.mean(np.abs(offs))) if offs else None})
