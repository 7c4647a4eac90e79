"""Speech features while the audio arrives (streaming, :mod:`emotalk.inference.stream`).

:class:`IncrementalFeatures` is :class:`~emotalk.inference.feature_stream.AudioFeatures` for audio that
arrives in blocks: the backend's stream steps are computed as samples come in (:class:`MelSteps` exactly as
the batch transform, :class:`PhonemeSteps` by live phone decoding), a frame is handed out as soon as its
window is complete, and the steps behind it are dropped, so memory does not grow with the stream.
DeepSpeech 0.1.0 is a bidirectional RNN over the whole utterance and cannot stream.
"""
from __future__ import annotations

import numpy as np

from emotalk.data.speech.features import (SAMPLE_RATE, SIL_INDEX, _phone_decoder, get_feature_backend,
                                          num_video_frames, phone_index)
from emotalk.errors import CheckpointError, DataError, InputError


class MelSteps:
    """Log-mel steps (:class:`~emotalk.data.speech.features.MelFeatures`) as the audio arrives.

    The batch transform is centred (``center=True``, zero padding of ``n_fft / 2``): step ``j`` covers
    samples ``j * hop - 256 .. j * hop + 255``. Here the same zero padding is put in front once, steps are
    cut as soon as their 512 samples are in (``center=False`` on the buffer), and :meth:`finish` adds the
    trailing padding: the steps equal the one-piece stream, and a step is final 16 ms after its centre."""

    def __init__(self, backend):
        self.backend = backend
        self.n_fft, self.win, self.hop = 512, 400, SAMPLE_RATE // 100  # MelFeatures.stream's settings
        self.lookahead = (self.n_fft // 2) / SAMPLE_RATE
        self._buf = np.zeros(self.n_fft // 2, np.float32)  # the centred transform's leading zeros
        self._samples = 0

    def _steps(self, count: int) -> np.ndarray:
        import librosa

        if count <= 0:
            return np.zeros((0, self.backend.dim), np.float32)
        seg = self._buf[:(count - 1) * self.hop + self.n_fft]
        mel = librosa.feature.melspectrogram(y=seg, sr=SAMPLE_RATE, n_fft=self.n_fft, win_length=self.win,
                                             hop_length=self.hop, n_mels=self.backend.n_mels,
                                             fmin=self.backend.fmin, fmax=self.backend.fmax, center=False,
                                             power=2.0)
        self._buf = self._buf[count * self.hop:]
        return np.log(np.maximum(mel, self.backend.floor)).T.astype(np.float32)

    def push(self, samples: np.ndarray) -> np.ndarray:
        self._samples += len(samples)
        self._buf = np.concatenate([self._buf, samples])
        return self._steps(max(0, (len(self._buf) - self.n_fft) // self.hop + 1))

    def finish(self) -> np.ndarray:
        if self._samples == 0:
            return np.zeros((0, self.backend.dim), np.float32)
        self._buf = np.concatenate([self._buf, np.zeros(self.n_fft // 2, np.float32)])
        return self._steps((len(self._buf) - self.n_fft) // self.hop + 1)


class PhonemeSteps:
    """Phone labels (:class:`~emotalk.data.speech.features.PhonemeFeatures`) from a live pocketsphinx
    decoder, each one final ``lag`` seconds after its time.

    Why it is not the batch result: the batch decoder sees the whole utterance at once and normalises the
    cepstra by their mean over all of it. Live decoding needs that mean up front, so the first ``warmup``
    seconds are decoded once to estimate it (the first frames wait for them), and the Viterbi path of the
    last few hundred ms can still change, so labels are kept back ``lag`` seconds. Measured on mead-mini
    speech: with the whole clip's mean the live labels equal the batch ones (99.8 %), with a 1-s warm-up
    ~80 % (phone decoding itself is that uncertain). Audio shorter than ``warmup`` is decoded in one piece,
    exactly as in batch. Utterances are restarted every ``max_utterance`` seconds (with ``overlap`` seconds
    of audio fed again) so that the decoder's memory and per-block cost stay flat on endless streams."""

    rate = 100.0

    def __init__(self, backend, lag: float = 0.3, warmup: float = 1.0, max_utterance: float = 20.0,
                 overlap: float = 1.0, dither: float = 1e-3):
        self.backend = backend
        self.hop = SAMPLE_RATE // 100
        self.lag_steps = max(0, int(round(lag * self.rate)))
        self.lookahead = self.lag_steps / self.rate
        self.warmup = int(round(warmup * SAMPLE_RATE))
        self.max_steps = int(max_utterance * self.rate)
        self.overlap_steps = int(overlap * self.rate)
        self.dither = float(dither)
        # a decoder of its own (the batch one is cached and shared), with the batch decoder's settings
        self._dec = _phone_decoder(backend.lw, backend.beam, backend.pbeam)
        self._rng = np.random.default_rng(0)  # the batch dither's seed: draws in pieces equal one draw
        self._pending: list[np.ndarray] = []  # PCM before the warm-up is complete
        self._pcm = np.zeros(0, np.int16)  # recent PCM, for restarting an utterance
        self._pcm_start = 0  # step index of _pcm[0]
        self._samples = 0
        self._live = False
        self._utt_start = 0  # step index where the current utterance begins
        self._utt_steps = 0
        self._final = 0  # steps handed out so far

    def _to_pcm(self, samples: np.ndarray) -> np.ndarray:
        a = samples + self._rng.normal(0.0, self.dither, samples.shape).astype(np.float32)
        return (np.clip(a, -1.0, 1.0) * 32767.0).astype(np.int16)

    def _labels(self, upto: int) -> np.ndarray:
        """One-hot steps ``_final .. upto - 1`` from the current utterance's best path."""
        n = upto - self._final
        if n <= 0:
            return np.zeros((0, self.backend.dim), np.float32)
        labels = np.full(n, SIL_INDEX, np.int64)
        for s in self._dec.seg() or ():
            a = self._utt_start + int(s.start_frame) - self._final
            b = self._utt_start + int(s.end_frame) + 1 - self._final
            if b > 0 and a < n:
                labels[max(a, 0):min(b, n)] = phone_index(s.word)
        self._final = upto
        return np.eye(self.backend.dim, dtype=np.float32)[labels]

    def _feed(self, pcm: np.ndarray) -> None:
        self._dec.process_raw(pcm.tobytes(), full_utt=False)
        self._utt_steps += len(pcm) / self.hop
        keep = (self.lag_steps + self.overlap_steps + 2) * self.hop
        self._pcm = np.concatenate([self._pcm, pcm])
        if len(self._pcm) > keep:
            cut = (len(self._pcm) - keep) // self.hop * self.hop
            self._pcm, self._pcm_start = self._pcm[cut:], self._pcm_start + cut // self.hop

    def _go_live(self) -> None:
        pcm = np.concatenate(self._pending)
        self._pending = []
        self._dec.start_utt()  # the warm-up audio in one piece: its cepstral mean primes the live decoder
        self._dec.process_raw(pcm.tobytes(), full_utt=True)
        self._dec.end_utt()
        self._dec.set_cmn(self._dec.get_cmn(False))
        self._dec.start_utt()
        self._live = True
        self._feed(pcm)

    def _restart(self, out: list) -> None:
        """End a long utterance: labels up to the lag are final; a new one starts ``overlap`` before them."""
        cmn = self._dec.get_cmn(False)
        self._dec.end_utt()
        self._dec.set_cmn(cmn)
        start = max(self._final - self.overlap_steps, self._pcm_start)
        pcm = self._pcm[(start - self._pcm_start) * self.hop:]
        self._pcm, self._pcm_start = np.zeros(0, np.int16), start
        self._utt_start, self._utt_steps = start, 0
        self._dec.start_utt()
        self._feed(pcm)

    def push(self, samples: np.ndarray) -> np.ndarray:
        self._samples += len(samples)
        pcm = self._to_pcm(samples)
        if not self._live:
            self._pending.append(pcm)
            if self._samples < self.warmup:
                return np.zeros((0, self.backend.dim), np.float32)
            self._go_live()
        else:
            self._feed(pcm)
        out = [self._labels(self._utt_start + int(self._utt_steps) - self.lag_steps)]
        if self._utt_steps > self.max_steps:
            self._restart(out)
        return np.concatenate(out, 0)

    def finish(self) -> np.ndarray:
        total = int(np.ceil(self._samples / self.hop))
        if not self._live:  # shorter than the warm-up: one batch decode, exactly as preprocessing does
            if self._samples == 0:
                return np.zeros((0, self.backend.dim), np.float32)
            self._dec.start_utt()
            self._dec.process_raw(np.concatenate(self._pending).tobytes(), full_utt=True)
        self._dec.end_utt()
        return self._labels(total)


#: backends that can be computed as the audio arrives (DeepSpeech 0.1.0 is a bidirectional RNN over the
#: whole utterance, so it cannot)
STEP_SOURCES = {"mel": MelSteps, "phonemes": PhonemeSteps}


class IncrementalFeatures:
    """Per-frame feature windows while the audio arrives: :meth:`push` blocks of 16 kHz samples, ask
    :meth:`ready` how many frames have complete windows, take them with :meth:`windows`, then
    :meth:`discard_before` so only the steps still needed are held (memory flat in stream length).

    A frame's window reaches ``W - 1 - W // 2`` steps past its centre, so the frame at ``t / fps`` s is
    ready once the audio up to ``t / fps + lookahead`` s is in (:attr:`lookahead`: that window part, plus
    the step's own look-ahead: 16 ms for mel, the decoder lag for phonemes). The windowing rule is
    :func:`~emotalk.data.speech.features.frame_windows`' (same centres and padding), so for mel the
    windows equal :class:`AudioFeatures`' for the whole file."""

    def __init__(self, kind: str, fps: float = 30.0, window: int | None = None, **step_options):
        key = str(kind).strip().lower()
        if key not in STEP_SOURCES:
            raise CheckpointError(
                f"the landmark checkpoint uses {kind!r} speech features, which cannot be computed while the "
                f"audio arrives (streaming supports: {', '.join(STEP_SOURCES)}); use Pipeline.generate, or a "
                f"G_L trained on data preprocessed with --features mel or phonemes")
        backend = get_feature_backend(key)
        self.kind, self.fps = key, float(fps)
        self.window = int(window or backend.default_window)
        self.steps = STEP_SOURCES[key](backend, **step_options)
        self.rate = float(self.steps.rate if hasattr(self.steps, "rate") else backend.rate)
        self.dim = int(backend.dim)
        self.pad = np.broadcast_to(np.asarray(backend.pad_vector(), np.float32), (self.dim,))
        self.after = self.window - 1 - self.window // 2  # steps a window reaches past its centre
        self.lookahead = {"window": self.after / self.rate, "steps": float(self.steps.lookahead)}
        self._buf = np.zeros((0, self.dim), np.float32)
        self._offset = 0  # step index of _buf[0]
        self.samples = 0
        self.num_frames: int | None = None  # known after finish()

    @property
    def num_steps(self) -> int:
        """Final steps so far."""
        return self._offset + len(self._buf)

    def _append(self, steps: np.ndarray) -> None:
        if len(steps):
            if not np.isfinite(steps).all():
                raise DataError(f"{self.kind} features contain NaN or infinite values")
            self._buf = np.concatenate([self._buf, steps.astype(np.float32, copy=False)], 0)

    def push(self, samples: np.ndarray) -> None:
        if self.num_frames is not None:
            raise InputError("audio pushed after the end of the stream")
        self.samples += len(samples)
        self._append(self.steps.push(np.asarray(samples, np.float32)))

    def finish(self) -> int:
        """The end of the audio: the last steps, and ``T = round(seconds * fps)`` frames in all."""
        if self.num_frames is None:
            self._append(self.steps.finish())
            if self.samples == 0:
                raise InputError("the audio stream ended before any samples arrived")
            self.num_frames = num_video_frames(self.samples, SAMPLE_RATE, self.fps)
        return self.num_frames

    def _centres(self, a: int, b: int) -> np.ndarray:
        return np.rint(np.arange(a, b) * (self.rate / self.fps)).astype(np.int64)

    def ready(self) -> int:
        """Frames ``0 .. ready() - 1`` have complete windows."""
        if self.num_frames is not None:
            return self.num_frames
        limit = self.num_steps - 1 - self.after  # the largest centre whose window is complete
        t = max(int(np.floor((limit + 1) * self.fps / self.rate)) + 1, 0)
        while t > 0 and self._centres(t - 1, t)[0] > limit:
            t -= 1
        return t

    def windows(self, start: int, stop: int) -> np.ndarray:
        """``(stop - start, W, D)`` windows of frames that are :meth:`ready` and not discarded."""
        idx = self._centres(start, stop)[:, None] - self.window // 2 + np.arange(self.window)[None, :]
        n = self.num_steps
        valid = (idx >= 0) & (idx < n)
        if (valid & (idx < self._offset)).any():
            raise ValueError(f"frames {start}..{stop} need steps that were already discarded")
        if self.num_frames is None and (idx >= n).any():
            raise ValueError(f"frames {start}..{stop} are not ready yet")
        out = np.empty(idx.shape + (self.dim,), np.float32)
        out[...] = self.pad
        out[valid] = self._buf[idx[valid] - self._offset]
        return out

    def discard_before(self, frame: int) -> None:
        """Forget the steps no window of frame ``frame`` or later needs."""
        first = int(self._centres(frame, frame + 1)[0]) - self.window // 2
        drop = min(max(first - self._offset, 0), len(self._buf))
        if drop:
            self._buf = self._buf[drop:]
            self._offset += drop
