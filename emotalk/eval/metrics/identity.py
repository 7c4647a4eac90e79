"""Identity preservation: CSIM, the cosine similarity between identity embeddings of every generated
frame and of the identity photo the video was generated from, averaged over all frames of all videos.

- ``"csim"`` -> **CSIM**: ArcFace (insightface ``arcface_torch`` IResNet-100/50, :mod:`emotalk.models.arcface`)
  as in the paper. Faces are aligned to ArcFace's 112x112 5-point template (eye centres, nose tip and mouth
  corners taken from dlib's 68 landmarks) with a similarity transform. Weights (a plain state dict such as
  ``ms1mv3_arcface_r100_fp16/backbone.pth``) come from ``metrics.arcface_weights``; the depth is read from
  the weights unless ``metrics.arcface_arch`` says otherwise.
- ``"csim_dlib"`` -> **CSIM-dlib**: offline default, dlib's 128-D face-recognition embedding. Same
  definition, different embedding, so not comparable with ArcFace CSIM.

Frames where no face is found are skipped (counted in ``details``).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from emotalk.eval.detectors import ARCFACE_FILE, get_feature_detector
from emotalk.eval.face_features import identity_landmarks, sample_dlib_embeddings, sample_landmarks
from emotalk.eval.feature_store import Side
from emotalk.eval.metrics.base import (MetricOptions, MetricResult, VideoSample, register_metric,
                                       require_weights)
from emotalk.models.arcface import ARCFACE_TEMPLATE_112


def cosine_similarity(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity of (N, D) and (D,) or (N, D) arrays."""
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    na = np.linalg.norm(a, axis=-1)
    nb = np.linalg.norm(b, axis=-1)
    return (a * b).sum(-1) / np.maximum(na * nb, 1e-12)


# --- ArcFace ---------------------------------------------------------------------------------------------

def five_points(landmarks68: np.ndarray) -> np.ndarray:
    """(..., 68, 2) -> (..., 5, 2): image-left eye centre, image-right eye centre, nose tip, mouth corners."""
    p = np.asarray(landmarks68, np.float64)
    return np.stack([p[..., 36:42, :].mean(-2), p[..., 42:48, :].mean(-2), p[..., 30, :], p[..., 48, :],
                     p[..., 54, :]], axis=-2)


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """2x3 least-squares similarity transform src -> dst (Umeyama 1991, as skimage's SimilarityTransform)."""
    src, dst = np.asarray(src, np.float64), np.asarray(dst, np.float64)
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s0, d0 = src - mu_s, dst - mu_d
    cov = d0.T @ s0 / len(src)
    u, sv, vt = np.linalg.svd(cov)
    d = np.ones(2)
    if np.linalg.det(cov) < 0:
        d[-1] = -1
    r = u @ np.diag(d) @ vt
    var = (s0 ** 2).sum() / len(src)
    scale = (sv * d).sum() / var if var > 0 else 1.0
    m = np.zeros((2, 3))
    m[:, :2] = scale * r
    m[:, 2] = mu_d - scale * r @ mu_s
    return m


def align_arcface(image: np.ndarray, landmarks68: np.ndarray, size: int = 112) -> np.ndarray:
    """Similarity-warp a face onto ArcFace's template; returns (size, size, 3) uint8 RGB."""
    import cv2

    dst = np.asarray(ARCFACE_TEMPLATE_112, np.float64) * (size / 112.0)
    m = similarity_transform(five_points(landmarks68), dst)
    return cv2.warpAffine(np.ascontiguousarray(image), m, (size, size), borderValue=0.0)


def load_arcface(opts: MetricOptions):
    """The ArcFace backbone from ``metrics.arcface_weights`` (cached by the detector getter)."""
    path = require_weights(opts, "arcface_weights", ARCFACE_FILE, "CSIM (ArcFace)")
    return get_feature_detector("arcface", path, opts.torch_device(), arch=opts.arcface_arch)


@torch.no_grad()
def arcface_embeddings(frames: np.ndarray, landmarks: np.ndarray, model, device, batch_size: int = 32) -> np.ndarray:
    """(T, 512) embeddings of aligned faces (NaN rows where landmarks are missing)."""
    out = np.full((len(frames), 512), np.nan)
    ok = [t for t in range(len(frames)) if np.isfinite(landmarks[t]).all()]
    for i in range(0, len(ok), batch_size):
        idx = ok[i:i + batch_size]
        crops = np.stack([align_arcface(frames[t], landmarks[t]) for t in idx])
        x = torch.from_numpy(crops).to(device).permute(0, 3, 1, 2).float()
        x = (x / 255.0 - 0.5) / 0.5
        out[idx] = model(x).double().cpu().numpy()
    return out


# --- registered metrics ------------------------------------------------------------------------------

def _csim_result(display: str, samples: Sequence[VideoSample], sims: list[np.ndarray], extra: dict) -> MetricResult:
    per_video, values, skipped = {}, [], 0
    for i, (s, v) in enumerate(zip(samples, sims)):
        ok = np.isfinite(v)
        skipped += int((~ok).sum())
        values.append(v[ok])
        per_video[s.name or str(i)] = float(v[ok].mean()) if ok.any() else None
    allv = np.concatenate(values)
    value = float(allv.mean()) if allv.size else float("nan")
    return MetricResult(display, value, {"per_video": per_video, "frames": int(allv.size),
                                         "skipped_frames": skipped, **extra})


@register_metric("csim", display="CSIM", needs=("generated", "identity"), weights="arcface_weights")
def csim_arcface(samples: Sequence[VideoSample], opts: MetricOptions) -> MetricResult:
    """Cosine similarity of ArcFace embeddings: generated frames vs the identity photo."""
    model = load_arcface(opts)
    device = opts.torch_device()
    sims = []
    for s in samples:
        ref = arcface_embeddings(s.identity[None], identity_landmarks(s, opts), model, device)[0]
        k = opts.embedding_stride
        gen = arcface_embeddings(s.generated[::k], sample_landmarks(s, Side.GENERATED, opts)[::k], model, device,
                                 opts.batch_size)
        sims.append(cosine_similarity(gen, ref))
    return _csim_result("CSIM", samples, sims, {"embedding": "arcface"})


@register_metric("csim_dlib", display="CSIM-dlib", needs=("generated", "identity"))
def csim_dlib(samples: Sequence[VideoSample], opts: MetricOptions) -> MetricResult:
    """Cosine similarity of dlib 128-D face embeddings: generated frames vs the identity photo (offline)."""
    sims = []
    for s in samples:
        ref = sample_dlib_embeddings(s, Side.IDENTITY, opts)[0]
        gen = sample_dlib_embeddings(s, Side.GENERATED, opts)
        sims.append(cosine_similarity(gen, ref))
    return _csim_result("CSIM-dlib", samples, sims, {"embedding": "dlib_face_recognition_resnet_model_v1"})
