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

from emotalk.errors import CheckpointError, NoFaceError
from emotalk.eval.metrics.base import (MetricOptions, MetricResult, VideoSample, register_metric,
                                       require_weights)
from emotalk.utils.weights import load_state_strict

ARCFACE_FILE = "backbone.pth (insightface arcface_torch, e.g. ms1mv3_arcface_r100_fp16)"


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

    from emotalk.models.arcface import ARCFACE_TEMPLATE_112

    dst = np.asarray(ARCFACE_TEMPLATE_112, np.float64) * (size / 112.0)
    m = similarity_transform(five_points(landmarks68), dst)
    return cv2.warpAffine(np.ascontiguousarray(image), m, (size, size), borderValue=0.0)


_ARCFACE_CACHE: dict = {}


def build_arcface(state: dict, arch: str = "auto"):
    from emotalk.models.arcface import arch_from_state_dict, iresnet

    if arch == "auto":
        try:
            arch = arch_from_state_dict(state)
        except ValueError as e:
            raise CheckpointError(f"ArcFace weights: {e}; set metrics.arcface_arch") from None
    return load_state_strict(iresnet(arch), state, f"ArcFace weights do not fit {arch}",
                             "use an insightface arcface_torch backbone.pth or set metrics.arcface_arch").eval()


def load_arcface(opts: MetricOptions):
    from emotalk.eval.metrics.fid import load_torch_weights

    path = require_weights(opts, "arcface_weights", ARCFACE_FILE, "CSIM (ArcFace)")
    key = (str(path.resolve()), path.stat().st_mtime_ns, opts.arcface_arch)
    if key not in _ARCFACE_CACHE:
        _ARCFACE_CACHE.clear()
        _ARCFACE_CACHE[key] = build_arcface(load_torch_weights(path, "ArcFace"), opts.arcface_arch)
    return _ARCFACE_CACHE[key]


@torch.no_grad()
def arcface_embeddings(frames: np.ndarray, landmarks: np.ndarray, model, device, batch_size: int = 32) -> np.ndarray:
    """(T, 512) embeddings of aligned faces (NaN rows where landmarks are missing)."""
    model = model.to(device)
    out = np.full((len(frames), 512), np.nan)
    ok = [t for t in range(len(frames)) if np.isfinite(landmarks[t]).all()]
    for i in range(0, len(ok), batch_size):
        idx = ok[i:i + batch_size]
        crops = np.stack([align_arcface(frames[t], landmarks[t]) for t in idx])
        x = torch.from_numpy(crops).to(device).permute(0, 3, 1, 2).float()
        x = (x / 255.0 - 0.5) / 0.5
        out[idx] = model(x).double().cpu().numpy()
    return out


# --- identity-photo embedding helpers -------------------------------------------------------------------

def _identity_landmarks(sample: VideoSample, opts: MetricOptions) -> np.ndarray:
    from emotalk.eval.metrics.landmark_distance import detect_landmarks

    if "identity_landmarks" not in sample.cache:
        lms = detect_landmarks(sample.identity[None], opts.landmark_upsample)
        if not np.isfinite(lms).all():
            raise NoFaceError(f"{sample.name or 'sample'}: no face found in the identity photo, so CSIM cannot "
                              f"be computed; use a frontal photo where the face is clearly visible")
        sample.cache["identity_landmarks"] = lms
    return sample.cache["identity_landmarks"]


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
    from emotalk.eval.metrics.landmark_distance import sample_landmarks

    model = load_arcface(opts)
    device = opts.torch_device()
    sims = []
    for s in samples:
        ref = arcface_embeddings(s.identity[None], _identity_landmarks(s, opts), model, device)[0]
        k = opts.embedding_stride
        gen = arcface_embeddings(s.generated[::k], sample_landmarks(s, "generated", opts)[::k], model, device,
                                 opts.batch_size)
        sims.append(cosine_similarity(gen, ref))
    return _csim_result("CSIM", samples, sims, {"embedding": "arcface"})


@register_metric("csim_dlib", display="CSIM-dlib", needs=("generated", "identity"))
def csim_dlib(samples: Sequence[VideoSample], opts: MetricOptions) -> MetricResult:
    """Cosine similarity of dlib 128-D face embeddings: generated frames vs the identity photo (offline)."""
    from emotalk.eval.metrics.fid import _sample_dlib_embeddings, dlib_face_embeddings

    sims = []
    for s in samples:
        if "dlib_embed/identity" not in s.cache:
            s.cache["dlib_embed/identity"] = dlib_face_embeddings(s.identity[None], _identity_landmarks(s, opts))[0]
        gen = _sample_dlib_embeddings(s, "generated", opts)
        sims.append(cosine_similarity(gen, s.cache["dlib_embed/identity"]))
    return _csim_result("CSIM-dlib", samples, sims, {"embedding": "dlib_face_recognition_resnet_model_v1"})
