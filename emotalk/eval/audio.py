"""Audio as the sync metrics read it: samples on the int16 or float scale, resampling, SyncNet's MFCC, and
the speech energy per video frame.

:func:`mfcc` reproduces ``python_speech_features.mfcc`` with its defaults exactly (SyncNet was trained on
those features; the test compares the two to 1e-12), so the package is not a dependency.
"""
from __future__ import annotations

import math

import numpy as np

from emotalk.errors import DataError


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
