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
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

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
        check_not_clipped(samples, f"audio file {path}")
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
    check_not_clipped(samples, "the audio")
    return Speech(np.ascontiguousarray(samples, dtype=np.float32), SAMPLE_RATE, None)


#: Share of samples at full scale from which audio counts as clipped to a flat line (no usable sound).
CLIPPED_FRACTION = 0.5


def check_not_clipped(samples: np.ndarray, what: str) -> None:
    """Refuse audio pinned at full scale: a waveform clipped flat (or a constant offset) is as silent as
    silence but looks loud, so it would pass :meth:`Speech.has_speech` and animate a talking mouth."""
    a = np.abs(np.asarray(samples, np.float32))
    if a.size == 0:
        return
    clipped = float(np.count_nonzero(a >= 0.999)) / a.size
    if clipped >= CLIPPED_FRACTION:
        raise InputError(f"{what} is clipped: {clipped:.0%} of its samples sit at full scale, so it holds no "
                         f"usable sound; record or export it again at a lower level")


def check_output_path(out: str | Path) -> Path:
    """Fail early (before any work) when ``out`` cannot be written; nothing is created here."""
    p = Path(out)
    if str(out).strip() == "":
        raise InputError("no output path given; pass e.g. --out out.mp4")
    if p.is_dir():
        raise InputError(f"output path {p} is a directory; give a file name such as {p / 'out.mp4'}")
    if str(out) != "-":  # "-": a stream to stdout, whose format the streaming writer picks
        media.video_container(p)
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


# ------------------------------------------------------------------------------------------------------
# audio that arrives in blocks (streaming): every source becomes 16 kHz mono float32 blocks
# ------------------------------------------------------------------------------------------------------
#: seconds of audio per block when a whole file or array is cut into blocks
BLOCK_SECONDS = 0.04


def _pcm_to_float(block, what: str) -> np.ndarray:
    """One PCM block (int16 or float, mono ``(n,)`` or interleaved channels ``(n, C)``) -> float32 mono."""
    a = np.asarray(block)
    if not np.issubdtype(a.dtype, np.number):
        raise InputError(f"{what}: audio samples must be numbers, got dtype {a.dtype}")
    if a.dtype == np.int16:
        a = a.astype(np.float32) / 32768.0
    elif np.issubdtype(a.dtype, np.integer):
        raise InputError(f"{what}: integer PCM must be int16, got {a.dtype}; convert it or pass float samples")
    a = a.astype(np.float32, copy=False)
    if a.ndim == 2:
        a = a.mean(axis=1)
    elif a.ndim != 1:
        raise InputError(f"{what}: a PCM block must be (samples,) or (samples, channels), got shape {a.shape}")
    if not np.isfinite(a).all():
        raise InputError(f"{what}: the audio contains NaN or infinite samples")
    return a


class StreamResampler:
    """Polyphase resampling of a block stream to 16 kHz with a bounded delay.

    Input is consumed in runs whose boundaries are multiples of ``down`` input samples (so output sample
    positions stay exact), each run resampled with ``margin`` samples of real context on both sides that
    are dropped afterwards: the result does not depend on how the audio was cut into blocks, at the cost
    of ``margin`` samples of look-ahead (:attr:`delay`, a few ms). It uses scipy's FIR polyphase filter,
    not the soxr resampler of :func:`load_speech`, so the two differ slightly (not bit-exact)."""

    def __init__(self, sample_rate: int):
        from math import gcd

        g = gcd(int(sample_rate), SAMPLE_RATE)
        self.up, self.down = SAMPLE_RATE // g, int(sample_rate) // g
        half = 10 * max(self.up, self.down) / self.up + 1  # scipy's default filter half-length, input samples
        self.margin = self.down * int(np.ceil(half / self.down))
        self.delay = self.margin / float(sample_rate)
        self._buf = np.zeros(self.margin, np.float32)  # left context (silence before the start)
        self._start = self.margin  # index in _buf of the first sample not yet resampled

    def _run(self, stop: int) -> np.ndarray:
        from scipy.signal import resample_poly

        seg = self._buf[self._start - self.margin:stop + self.margin]
        out = resample_poly(seg, self.up, self.down).astype(np.float32)
        a = self.margin * self.up // self.down
        n = (stop - self._start) * self.up // self.down
        self._buf = self._buf[stop - self.margin:]
        self._start = self.margin
        return out[a:a + n]

    def push(self, samples: np.ndarray) -> np.ndarray:
        self._buf = np.concatenate([self._buf, samples])
        stop = self._start + (len(self._buf) - self.margin - self._start) // self.down * self.down
        return self._run(stop) if stop > self._start else np.zeros(0, np.float32)

    def finish(self) -> np.ndarray:
        n = len(self._buf) - self._start
        if n <= 0:
            return np.zeros(0, np.float32)
        total = int(np.ceil(n * self.up / self.down))
        self._buf = np.concatenate([self._buf, np.zeros(self.margin + self.down, np.float32)])
        stop = self._start + int(np.ceil(n / self.down)) * self.down
        return self._run(stop)[:total]


def read_audio_blocks(path: str | Path, block_seconds: float = BLOCK_SECONDS) -> Iterator[np.ndarray]:
    """Decode ``path`` (any format ffmpeg reads) block by block: 16 kHz mono float32 blocks of
    ``block_seconds``, the very samples :func:`load_speech` returns, without holding the whole file."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"audio path {path} is a directory; give a speech file (wav, mp3, m4a, flac)")
    if not path.is_file():
        raise InputError(f"audio file {path} not found")
    if path.stat().st_size == 0:
        raise InputError(f"audio file {path} is empty (0 bytes)")
    cmd = [media.ffmpeg_exe(), "-v", "error", "-nostdin", "-i", str(path), "-vn", "-ac", "1", "-ar",
           str(SAMPLE_RATE), "-f", "s16le", "-acodec", "pcm_s16le", "-"]
    nbytes = 2 * max(1, int(round(block_seconds * SAMPLE_RATE)))
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err)
        total = 0
        try:
            while True:
                raw = proc.stdout.read(nbytes)
                if not raw:
                    break
                raw = raw[:len(raw) // 2 * 2]
                total += len(raw) // 2
                yield np.frombuffer(raw, np.int16).astype(np.float32) / 32768.0
        finally:
            proc.stdout.close()
            if proc.poll() is None:
                proc.kill()
            code = proc.wait()
        if code != 0:
            err.seek(0)
            tail = err.read().decode(errors="replace").strip().splitlines()
            raise InputError(f"{path}: cannot decode the audio ({tail[-1] if tail else f'ffmpeg exit {code}'}); "
                             f"use a WAV, MP3, M4A or FLAC speech file")
        if total == 0:
            raise InputError(f"audio file {path} has no audio samples")


def audio_blocks(source, sample_rate: int | None = None, block_seconds: float = BLOCK_SECONDS
                 ) -> Iterator[np.ndarray]:
    """Any streaming audio source -> 16 kHz mono float32 blocks.

    ``source``: a file path (decoded block by block), a :class:`Speech` or an array (cut into blocks of
    ``block_seconds``), or an iterable of PCM blocks (int16 or float, ``(n,)`` or ``(n, channels)``) at
    ``sample_rate`` Hz (default 16 kHz; other rates are resampled on the fly by :class:`StreamResampler`)."""
    if isinstance(source, (str, Path)):
        yield from read_audio_blocks(source, block_seconds)
        return
    if isinstance(source, tuple) and len(source) == 2 and np.isscalar(source[1]):
        source, sample_rate = source
    if isinstance(source, Speech):
        source, sample_rate = source.samples, source.sample_rate
    if isinstance(source, np.ndarray):
        rate = int(sample_rate or SAMPLE_RATE)
        step = max(1, int(round(block_seconds * rate)))
        array = source
        source = (array[i:i + step] for i in range(0, len(array), step))
    rate = int(sample_rate or SAMPLE_RATE)
    if rate <= 0:
        raise InputError(f"sample rate must be a positive number of Hz, got {sample_rate}")
    resampler = StreamResampler(rate) if rate != SAMPLE_RATE else None
    for i, block in enumerate(source):
        a = _pcm_to_float(block, f"audio block {i}")
        if resampler is not None:
            a = resampler.push(a)
        if a.size:
            yield a
    if resampler is not None:
        tail = resampler.finish()
        if tail.size:
            yield tail
