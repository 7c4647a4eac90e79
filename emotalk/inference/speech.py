"""Speech input (paper Fig. 2, "Audio A"): any audio -> 16 kHz mono float32 samples.

:func:`load_speech` is the single entry point for audio at inference: a file in any format the bundled
ffmpeg decodes, an array at any sample rate, an ``(array, rate)`` pair, or an already loaded
:class:`Speech`. The number of video frames of a clip follows from its length alone
(:meth:`Speech.num_frames`, ``T = round(seconds * fps)``), so the landmark, renderer and video stages
all agree on ``T`` without looking at each other.

:func:`check_output_path` lives here too because it belongs to the same "validate the user's files
before any work" step: a bad ``--out`` must fail before minutes of computation, not after.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from emotalk.data.io import media
from emotalk.data.speech.features import SAMPLE_RATE, _mono16k
from emotalk.errors import DataError, InputError

#: 20-ms RMS level (dBFS) that some part of the audio must exceed to count as containing speech.
SPEECH_LEVEL_DB = -40.0


@dataclass
class Speech:
    """Decoded audio: float32 mono samples at 16 kHz, plus the file it came from (muxed into the mp4)."""

    samples: np.ndarray
    sample_rate: int = SAMPLE_RATE
    path: Path | None = None

    @property
    def seconds(self) -> float:
        return len(self.samples) / float(self.sample_rate)

    def num_frames(self, fps: float) -> int:
        """Video frames of this clip at ``fps`` (at least one)."""
        return max(1, int(round(len(self.samples) / float(self.sample_rate) * fps)))

    def has_speech(self, level_db: float = SPEECH_LEVEL_DB) -> bool:
        """Whether any 20-ms window is louder than ``level_db`` dBFS (RMS)."""
        a = np.asarray(self.samples, np.float32)
        n = max(1, int(self.sample_rate * 0.02))
        k = len(a) // n
        if k == 0:
            rms = float(np.sqrt(np.mean(a.astype(np.float64) ** 2))) if a.size else 0.0
        else:
            rms = float(np.sqrt((a[: k * n].astype(np.float64).reshape(k, n) ** 2).mean(1)).max())
        return rms > 10 ** (level_db / 20.0)

    def track(self, num_frames: int, fps: float) -> np.ndarray:
        """The samples padded with silence / trimmed to exactly ``num_frames`` video frames: the audio
        track muxed into the video, so that ffmpeg's ``-shortest`` keeps every frame."""
        n = int(round(num_frames / float(fps) * self.sample_rate))
        out = np.zeros(n, np.float32)
        out[:min(n, len(self.samples))] = self.samples[:n]
        return out


def load_speech(audio, sample_rate: int | None = None) -> Speech:
    """``audio``: a file path (any format ffmpeg reads), a :class:`Speech`, a float/int16 array at
    ``sample_rate`` (default 16 kHz) or an ``(array, sample_rate)`` pair -> 16 kHz mono :class:`Speech`.
    Missing, empty, corrupt or non-numeric audio raises :class:`~emotalk.errors.InputError`."""
    if isinstance(audio, Speech):
        return audio
    if isinstance(audio, (str, Path)):
        path = Path(audio)
        if path.is_dir():
            raise InputError(f"audio path {path} is a directory; give a speech file (wav, mp3, m4a, flac)")
        try:
            samples = media.load_audio(path, SAMPLE_RATE)
        except DataError as e:
            raise InputError(f"{e}; use a WAV, MP3, M4A or FLAC speech file") from None
        return Speech(samples.astype(np.float32, copy=False), SAMPLE_RATE, path)
    if isinstance(audio, tuple) and len(audio) == 2:
        audio, sample_rate = audio
    a = np.asarray(audio)
    if a.size == 0:
        raise InputError("the audio has no samples (zero length)")
    if not np.issubdtype(a.dtype, np.number):
        raise InputError(f"audio samples must be numbers, got dtype {a.dtype}")
    if a.dtype != np.int16 and not np.isfinite(a).all():
        raise InputError("the audio contains NaN or infinite samples")
    samples = _mono16k(a, int(sample_rate or SAMPLE_RATE))
    if samples.size == 0:
        raise InputError("the audio has no samples (zero length)")
    return Speech(np.ascontiguousarray(samples, dtype=np.float32), SAMPLE_RATE, None)


def check_output_path(out: str | Path) -> Path:
    """Fail early (before any work) when ``out`` cannot be written; nothing is created here."""
    p = Path(out)
    if str(out).strip() == "":
        raise InputError("no output path given; pass e.g. --out out.mp4")
    if p.is_dir():
        raise InputError(f"output path {p} is a directory; give a file name such as {p / 'out.mp4'}")
    parent = p.parent if str(p.parent) else Path(".")
    probe = parent
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise InputError(f"cannot write {p}: {probe} is a file, not a directory")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise InputError(f"cannot write {p}: directory {probe} is not writable; choose another --out")
    if p.exists() and not os.access(p, os.W_OK):
        raise InputError(f"cannot write {p}: the existing file is read-only")
    return p
