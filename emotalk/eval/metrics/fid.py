"""Fréchet distance between generated and ground-truth frames, with a pluggable feature extractor.

    d^2 = ||mu_1 - mu_2||^2 + Tr(S_1 + S_2 - 2 (S_1 S_2)^(1/2))

:func:`frechet_distance` computes the trace term without a general (non-symmetric) matrix square root:
``Tr((S_1 S_2)^(1/2)) = sum_i sqrt(lambda_i)`` with ``lambda_i`` the eigenvalues of the symmetric PSD matrix
``S_1^(1/2) S_2 S_1^(1/2)`` (same spectrum as ``S_1 S_2``). Only symmetric eigendecompositions in float64
are used and tiny negative eigenvalues from round-off are clipped to zero, so singular covariances (fewer
samples than feature dimensions) need no ad-hoc diagonal offset and there is no imaginary part to drop.

Extractors (each reported under its own name):

- ``"fid"`` -> **FID**: pytorch-fid's Inception v3 (torchvision layout with the TF-FID patches: average
  pools that exclude padding, max pool in the last block, 1008 classes), 2048-D pool3 features of frames
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
import torch.nn.functional as F
from torch import nn

from emotalk.errors import CheckpointError, DataError
from emotalk.eval.metrics.base import (MetricOptions, MetricResult, VideoSample, register_metric,
                                       require_weights)
from emotalk.utils.weights import load_state_strict

INCEPTION_FILE = "pt_inception-2015-12-05-6726825d.pth"


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


# --- pytorch-fid compatible Inception -------------------------------------------------------------------

def _fid_blocks():
    from torchvision.models import inception as tv

    class FIDInceptionA(tv.InceptionA):
        def forward(self, x):
            b1 = self.branch1x1(x)
            b5 = self.branch5x5_2(self.branch5x5_1(x))
            b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
            bp = self.branch_pool(F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False))
            return torch.cat([b1, b5, b3, bp], 1)

    class FIDInceptionC(tv.InceptionC):
        def forward(self, x):
            b1 = self.branch1x1(x)
            b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
            bd = self.branch7x7dbl_1(x)
            for layer in (self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4, self.branch7x7dbl_5):
                bd = layer(bd)
            bp = self.branch_pool(F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False))
            return torch.cat([b1, b7, bd, bp], 1)

    class FIDInceptionE(tv.InceptionE):
        def __init__(self, in_channels: int, max_pool: bool):
            super().__init__(in_channels)
            self.max_pool = max_pool

        def forward(self, x):
            b1 = self.branch1x1(x)
            b3 = self.branch3x3_1(x)
            b3 = torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], 1)
            bd = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
            bd = torch.cat([self.branch3x3dbl_3a(bd), self.branch3x3dbl_3b(bd)], 1)
            if self.max_pool:  # the TF FID graph max-pools here (pytorch-fid's FIDInceptionE_2)
                pooled = F.max_pool2d(x, 3, stride=1, padding=1)
            else:
                pooled = F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)
            return torch.cat([b1, b3, bd, self.branch_pool(pooled)], 1)

    return FIDInceptionA, FIDInceptionC, FIDInceptionE


class FIDInceptionV3(nn.Module):
    """Inception v3 as pytorch-fid builds it; ``forward`` maps RGB in [0, 1] to 2048-D pool3 features.

    Parameter names equal torchvision's ``inception_v3`` (num_classes=1008, no aux head), so
    ``pt_inception-2015-12-05-6726825d.pth`` loads with ``strict=True``.
    """

    def __init__(self):
        super().__init__()
        from torchvision.models import inception_v3

        A, C, E = _fid_blocks()
        net = inception_v3(weights=None, num_classes=1008, aux_logits=False, init_weights=False)
        net.Mixed_5b = A(192, pool_features=32)
        net.Mixed_5c = A(256, pool_features=64)
        net.Mixed_5d = A(288, pool_features=64)
        net.Mixed_6b = C(768, channels_7x7=128)
        net.Mixed_6c = C(768, channels_7x7=160)
        net.Mixed_6d = C(768, channels_7x7=160)
        net.Mixed_6e = C(768, channels_7x7=192)
        net.Mixed_7b = E(1280, max_pool=False)
        net.Mixed_7c = E(2048, max_pool=True)
        self.net = net

    def load_fid_state_dict(self, state: dict, source: str = "Inception weights") -> None:
        load_state_strict(self.net, state, f"{source}: not pytorch-fid's Inception weights",
                          f"use {INCEPTION_FILE}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = self.net
        x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
        x = 2 * x - 1
        x = n.maxpool1(n.Conv2d_2b_3x3(n.Conv2d_2a_3x3(n.Conv2d_1a_3x3(x))))
        x = n.maxpool2(n.Conv2d_4a_3x3(n.Conv2d_3b_1x1(x)))
        for block in (n.Mixed_5b, n.Mixed_5c, n.Mixed_5d, n.Mixed_6a, n.Mixed_6b, n.Mixed_6c, n.Mixed_6d,
                      n.Mixed_6e, n.Mixed_7a, n.Mixed_7b, n.Mixed_7c):
            x = block(x)
        return F.adaptive_avg_pool2d(x, 1).flatten(1)


def load_torch_weights(path, what: str) -> dict:
    """A state dict from a ``.safetensors`` file or a torch file loaded with ``weights_only=True``."""
    from pathlib import Path

    path = Path(path)
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # unpickling refusals, corrupt files
        raise CheckpointError(f"{path}: cannot read {what} weights ({type(e).__name__}: "
                              f"{str(e).splitlines()[0] if str(e) else ''}); expected a state dict "
                              f"(torch.save(state_dict) or .safetensors)") from None
    for key in ("state_dict", "model", "net"):
        if isinstance(state, dict) and key in state and isinstance(state[key], dict):
            state = state[key]
    if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
        raise CheckpointError(f"{path}: {what} weights must be a mapping of parameter names to tensors")
    return {k[7:] if k.startswith("module.") else k: v for k, v in state.items()}


_INCEPTION_CACHE: dict = {}


def load_inception(opts: MetricOptions) -> FIDInceptionV3:
    path = require_weights(opts, "inception_weights", INCEPTION_FILE, "FID (Inception)")
    key = (str(path.resolve()), path.stat().st_mtime_ns)
    if key not in _INCEPTION_CACHE:
        model = FIDInceptionV3()
        state = load_torch_weights(path, "Inception (FID)")
        model.load_fid_state_dict(state, str(path))
        _INCEPTION_CACHE.clear()
        _INCEPTION_CACHE[key] = model.eval()
    return _INCEPTION_CACHE[key]


@torch.no_grad()
def inception_features(frames: np.ndarray, model: FIDInceptionV3, device, batch_size: int = 32) -> np.ndarray:
    model = model.to(device)
    out = []
    for i in range(0, len(frames), batch_size):
        x = torch.from_numpy(np.ascontiguousarray(frames[i:i + batch_size])).to(device)
        x = x.permute(0, 3, 1, 2).float() / 255.0
        out.append(model(x).double().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, 2048))


# --- dlib face embedding --------------------------------------------------------------------------------

_DLIB_FACEREC: dict = {}


def _dlib_facerec():
    if "model" not in _DLIB_FACEREC:
        import dlib

        from emotalk.data.face.detect import dlib_model_path

        _DLIB_FACEREC["model"] = dlib.face_recognition_model_v1(
            str(dlib_model_path("dlib_face_recognition_resnet_model_v1.dat")))
    return _DLIB_FACEREC["model"]


def dlib_face_embeddings(frames: np.ndarray, landmarks: np.ndarray | None = None, upsample: int = 1) -> np.ndarray:
    """(T, 128) dlib face-recognition embeddings (NaN rows where no face was found).

    ``landmarks`` (T, 68, 2) pixel coordinates are used when given; otherwise faces are detected.
    """
    import dlib

    from emotalk.eval.metrics.landmark_distance import detect_landmarks

    frames = np.asarray(frames)
    if landmarks is None:
        landmarks = detect_landmarks(frames, upsample)
    model = _dlib_facerec()
    out = np.full((len(frames), 128), np.nan)
    for t, (img, pts) in enumerate(zip(frames, landmarks)):
        if not np.isfinite(pts).all():
            continue
        x0, y0 = np.floor(pts.min(0)).astype(int)
        x1, y1 = np.ceil(pts.max(0)).astype(int)
        shape = dlib.full_object_detection(dlib.rectangle(int(x0), int(y0), int(x1), int(y1)),
                                           [dlib.point(int(round(x)), int(round(y))) for x, y in pts])
        out[t] = np.asarray(model.compute_face_descriptor(np.ascontiguousarray(img), shape), dtype=np.float64)
    return out


def _sample_dlib_embeddings(sample: VideoSample, which: str, opts: MetricOptions) -> np.ndarray:
    from emotalk.eval.metrics.landmark_distance import sample_landmarks

    key = f"dlib_embed/{which}/{opts.embedding_stride}"
    if key not in sample.cache:
        lms = sample_landmarks(sample, which, opts)
        k = opts.embedding_stride
        sample.cache[key] = dlib_face_embeddings(getattr(sample, which)[::k], lms[::k])
    return sample.cache[key]


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
    gen = [_sample_dlib_embeddings(s, "generated", opts) for s in samples]
    ref = [_sample_dlib_embeddings(s, "ground_truth", opts) for s in samples]
    return _fid_result("FID-dlib", gen, ref, {"extractor": "dlib_face_recognition_resnet_model_v1 (128-D)"})
