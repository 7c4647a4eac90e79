"""Fréchet distance between generated and ground-truth frames, with a pluggable feature extractor.

    d^2 = ||mu_1 - mu_2||^2 + Tr(S_1 + S_2 - 2 (S_1 S_2)^(1/2))

:func:`frechet_distance` computes the trace term without a general (non-symmetric) matrix square root:
``Tr((S_1 S_2)^(1/2)) = sum_i sqrt(lambda_i)`` with ``lambda_i`` the eigenvalues of the symmetric PSD matrix
``S_1^(1/2) S_2 S_1^(1/2)`` (same spectrum as ``S_1 S_2``). Only symmetric eigendecompositions in float64
are used and tiny negative eigenvalues from round-off are clipped to zero, so singular covariances (fewer
samples than feature dimensions) need no ad-hoc diagonal offset and there is no imaginary part to drop.

Extractors (each reported under its own name):

- ``"fid"`` -> **FID**: pytorch-fid's Inception v3 (:mod:`emotalk.models.inception`), 2048-D pool3 features of frames
  bilinearly resized to 299x299 and scaled to [-1, 1]. The weights ``pt_inception-2015-12-05-6726825d.pth``
  come from ``metrics.inception_weights``; they are a plain state dict loaded with ``weights_only=True``.
- ``"fid_dlib"`` -> **FID-dlib**: offline default, the 128-D dlib face-recognition embedding
  (``dlib_face_recognition_resnet_model_v1.dat`` from ``face-recognition-models``) of the face in each
  frame. Not comparable with Inception FID numbers, hence the different name.

Both are computed over all frames of all videos (generated set vs ground-truth set).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from emotalk.errors import DataError
from emotalk.eval.detectors import get_feature_detector
from emotalk.eval.face_features import sample_dlib_embeddings
from emotalk.eval.feature_store import Side
from emotalk.eval.metrics.base import (MetricOptions, MetricResult, VideoSample, register_metric,
                                       require_weights)
from emotalk.models.inception import INCEPTION_FILE, FIDInceptionV3


# --- the distance ----------------------------------------------------------------------------------------

def _sym_sqrt(a: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh((a + a.T) / 2)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2) (see module docstring)."""
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    s1, s2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape != (mu1.size, mu1.size):
        raise ValueError(f"mismatched statistics: mu {mu1.shape} vs {mu2.shape}, sigma {s1.shape} vs {s2.shape}")
    r1 = _sym_sqrt(s1)
    m = r1 @ s2 @ r1
    eig = np.linalg.eigvalsh((m + m.T) / 2)
    tr_covmean = float(np.sqrt(np.clip(eig, 0, None)).sum())
    diff = mu1 - mu2
    d = float(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * tr_covmean)
    return max(d, 0.0)


def feature_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    f = np.asarray(features, dtype=np.float64)
    if f.ndim != 2 or f.shape[0] < 2:
        raise DataError(f"FID needs at least 2 feature vectors, got array of shape {f.shape}")
    return f.mean(axis=0), np.cov(f, rowvar=False)


def frechet_distance_features(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between the Gaussians fitted to feature sets ``a`` (n1, d) and ``b`` (n2, d).

    With fewer samples than dimensions the covariances are never formed: for centred ``A``, ``B``,
    ``Tr((S_1 S_2)^(1/2)) = ||A B^T||_* / sqrt((n1 - 1)(n2 - 1))`` (the nonzero eigenvalues of ``S_1 S_2``
    are the squared singular values of ``A B^T`` over ``(n1 - 1)(n2 - 1)``), an (n1 x n2) SVD instead of
    two (d x d) eigendecompositions. Otherwise :func:`frechet_distance` on the statistics.
    """
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or min(len(a), len(b)) < 2:
        raise DataError(f"FID needs two sets of at least 2 feature vectors of equal size, got {a.shape} and "
                        f"{b.shape}")
    n1, n2, d = len(a), len(b), a.shape[1]
    if max(n1, n2) > d:
        return frechet_distance(*feature_statistics(a), *feature_statistics(b))
    mu1, mu2 = a.mean(0), b.mean(0)
    ac, bc = a - mu1, b - mu2
    nuclear = float(np.linalg.svd(ac @ bc.T, compute_uv=False).sum())
    tr1, tr2 = float((ac * ac).sum()) / (n1 - 1), float((bc * bc).sum()) / (n2 - 1)
    diff = mu1 - mu2
    return max(float(diff @ diff + tr1 + tr2 - 2 * nuclear / np.sqrt((n1 - 1) * (n2 - 1))), 0.0)


# --- feature extractors ---------------------------------------------------------------------------------

def load_inception(opts: MetricOptions) -> FIDInceptionV3:
    """The Inception network from ``metrics.inception_weights`` (cached by the detector getter)."""
    path = require_weights(opts, "inception_weights", INCEPTION_FILE, "FID (Inception)")
    return get_feature_detector("inception", path, opts.torch_device())


@torch.no_grad()
def inception_features(frames: np.ndarray, model: FIDInceptionV3, device, batch_size: int = 32) -> np.ndarray:
    out = []
    for i in range(0, len(frames), batch_size):
        x = torch.from_numpy(np.ascontiguousarray(frames[i:i + batch_size])).to(device)
        x = x.permute(0, 3, 1, 2).float() / 255.0
        out.append(model(x).double().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, 2048))


# --- registered metrics ------------------------------------------------------------------------------

def _fid_result(display: str, gen: list[np.ndarray], ref: list[np.ndarray], extra: dict) -> MetricResult:
    g = np.concatenate(gen)
    r = np.concatenate(ref)
    g_ok, r_ok = np.isfinite(g).all(1), np.isfinite(r).all(1)
    details = {"generated_frames": int(g_ok.sum()), "reference_frames": int(r_ok.sum()),
               "skipped_frames": int((~g_ok).sum() + (~r_ok).sum()), **extra}
    if g_ok.sum() < 2 or r_ok.sum() < 2:
        return MetricResult(display, float("nan"), details)
    return MetricResult(display, frechet_distance_features(g[g_ok], r[r_ok]), details)


@register_metric("fid", display="FID", needs=("generated", "ground_truth"), weights="inception_weights",
                 higher_is_better=False)
def fid_inception(samples: Sequence[VideoSample], opts: MetricOptions) -> MetricResult:
    """Fréchet Inception distance (pytorch-fid weights), generated vs ground-truth frames."""
    model = load_inception(opts)
    device = opts.torch_device()
    k = opts.embedding_stride
    gen = [inception_features(s.generated[::k], model, device, opts.batch_size) for s in samples]
    ref = [inception_features(s.ground_truth[::k], model, device, opts.batch_size) for s in samples]
    return _fid_result("FID", gen, ref, {"extractor": "inception-v3 pool3 (pytorch-fid)"})


@register_metric("fid_dlib", display="FID-dlib", needs=("generated", "ground_truth"), higher_is_better=False)
def fid_dlib(samples: Sequence[VideoSample], opts: MetricOptions) -> MetricResult:
    """Fréchet distance of dlib 128-D face embeddings, generated vs ground-truth frames (offline)."""
    gen = [sample_dlib_embeddings(s, Side.GENERATED, opts) for s in samples]
    ref = [sample_dlib_embeddings(s, Side.GROUND_TRUTH, opts) for s in samples]
    return _fid_result("FID-dlib", gen, ref, {"extractor": "dlib_face_recognition_resnet_model_v1 (128-D)"})
