"""Speech features for G_L (paper Fig. 2, "Audio feature extraction"), batch by batch.

The landmark checkpoint says which backend it was trained on (``feature_kind``, ``window``,
``feature_dim`` in its metadata). :class:`AudioFeatures` computes that backend's feature *stream* once
(a few MB even for long audio) and cuts per-frame windows out of it on demand with
:func:`emotalk.data.speech.features.frame_windows` - the same function preprocessing uses, so the windows
G_L sees at inference are exactly the ones it was trained on. Holding all ``T`` windows would cost
``W`` times the stream (about 100 MB for ten minutes of mel features); :meth:`AudioFeatures.batches`
hands them out ``batch_size`` frames at a time instead.

:class:`emotalk.inference.live_features.IncrementalFeatures` is the streaming counterpart (features
computed as the audio arrives, for :mod:`emotalk.inference.stream`).

Long audio is transformed in chunks (:func:`chunked_stream`) so the transient memory of the short-time
transform does not grow with the clip either.
"""
from __future__ import annotations

from typing import Iterator

import numpy as np

from emotalk.data.speech.features import (FEATURE_BACKENDS, SAMPLE_RATE, frame_windows, get_feature_backend,
                                          resample_stream)
from emotalk.errors import CheckpointError, DataError, InputError, MissingWeightsError
from emotalk.inference.speech import Speech

#: Backends whose stream step ``i`` depends only on the audio around ``i / rate`` s (a short-time
#: transform), so that long audio can be processed in chunks with identical results.
CHUNKABLE = ("mel",)
CHUNK_SECONDS = 30.0


def chunked_stream(backend, audio: np.ndarray, sr: int = SAMPLE_RATE, chunk_seconds: float = CHUNK_SECONDS,
                   margin_steps: int = 8) -> tuple[np.ndarray, float]:
    """``backend.stream`` over ``chunk_seconds`` pieces with ``margin_steps`` steps of real context on
    each side (dropped afterwards), so the transient memory of the transform (a 10-minute STFT is
    ~200 MB) does not grow with the audio length. Equal to the one-piece stream for short-time
    transforms whose window is shorter than the margin (log-mel: 25 ms window, 80 ms margin)."""
    rate = float(backend.rate)
    hop = sr / rate
    if abs(hop - round(hop)) > 1e-9:
        return backend.stream(audio, sr)
    hop = int(round(hop))
    n = len(audio)
    total = 1 + n // hop  # a centred short-time transform has one step every hop samples, plus one
    step = max(1, int(chunk_seconds * rate))
    margin = margin_steps * hop
    parts = []
    for s in range(0, total, step):
        e = min(s + step, total)
        a0 = max(s * hop - margin, 0)
        a1 = min(e * hop + margin, n)
        piece, _ = backend.stream(audio[a0:a1], sr)  # step k of the piece is global step a0 / hop + k
        first = s - a0 // hop
        parts.append(piece[first:first + (e - s)])
    stream = np.concatenate(parts, 0)
    if stream.shape[0] != total:  # not a centred short-time transform after all: do it in one piece
        return backend.stream(audio, sr)
    return stream, rate


class AudioFeatures:
    """A speech-feature stream cut into per-frame windows on demand: ``windows(a, b)`` equals
    ``extract_features(kind, audio, num_frames=T, fps=fps, window=W)[a:b]`` without holding all T
    windows."""

    def __init__(self, kind: str, speech: Speech | None, num_frames: int, fps: float = 30.0,
                 window: int | None = None, source=None):
        key = str(kind).strip().lower()
        if key not in FEATURE_BACKENDS:
            raise CheckpointError(
                f"the landmark checkpoint was trained on {kind!r} speech features, which cannot be computed "
                f"from audio at inference (available: {', '.join(FEATURE_BACKENDS)}); train G_L on data "
                f"preprocessed with --features phonemes, mel or deepspeech")
        backend = get_feature_backend(key)
        self.kind, self.fps, self.num_frames = key, float(fps), int(num_frames)
        self.window = int(window or backend.default_window)
        audio = None if speech is None else speech.samples
        sr = SAMPLE_RATE if speech is None else speech.sample_rate
        try:
            if key in CHUNKABLE and audio is not None and len(audio) > 2 * CHUNK_SECONDS * sr:
                stream, rate = chunked_stream(backend, audio, sr)
            else:
                stream, rate = backend.stream(audio, sr, source=source)  # deepspeech: audio used with a .pb
        except MissingWeightsError as e:
            if key == "deepspeech":
                raise MissingWeightsError(
                    "this landmark checkpoint was trained on DeepSpeech features: pass the frozen graph with "
                    "--deepspeech-model deepspeech-0_1_0-b90017e8.pb (GenerateOptions.feature_source = its "
                    "path), or the speech's precomputed DeepSpeech logits with --audio-features FILE, or use a "
                    "G_L checkpoint trained on phonemes or mel features") from None
            raise e
        if backend.video_rate:
            stream = resample_stream(stream, rate, self.fps, self.num_frames)
            rate = self.fps
        self.stream = np.ascontiguousarray(stream, np.float32)
        if not np.isfinite(self.stream).all():
            raise DataError(f"{key} features contain NaN or infinite values")
        self.rate = float(rate)
        self.dim = int(self.stream.shape[1])
        self.pad = np.broadcast_to(np.asarray(backend.pad_vector(), np.float32), (self.dim,))

    def __len__(self) -> int:
        return self.num_frames

    def windows(self, start: int, stop: int) -> np.ndarray:
        """``(stop - start, W, D)`` float32, the windows of frames ``start .. stop - 1``."""
        return frame_windows(self.stream, self.rate, self.num_frames, self.fps, self.window, self.pad,
                             start=start, stop=stop)

    def batches(self, batch_size: int) -> Iterator[tuple[int, int, np.ndarray]]:
        """``(start, stop, windows)`` for consecutive batches of at most ``batch_size`` frames."""
        for a in range(0, self.num_frames, batch_size):
            b = min(a + batch_size, self.num_frames)
            yield a, b, self.windows(a, b)

    def all(self) -> np.ndarray:
        return self.windows(0, self.num_frames)


class ArrayFeatures:
    """Precomputed per-frame windows ``(T, W, D)`` (e.g. a test clip's stored training features) behind
    the same interface as :class:`AudioFeatures`."""

    def __init__(self, windows: np.ndarray):
        arr = np.asarray(windows, np.float32)
        if arr.ndim != 3:
            raise InputError(f"audio features must be (T, W, D), got {arr.shape}")
        self.array = arr
        self.num_frames, self.window, self.dim = (int(v) for v in arr.shape)

    def __len__(self) -> int:
        return self.num_frames

    def windows(self, start: int, stop: int) -> np.ndarray:
        return self.array[start:stop]

    def batches(self, batch_size: int) -> Iterator[tuple[int, int, np.ndarray]]:
        for a in range(0, self.num_frames, batch_size):
            b = min(a + batch_size, self.num_frames)
            yield a, b, self.array[a:b]

    def all(self) -> np.ndarray:
        return self.array
