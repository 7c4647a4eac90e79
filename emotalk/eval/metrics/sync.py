"""Lip sync: SyncNet LSE-C / LSE-D (syncnet_python), and an offline audio-visual sync score.

**SyncNet** (``"lse_c"`` -> LSE-C, ``"lse_d"`` -> LSE-D; weights ``syncnet_v2.model`` from
``metrics.syncnet_weights``), following ``joonson/syncnet_python`` (``run_pipeline.py`` +
``SyncNetInstance.evaluate``) step by step:

1. video resampled to 25 fps, audio to 16 kHz;
2. a face box per frame (here dlib's detector instead of S3FD; missing frames interpolated), the box centre
   and half-size median-filtered over 13 frames, a square crop of 2.8 half-sizes reaching down past the
   chin (``crop_scale`` 0.4, padding value 110), resized to 224x224, BGR, raw 0..255;
3. MFCC exactly as ``python_speech_features.mfcc`` with its defaults (:func:`mfcc`) on int16-scale samples,
   100 Hz, so video frame ``i`` pairs with MFCC columns ``4i .. 4i + 20``;
4. embeddings of every 5-frame window, then for each window ``i`` and shift ``j - vshift`` the distance
   ``|| v_i - a_{i + j - vshift} ||`` (audio embeddings zero-padded at the ends, as the reference does);
5. ``mdist`` = mean over windows of those distances, per shift; **LSE-D** = ``min(mdist)``;
   **LSE-C** = ``median(mdist) - min(mdist)``; offset = ``vshift - argmin`` (frames, see below).

The dataset values are means over videos (as Wav2Lip's evaluation scripts average them).

**Offline default** (``"av_sync_conf"`` -> AV-sync-conf, ``"av_sync_offset"`` -> AV-sync-offset): the same
offset search over +-``vshift`` frames, but the "embeddings" are the mouth opening (inner-lip gap over the
outer-eye-corner distance, dlib landmarks) and the speech log-energy in each video frame's 1/fps window;
the score per shift is their Pearson correlation. AV-sync-conf = ``max - median`` of the correlation over
shifts (in [0, 2], larger = clearer sync), AV-sync-offset = the median over videos of the best shift.
Not comparable with SyncNet numbers, hence the different names.

**Sign convention** (both): a positive offset ``k`` means the video lags the audio by ``k`` frames (the
mouth movement for the sound at frame ``t`` appears at frame ``t + k``); 0 is in sync. This is
syncnet_python's "AV offset".
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch

from emotalk.errors import CheckpointError, DataError
from emotalk.eval.metrics.base import (MetricOptions, MetricResult, VideoSample, register_metric,
                                       require_weights)
from emotalk.utils.weights import load_state_strict

SYNCNET_FILE = "syncnet_v2.model"
SYNCNET_FPS = 25.0
SYNCNET_SR = 16000
CROP_SCALE = 0.4
CROP_SIZE = 224


# --- audio ------------------------------------------------------------------------------------------------

def _hz2mel(hz):
    return 2595 * np.log10(1 + hz / 700.0)


def _mel2hz(mel):
    return 700 * (10 ** (mel / 2595.0) - 1)


def _filterbanks(nfilt: int = 26, nfft: int = 512, samplerate: int = 16000) -> np.ndarray:
    melpoints = np.linspace(_hz2mel(0), _hz2mel(samplerate / 2), nfilt + 2)
    bins = np.floor((nfft + 1) * _mel2hz(melpoints) / samplerate)
    fb = np.zeros([nfilt, nfft // 2 + 1])
    for j in range(nfilt):
        for i in range(int(bins[j]), int(bins[j + 1])):
            fb[j, i] = (i - bins[j]) / (bins[j + 1] - bins[j])
        for i in range(int(bins[j + 1]), int(bins[j + 2])):
            fb[j, i] = (bins[j + 2] - i) / (bins[j + 2] - bins[j + 1])
    return fb


def mfcc(signal: np.ndarray, samplerate: int = 16000) -> np.ndarray:
    """(frames, 13) MFCC identical to ``python_speech_features.mfcc(signal, samplerate)`` (its defaults:
    25 ms windows every 10 ms, no window function, pre-emphasis 0.97, 26 mel filters, 512-point FFT,
    lifter 22, c0 replaced by the log frame energy)."""
    from scipy.fftpack import dct

    sig = np.asarray(signal, dtype=np.float64).reshape(-1)
    if sig.size == 0:
        raise DataError("cannot compute MFCC of empty audio")
    sig = np.append(sig[0], sig[1:] - 0.97 * sig[:-1])
    flen = int(math.floor(0.025 * samplerate + 0.5))
    fstep = int(math.floor(0.01 * samplerate + 0.5))
    n = 1 if len(sig) <= flen else 1 + int(math.ceil((1.0 * len(sig) - flen) / fstep))
    padded = np.concatenate([sig, np.zeros(int((n - 1) * fstep + flen) - len(sig))])
    idx = np.arange(flen)[None, :] + (np.arange(n) * fstep)[:, None]
    frames = padded[idx]
    pspec = 1.0 / 512 * np.square(np.absolute(np.fft.rfft(frames, 512)))
    energy = np.sum(pspec, 1)
    energy = np.where(energy == 0, np.finfo(float).eps, energy)
    feat = pspec @ _filterbanks(26, 512, samplerate).T
    feat = np.where(feat == 0, np.finfo(float).eps, feat)
    feat = dct(np.log(feat), type=2, axis=1, norm="ortho")[:, :13]
    feat = (1 + 11.0 * np.sin(np.pi * np.arange(13) / 22)) * feat
    feat[:, 0] = np.log(energy)
    return feat


def audio_as_int16_scale(audio: np.ndarray) -> np.ndarray:
    """Samples on the int16 scale, as ``scipy.io.wavfile.read`` of a 16-bit WAV gives them."""
    a = np.asarray(audio)
    if a.dtype == np.int16:
        return a.astype(np.float64)
    a = a.astype(np.float64)
    return np.clip(np.round(a * 32768.0), -32768, 32767)


def audio_as_float(audio: np.ndarray) -> np.ndarray:
    """float64 samples in [-1, 1] (int16 input is divided by 32768)."""
    a = np.asarray(audio)
    return a.astype(np.float64) / 32768.0 if a.dtype == np.int16 else a.astype(np.float64).reshape(-1)


def resample_audio(audio: np.ndarray, sr: int, target: int) -> np.ndarray:
    if sr == target:
        return np.asarray(audio)
    from math import gcd

    from scipy.signal import resample_poly

    g = gcd(int(sr), int(target))
    return resample_poly(np.asarray(audio, np.float64), target // g, int(sr) // g)


# --- video ------------------------------------------------------------------------------------------------

def resample_indices(num_frames: int, fps: float, target: float = SYNCNET_FPS) -> np.ndarray:
    """Frame indices of a ``num_frames`` video at ``fps`` shown at ``target`` fps (nearest frame)."""
    if abs(fps - target) < 1e-6:
        return np.arange(num_frames)
    n_out = int(math.floor(num_frames * target / fps + 1e-6))
    return np.clip(np.round(np.arange(n_out) * fps / target).astype(int), 0, num_frames - 1)


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

def _is_torchscript(path) -> bool:
    import zipfile

    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as z:
        names = z.namelist()
    return any(n.split("/", 1)[-1].startswith(("code/", "constants.pkl")) for n in names)


def load_syncnet_state(path) -> dict:
    """SyncNet parameters from ``path``: a state dict saved with ``torch.save`` (syncnet_python's
    ``syncnet_v2.model``; read with ``weights_only=True``), a ``.safetensors`` file, or a TorchScript
    archive (read with ``torch.jit.load``, of which only the tensors are kept)."""
    from emotalk.eval.metrics.fid import load_torch_weights

    if _is_torchscript(path):
        import warnings

        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated, still reads archives
                state = torch.jit.load(str(path), map_location="cpu").state_dict()
        except Exception as e:
            raise CheckpointError(f"{path}: unreadable TorchScript SyncNet ({type(e).__name__})") from None
    else:
        state = load_torch_weights(path, "SyncNet")
    out = {}
    for k, v in state.items():
        for prefix in ("__S__.", "module.", "S."):
            if k.startswith(prefix):
                k = k[len(prefix):]
        out[k] = v
    return out


_SYNCNET_CACHE: dict = {}


def build_syncnet(state: dict):
    from emotalk.models.syncnet import SyncNet

    return load_state_strict(SyncNet(), state, "SyncNet weights do not fit syncnet_python's S network",
                             f"use {SYNCNET_FILE}").eval()


def load_syncnet(opts: MetricOptions):
    path = require_weights(opts, "syncnet_weights", SYNCNET_FILE, "LSE-C / LSE-D (SyncNet)")
    key = (str(path.resolve()), path.stat().st_mtime_ns)
    if key not in _SYNCNET_CACHE:
        _SYNCNET_CACHE.clear()
        _SYNCNET_CACHE[key] = build_syncnet(load_syncnet_state(path))
    return _SYNCNET_CACHE[key]


@torch.no_grad()
def syncnet_scores(model, crops_bgr: np.ndarray, audio16k: np.ndarray, vshift: int = 15, batch_size: int = 20,
                   device: str | torch.device = "cpu") -> dict:
    """LSE for 25-fps 224x224 BGR crops and 16 kHz audio (see module docstring, steps 3-5)."""
    model = model.to(device).eval()
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


def _sample_syncnet(sample: VideoSample, opts: MetricOptions) -> dict | None:
    from emotalk.eval.metrics.landmark_distance import sample_boxes

    if "syncnet" in sample.cache:
        return sample.cache["syncnet"]
    model = load_syncnet(opts)
    idx = resample_indices(sample.num_frames, sample.fps)
    boxes = sample_boxes(sample, "generated", opts)[idx]
    try:
        crops = syncnet_crops(sample.generated[idx], boxes)
        audio = resample_audio(audio_as_float(sample.audio), sample.sample_rate, SYNCNET_SR)
        res = syncnet_scores(model, crops, audio, opts.sync_vshift, opts.batch_size, opts.torch_device())
    except DataError as e:
        res = {"error": str(e)}
    sample.cache["syncnet"] = res
    return res


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


# --- offline audio-visual sync ----------------------------------------------------------------------------

def frame_log_energy(audio: np.ndarray, sample_rate: int, fps: float, num_frames: int) -> np.ndarray:
    """(num_frames,) log RMS of the audio in each video frame's window ``[t/fps, (t+1)/fps)``."""
    a = audio_as_float(audio)
    edges = np.round(np.arange(num_frames + 1) * sample_rate / fps).astype(int)
    c = np.concatenate([[0.0], np.cumsum(a * a)])
    lo, hi = np.clip(edges[:-1], 0, len(a)), np.clip(edges[1:], 0, len(a))
    n = np.maximum(hi - lo, 1)
    power = (c[hi] - c[lo]) / n
    out = np.log(np.sqrt(power) + 1e-4)
    out[hi <= lo] = np.nan
    return out


def normalised_mouth_opening(landmarks: np.ndarray) -> np.ndarray:
    """(T,) inner-lip gap divided by the outer-eye-corner distance (NaN where landmarks are missing)."""
    from emotalk.models.face_graph import mouth_opening

    p = np.asarray(landmarks, np.float64)
    eye = np.linalg.norm(p[:, 45] - p[:, 36], axis=-1)
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
    from emotalk.eval.metrics.landmark_distance import sample_landmarks

    if "av_sync" not in sample.cache:
        lms = sample_landmarks(sample, "generated", opts)
        sample.cache["av_sync"] = av_sync(lms, sample.audio, sample.sample_rate, sample.fps, opts.sync_vshift)
    return sample.cache["av_sync"]


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
