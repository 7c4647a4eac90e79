"""Lip sync with SyncNet: LSE-C and LSE-D (``"lse_c"`` -> LSE-C, ``"lse_d"`` -> LSE-D; weights
``syncnet_v2.model`` from ``metrics.syncnet_weights``), following ``joonson/syncnet_python``
(``run_pipeline.py`` + ``SyncNetInstance.evaluate``) step by step:

1. video resampled to 25 fps with the frames ``ffmpeg -r 25`` keeps (:func:`ffmpeg_indices`: syncnet_python
   converts every video that way), audio to 16 kHz;
2. a face box per frame (here dlib's detector instead of S3FD; missing frames interpolated), the box centre
   and half-size median-filtered over 13 frames, a square crop of 2.8 half-sizes reaching down past the
   chin (``crop_scale`` 0.4, padding value 110), resized to 224x224, BGR, raw 0..255;
3. MFCC exactly as ``python_speech_features.mfcc`` with its defaults (:func:`emotalk.eval.audio.mfcc`) on
   int16-scale samples, 100 Hz, so video frame ``i`` pairs with MFCC columns ``4i .. 4i + 20``;
4. embeddings of every 5-frame window, then for each window ``i`` and shift ``j - vshift`` the distance
   ``|| v_i - a_{i + j - vshift} ||`` (audio embeddings zero-padded at the ends, as the reference does);
5. ``mdist`` = mean over windows of those distances, per shift; **LSE-D** = ``min(mdist)``;
   **LSE-C** = ``median(mdist) - min(mdist)``; offset = ``vshift - argmin`` (frames).

The dataset values are means over videos (as Wav2Lip's evaluation scripts average them).

**Sign convention**: a positive offset ``k`` means the video lags the audio by ``k`` frames (the mouth
movement for the sound at frame ``t`` appears at frame ``t + k``); 0 is in sync. This is syncnet_python's
"AV offset", and the offline score (:mod:`emotalk.eval.metrics.av_sync`) uses the same.
"""
from __future__ import annotations

import functools
import math
from typing import Sequence

import numpy as np
import torch

from emotalk.data.io.media import ffmpeg_exe
from emotalk.errors import DataError
from emotalk.eval.audio import audio_as_float, audio_as_int16_scale, mfcc, resample_audio
from emotalk.eval.detectors import SYNCNET_FILE, get_feature_detector
from emotalk.eval.face_features import sample_boxes
from emotalk.eval.feature_store import Feature, Side
from emotalk.eval.metrics.base import (MetricOptions, MetricResult, VideoSample, register_metric,
                                       require_weights)
from emotalk.models.syncnet import SyncNet

SYNCNET_FPS = 25.0
SYNCNET_SR = 16000
CROP_SCALE = 0.4
CROP_SIZE = 224


# --- video ------------------------------------------------------------------------------------------------

def resample_indices(num_frames: int, fps: float, target: float = SYNCNET_FPS) -> np.ndarray:
    """Frame indices of a ``num_frames`` video at ``fps`` shown at ``target`` fps (nearest frame in time).
    An approximation of what ffmpeg does; :func:`ffmpeg_indices` is ffmpeg's own choice."""
    if abs(fps - target) < 1e-6:
        return np.arange(num_frames)
    n_out = int(math.floor(num_frames * target / fps + 1e-6))
    return np.clip(np.round(np.arange(n_out) * fps / target).astype(int), 0, num_frames - 1)


@functools.lru_cache(maxsize=64)
def _ffmpeg_indices(num_frames: int, fps: float, target: float) -> tuple[int, ...]:
    import subprocess

    # frame k carries its own index in two grey pixels (high, low byte); rawvideo in and out is lossless
    ids = np.arange(num_frames)
    frames = np.stack([ids >> 8, ids & 255], 1).astype(np.uint8)
    cmd = [ffmpeg_exe(), "-v", "error", "-f", "rawvideo", "-pix_fmt", "gray", "-s", "2x1", "-r", repr(float(fps)),
           "-i", "-", "-r", repr(float(target)), "-f", "rawvideo", "-pix_fmt", "gray", "-"]
    try:
        out = subprocess.run(cmd, input=frames.tobytes(), capture_output=True, check=True, timeout=60).stdout
    except (subprocess.SubprocessError, OSError) as e:
        raise DataError(f"ffmpeg could not resample a {fps:g} fps video to {target:g} fps for SyncNet ({e})") from None
    got = np.frombuffer(out, np.uint8).reshape(-1, 2).astype(int)
    return tuple(int(i) for i in np.minimum(got[:, 0] * 256 + got[:, 1], num_frames - 1))


def ffmpeg_indices(num_frames: int, fps: float, target: float = SYNCNET_FPS) -> np.ndarray:
    """The frames ``ffmpeg -i VIDEO -r 25 ...`` keeps of a ``num_frames`` video at ``fps`` (drops, duplicates
    and the length as the installed ffmpeg decides): syncnet_python's ``run_pipeline.py`` converts every
    video with exactly that option, so SyncNet here sees the same frames. Computed once per (length, fps)
    by running ffmpeg on a tiny video whose frames carry their own index."""
    if abs(fps - target) < 1e-6:
        return np.arange(num_frames)
    return np.asarray(_ffmpeg_indices(int(num_frames), float(fps), float(target)), dtype=int)


def interpolate_boxes(boxes: np.ndarray) -> np.ndarray:
    """Fill NaN rows of (T, 4) boxes by linear interpolation (constant at the ends)."""
    b = np.asarray(boxes, np.float64).copy()
    ok = np.isfinite(b).all(1)
    if not ok.any():
        raise DataError("no face found in any frame")
    t = np.arange(len(b))
    for k in range(4):
        b[:, k] = np.interp(t, t[ok], b[ok, k])
    return b


def syncnet_crops(frames_rgb: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """(T, 224, 224, 3) BGR uint8 face crops the way syncnet_python's ``crop_video`` cuts them."""
    import cv2
    from scipy.signal import medfilt

    b = interpolate_boxes(boxes)
    s = np.maximum(b[:, 3] - b[:, 1], b[:, 2] - b[:, 0]) / 2
    y = (b[:, 1] + b[:, 3]) / 2
    x = (b[:, 0] + b[:, 2]) / 2
    k = min(13, len(b) if len(b) % 2 else len(b) - 1)
    if k >= 3:
        s, x, y = medfilt(s, kernel_size=k), medfilt(x, kernel_size=k), medfilt(y, kernel_size=k)
    out = np.empty((len(frames_rgb), CROP_SIZE, CROP_SIZE, 3), np.uint8)
    cs = CROP_SCALE
    for i, frame in enumerate(frames_rgb):
        bs = s[i]
        bsi = int(bs * (1 + 2 * cs))
        img = np.pad(np.ascontiguousarray(frame[..., ::-1]), ((bsi, bsi), (bsi, bsi), (0, 0)), "constant",
                     constant_values=(110, 110))
        my, mx = y[i] + bsi, x[i] + bsi
        face = img[int(my - bs):int(my + bs * (1 + 2 * cs)), int(mx - bs * (1 + cs)):int(mx + bs * (1 + cs))]
        out[i] = cv2.resize(face, (CROP_SIZE, CROP_SIZE))
    return out


# --- offset search ------------------------------------------------------------------------------------

def calc_pdist(feat_video: torch.Tensor, feat_audio: torch.Tensor, vshift: int) -> torch.Tensor:
    """(T, 2 vshift + 1) distances ``|| v_i - a_{i + j - vshift} ||`` (syncnet_python's ``calc_pdist``:
    audio features zero-padded by ``vshift`` at both ends, ``pairwise_distance`` with its eps)."""
    win = 2 * vshift + 1
    padded = torch.nn.functional.pad(feat_audio, (0, 0, vshift, vshift))
    windows = padded.unfold(0, win, 1).permute(0, 2, 1)  # (T, win, D)
    windows = windows[: feat_video.shape[0]]
    return torch.nn.functional.pairwise_distance(feat_video[:, None, :].expand_as(windows), windows, eps=1e-6)


def sync_from_dists(dists: torch.Tensor | np.ndarray, vshift: int) -> tuple[int, float, float]:
    """(offset, confidence = LSE-C, min distance = LSE-D) from (T, 2 vshift + 1) distances."""
    d = torch.as_tensor(dists, dtype=torch.float64)
    mdist = d.mean(0)
    minval, minidx = torch.min(mdist, 0)
    offset = vshift - int(minidx)
    conf = float(torch.median(mdist) - minval)
    return offset, conf, float(minval)


# --- SyncNet ------------------------------------------------------------------------------------------

def load_syncnet(opts: MetricOptions) -> SyncNet:
    """SyncNet from ``metrics.syncnet_weights`` (cached by the detector getter)."""
    path = require_weights(opts, "syncnet_weights", SYNCNET_FILE, "LSE-C / LSE-D (SyncNet)")
    return get_feature_detector("syncnet", path, opts.torch_device())


@torch.no_grad()
def syncnet_scores(model, crops_bgr: np.ndarray, audio16k: np.ndarray, vshift: int = 15, batch_size: int = 20,
                   device: str | torch.device = "cpu") -> dict:
    """LSE for 25-fps 224x224 BGR crops and 16 kHz audio (see module docstring, steps 3-5)."""
    cc = mfcc(audio_as_int16_scale(audio16k), SYNCNET_SR).T  # (13, N)
    min_length = min(len(crops_bgr), int(math.floor(len(audio16k) / 640)))
    last = min_length - 5
    if last < 1:
        raise DataError(f"video too short for SyncNet: {min_length} frames at 25 fps (needs at least 6)")
    im = torch.from_numpy(np.ascontiguousarray(crops_bgr)).permute(3, 0, 1, 2).float()  # (3, T, H, W)
    cct = torch.from_numpy(cc).float()
    im_feat, cc_feat = [], []
    for i in range(0, last, batch_size):
        idx = range(i, min(last, i + batch_size))
        im_in = torch.stack([im[:, v:v + 5] for v in idx]).to(device)
        cc_in = torch.stack([cct[None, :, v * 4:v * 4 + 20] for v in idx]).to(device)
        im_feat.append(model.forward_lip(im_in).cpu())
        cc_feat.append(model.forward_aud(cc_in).cpu())
    im_feat, cc_feat = torch.cat(im_feat), torch.cat(cc_feat)
    dists = calc_pdist(im_feat, cc_feat, vshift)
    offset, conf, dist = sync_from_dists(dists, vshift)
    return {"offset": offset, "lse_c": conf, "lse_d": dist, "windows": int(last)}


def _sample_syncnet(sample: VideoSample, opts: MetricOptions) -> dict:
    def compute() -> dict:
        model = load_syncnet(opts)
        idx = ffmpeg_indices(sample.num_frames, sample.fps)
        boxes = sample_boxes(sample, Side.GENERATED, opts)[idx]
        try:
            crops = syncnet_crops(sample.generated[idx], boxes)
            audio = resample_audio(audio_as_float(sample.audio), sample.sample_rate, SYNCNET_SR)
            return syncnet_scores(model, crops, audio, opts.sync_vshift, opts.batch_size, opts.torch_device())
        except DataError as e:
            return {"error": str(e)}

    return sample.features.get_or_compute(Side.GENERATED, Feature.SYNCNET, compute,
                                          params=(opts.sync_vshift, opts.syncnet_weights))


def _syncnet_metric(samples, opts, key: str, display: str) -> MetricResult:
    per_video, offsets, vals, failed = {}, {}, [], {}
    for i, s in enumerate(samples):
        name = s.name or str(i)
        r = _sample_syncnet(s, opts)
        if "error" in r:
            failed[name] = r["error"]
            continue
        per_video[name] = r[key]
        offsets[name] = r["offset"]
        vals.append(r[key])
    value = float(np.mean(vals)) if vals else float("nan")
    return MetricResult(display, value, {"per_video": per_video, "offsets": offsets, "failed": failed})


@register_metric("lse_c", display="LSE-C", needs=("generated", "audio"), weights="syncnet_weights")
def lse_c(samples: Sequence[VideoSample], opts: MetricOptions) -> MetricResult:
    """SyncNet confidence (median - min of the offset-averaged embedding distance), mean over videos."""
    return _syncnet_metric(samples, opts, "lse_c", "LSE-C")


@register_metric("lse_d", display="LSE-D", needs=("generated", "audio"), weights="syncnet_weights",
                 higher_is_better=False)
def lse_d(samples: Sequence[VideoSample], opts: MetricOptions) -> MetricResult:
    """SyncNet distance (min over offsets of the mean embedding distance), mean over videos."""
    return _syncnet_metric(samples, opts, "lse_d", "LSE-D")
