"""Streaming generation: frames come out while the speech is still arriving (issue 15 §2).

    stream = pipe.stream("speech.wav", image="photo.jpg", emotion="0:neutral, 2:happy@3")
    for frame in stream:                 # StreamFrame: .image (H, W, 3) uint8, .time (s), .index
        show(frame.image, frame.time)
    print(stream.lookahead)              # seconds of future audio each frame waits for, by cause

``audio`` is a file (decoded block by block), an array / :class:`~emotalk.inference.speech.Speech`, or
any iterable of PCM blocks (int16 or float, ``sample_rate=`` Hz; a microphone callback's queue, a
socket). The stages are :meth:`Pipeline.generate`'s, run on small batches as soon as their inputs exist:

=============  =========================================================================================
features       :class:`~emotalk.inference.live_features.IncrementalFeatures`: stream steps as samples
               arrive; a frame is ready once its window is complete. **Look-ahead**: the window reaches
               ``W - 1 - W//2`` steps past the frame (90 ms for W = 20 at 100 Hz), a mel step needs 16 ms
               past its centre, live phone decoding keeps labels back 300 ms (plus a 1-s warm-up before
               the first frame, see :class:`~emotalk.inference.live_features.PhonemeSteps`)
G_L            every ready frame, in batches of at most ``DEFAULT_BATCH``, with that frame's control vector
smoothing      the same Savitzky-Golay filter with a **bounded delay** of ``window // 2`` frames (the first
               frame waits for ``window`` frames): the interior is the same centred filter, the clip's
               first and last frames get the same end fits once those frames are known, so the result
               equals the whole-clip smoothing
blinks         the same seeded renewal process drawn lazily (:class:`BlinkStream`), identical blink times
emotion        constant vectors, a timeline's rows for just these frames, or rows of per-frame arrays
G_T            per batch of at most the renderer's batch size, then paste-back, on a render thread while
               the next audio block is decoded (``overlap=False``: on the caller's thread)
=============  =========================================================================================

So for mel features the frames equal ``generate``'s up to float rounding (and the video codec, which a
stream's caller chooses); phone features differ because live decoding is not batch decoding (see
:class:`~emotalk.inference.live_features.PhonemeSteps`). DeepSpeech features cannot stream. Memory is
flat in the stream's length: only the feature steps still needed by a window, the smoother's few frames
and the current batch are held. The photo (and the renderer's one-shot fine-tuning) is prepared when
the stream is created, so input errors surface before any audio is read.
"""
from __future__ import annotations

import logging
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Iterator

import numpy as np

from emotalk.data.face.blinks import CLOSE_S, HOLD_S, OPEN_S, apply_blink, blink_profile
from emotalk.errors import InputError
from emotalk.inference.compositor import Compositor, crop_on_own_background
from emotalk.inference.live_features import IncrementalFeatures
from emotalk.inference.landmarks import DEFAULT_BATCH, smooth_landmarks
from emotalk.inference.options import GenerateOptions
from emotalk.inference.speech import BLOCK_SECONDS, SAMPLE_RATE, StreamResampler, audio_blocks

log = logging.getLogger(__name__)

#: blink process of :func:`emotalk.inference.landmarks.add_blinks` (rate per second, refractory gap)
BLINK_RATE, BLINK_MIN_GAP = 0.3, 1.2


@dataclass
class StreamFrame:
    """One frame of a stream. ``for image, t in stream`` unpacks ``(image, time)``."""

    index: int
    time: float  # seconds into the audio: index / fps
    image: np.ndarray  # (H, W, 3) uint8
    audio_seconds: float  # seconds of audio received when the frame came out
    landmarks: np.ndarray | None = None  # (68, 2) final landmarks (aligned canonical space)
    ready_audio_seconds: float | None = None  # audio received when its inputs were complete (render queued)

    def __iter__(self):
        return iter((self.image, self.time))


@dataclass
class Lookahead:
    """Seconds of audio past a frame's time that must have arrived before the frame can be made."""

    window: float  # the feature window's future half
    steps: float  # the feature step's own (mel 16 ms, live phone decoding's lag)
    smoothing: float  # the Savitzky-Golay filter's delay (window // 2 frames)
    resample: float = 0.0  # the on-the-fly resampler's margin (audio not at 16 kHz)
    warmup: float = 0.0  # before the first frame only (phone decoding's cepstral-mean warm-up)

    @property
    def total(self) -> float:
        """Steady-state look-ahead (the warm-up only delays the first frame)."""
        return self.window + self.steps + self.smoothing + self.resample

    def as_dict(self) -> dict[str, float]:
        return {"window": self.window, "steps": self.steps, "smoothing": self.smoothing, "resample": self.resample,
                "warmup": self.warmup, "total": self.total}


class DelayedSmoother:
    """:func:`~emotalk.inference.landmarks.smooth_landmarks` over a stream, ``window // 2`` frames late.

    Frame ``t`` comes out once frames up to ``max(t + h, window - 1)`` are in (``h = window // 2``): the
    centred filter of an interior frame needs ``h`` frames on each side, and the clip's first ``h`` frames
    take the polynomial end fit over its first ``window`` frames. At :meth:`pop` with ``final`` the last
    frames take the end fit too, so the output equals smoothing the whole clip at once. Only the last
    ``window`` raw frames are held. Past the clip's first frames a pop needs only the filter's interior,
    which is :func:`scipy.signal.savgol_filter`'s own convolution without its end fits (a polynomial
    least-squares fit per call, most of the smoothing's time): the same numbers, computed directly."""

    def __init__(self, window: int):
        self.window = int(window)
        self.h = self.window // 2 if self.window > 1 else 0
        self._coeffs = None
        if self.window >= 3 and self.window % 2 == 1:  # smooth_landmarks' filter: order 2, odd window
            from scipy.signal import savgol_coeffs

            self._coeffs = savgol_coeffs(self.window, 2)
        self._raw = np.zeros((0, 68, 2), np.float32)
        self._offset = 0  # frame index of _raw[0]
        self.emitted = 0  # next frame to come out

    def push(self, frames: np.ndarray) -> None:
        self._raw = np.concatenate([self._raw, np.asarray(frames, np.float32)], 0)

    def pop(self, final: bool = False) -> np.ndarray:
        """The frames that are now final (from :attr:`emitted` on)."""
        n = self._offset + len(self._raw)
        if self.window <= 1:
            stop, start = n, self.emitted
            out = self._raw[start - self._offset:]
        else:
            if final:
                stop, start = n, max(0, min(self.emitted - self.h, n - self.window))
            else:
                stop = n - self.h if n >= self.window else 0
                start = max(0, self.emitted - self.h)
            if stop <= self.emitted:
                return np.zeros((0, 68, 2), np.float32)
            seg = self._raw[start - self._offset:(stop if final else stop + self.h) - self._offset]
            if not final and self._coeffs is not None and self.emitted - start == self.h:
                from scipy.ndimage import convolve1d  # savgol_filter's interior, as it computes it

                out = convolve1d(seg, self._coeffs, axis=0, mode="constant")[self.h:len(seg) - self.h]
            else:
                out = smooth_landmarks(seg, self.window)[self.emitted - start:stop - start]
        self.emitted = stop
        keep = max(0, self.emitted - self.window - self._offset)
        if keep:
            self._raw, self._offset = self._raw[keep:], self._offset + keep
        return out


class BlinkStream:
    """The blinks of :func:`~emotalk.inference.landmarks.add_blinks`, drawn lazily: the renewal process
    is drawn step by step from the same seeded generator, so the onsets are identical however long the
    stream turns out to be, and only onsets that can still touch a frame are held."""

    def __init__(self, fps: float, seed: int = 0, rate: float = BLINK_RATE, min_gap: float = BLINK_MIN_GAP):
        self.fps = float(fps)
        self._rng = np.random.default_rng(seed)
        self.min_gap, self.mean_extra = float(min_gap), max(1.0 / rate - min_gap, 0.05)
        self._t = -self._rng.uniform(0.0, self.min_gap + self.mean_extra)  # blink_onsets' random phase
        self._onsets: deque[float] = deque()

    def closure(self, start: int, stop: int) -> np.ndarray:
        """``(stop - start,)`` lid closure of frames ``start .. stop - 1`` (called in frame order)."""
        times = (np.arange(start, stop) + 0.5) / self.fps
        if len(times) == 0:
            return np.zeros(0, np.float32)
        while self._t < times[-1]:
            self._t += self.min_gap + self._rng.exponential(self.mean_extra)
            if self._t >= 0:
                self._onsets.append(self._t)
        while self._onsets and self._onsets[0] + CLOSE_S + HOLD_S + OPEN_S < times[0]:
            self._onsets.popleft()
        c = np.zeros(len(times))
        for t0 in self._onsets:
            c = np.maximum(c, blink_profile(times - t0))
        return c.astype(np.float32)


class EmotionRows:
    """Per-frame control vectors of a stream, batch by batch: one vector for the whole stream, the rows
    of a timeline for just the frames asked for, or rows of caller-made ``(T, E + I)`` arrays."""

    def __init__(self, pipe, options: GenerateOptions, fps: float):
        self.fps = float(fps)
        self.controls = pipe.controls(options.emotion, options.intensity, options.renderer, ramp=options.ramp,
                                      curve=options.ramp_curve)
        self.timeline = self.controls.timeline
        self.arrays = None
        self.keys = None
        if self.timeline is not None:
            tm = pipe.texture.model_config if self.controls.texture is not None else None
            self.keys = (self.timeline.keyframe_vectors(pipe.emotions, pipe.intensity_levels, options.intensity),
                         self.timeline.keyframe_vectors(list(tm.emotions), int(tm.intensity_levels),
                                                        options.intensity) if tm is not None else None)
        elif options.per_frame_emotion:  # per-frame arrays: checked shapes, full length
            full = pipe.controls(options.emotion, options.intensity, options.renderer,
                                 num_frames=len(np.asarray(options.emotion[0] if isinstance(options.emotion, tuple)
                                                           else options.emotion)))
            self.arrays = (full.landmark, full.texture)

    def rows(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray | None]:
        """``(G_L's, G_T's)`` control vectors of frames ``start .. stop - 1``: ``(B, E + I)`` each, or one
        ``(E + I,)`` for a constant emotion (G_T's is None then: the renderer's own)."""
        if self.keys is not None:
            w = self.timeline.ramp_weights(stop, self.fps, start)
            lm = (w @ self.keys[0].astype(np.float64)).astype(np.float32)
            tex = None if self.keys[1] is None else (w @ self.keys[1].astype(np.float64)).astype(np.float32)
            return lm, tex
        if self.arrays is not None:
            if stop > len(self.arrays[0]):
                raise InputError(f"the per-frame emotion controls cover {len(self.arrays[0])} frames but the audio "
                                 f"lasts longer (frame {stop - 1}); give one vector per frame of the whole stream")
            tex = self.arrays[1]
            return self.arrays[0][start:stop], None if tex is None else tex[start:stop]
        return self.controls.landmark, None

    def finish(self, num_frames: int, seconds: float) -> None:
        """At the end: what a stream can no longer refuse, it reports (generate raises for these)."""
        if self.timeline is not None:
            late = [f"{float(k.time):g} s" for k in self.timeline.keyframes if float(k.time) > seconds + 1e-9]
            if late:
                log.warning("timeline keyframe(s) at %s lie past the end of the audio (%.2f s) and were never "
                            "reached", ", ".join(late), seconds)
        if self.arrays is not None and len(self.arrays[0]) != num_frames:
            log.warning("%d per-frame emotion control vectors for %d video frames; the extra ones were unused",
                        len(self.arrays[0]), num_frames)


@dataclass
class StreamStats:
    """What a stream has done so far (the benchmark reads it)."""

    setup_seconds: float = 0.0  # photo, renderer preparation (one-shot fine-tuning)
    frames: int = 0
    audio_seconds: float = 0.0
    num_frames: int | None = None  # known at the end of the audio
    first_frame_audio: float | None = None  # audio seconds received when the first frame came out
    stages: dict[str, float] = field(default_factory=lambda: {"features": 0.0, "landmarks": 0.0, "render": 0.0})


class FrameStream:
    """Frames of one photo + streaming speech (see the module docstring); iterate it once."""

    def __init__(self, pipe, audio, image, options: GenerateOptions | None = None, *, sample_rate: int | None = None,
                 block_seconds: float = BLOCK_SECONDS, audio_tap: Callable[[np.ndarray], None] | None = None,
                 feature_options: dict | None = None, overlap: bool = True, **overrides):
        opts = GenerateOptions.resolve(options, overrides, "stream(audio, image=..., emotion=...)")
        if image is None:
            raise InputError("give the photo of the target face: stream(audio, image='photo.jpg')")
        t0 = time.perf_counter()
        self.pipe, self.options = pipe, opts
        self.fps = float(opts.fps or pipe.fps)
        if abs(self.fps - pipe.fps) > 1e-6 and pipe.feature_kind == "deepspeech":
            raise InputError(f"generate at the checkpoint's {pipe.fps:g} fps")
        self.emotion = EmotionRows(pipe, opts, self.fps)  # vocabulary checks before the photo is touched
        self.features = IncrementalFeatures(pipe.feature_kind, self.fps, pipe.window, **(feature_options or {}))
        if self.features.dim != pipe.feature_dim or self.features.window != pipe.window:
            raise InputError(f"streamed {pipe.feature_kind} features are {self.features.window} x {self.features.dim}"
                             f" but the landmark model expects {pipe.window} x {pipe.feature_dim}")
        self.photo = pipe.prepare_photo(image, opts.size)
        self.prepared = pipe.prepare_renderer(self.photo, opts.renderer, self.emotion.controls, opts.finetune_steps,
                                              opts.background, False)
        self.compositor = Compositor(self.photo, self.prepared.alpha) if opts.paste else None
        self.batch_size = int(opts.batch_size or self.prepared.batch_size)
        self.audio, self.sample_rate, self.block_seconds = audio, sample_rate, float(block_seconds)
        self.audio_tap = audio_tap
        self.overlap = bool(overlap)
        self._pending: deque[tuple[int, np.ndarray, float, Future]] = deque()  # renders in flight, in order
        self.smoother = DelayedSmoother(opts.smoothing)
        self.blinks = BlinkStream(self.fps, opts.seed) if opts.blink else None
        rate = SAMPLE_RATE  # of the audio as it arrives: files are decoded at 16 kHz, PCM comes at sample_rate
        if isinstance(audio, tuple) and len(audio) == 2 and np.isscalar(audio[1]):
            rate = audio[1]
        elif sample_rate and not isinstance(audio, (str, bytes)):
            rate = sample_rate
        la = self.features.lookahead
        warmup = getattr(self.features.steps, "warmup", 0) / SAMPLE_RATE
        self.lookahead = Lookahead(la["window"], la["steps"], self.smoother.h / self.fps,
                                   StreamResampler(int(rate)).delay if int(rate) != SAMPLE_RATE else 0.0, warmup)
        self.stats = StreamStats(setup_seconds=time.perf_counter() - t0)
        self._started = False
        log.info("streaming %s features at %g fps; look-ahead %.0f ms (window %.0f, steps %.0f, smoothing %.0f ms)%s",
                 pipe.feature_kind, self.fps, 1000 * self.lookahead.total, 1000 * la["window"], 1000 * la["steps"],
                 1000 * self.lookahead.smoothing,
                 f", first frame after a {warmup:g} s warm-up" if warmup else "")

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of the frames."""
        if self.options.paste:
            return self.photo.size
        return (self.photo.crop_size, self.photo.crop_size)

    def __iter__(self) -> Iterator[StreamFrame]:
        if self._started:
            raise InputError("a stream can be iterated only once; create a new one with Pipeline.stream")
        self._started = True
        return self._run()

    def _run(self) -> Iterator[StreamFrame]:
        """Audio -> features -> G_L -> smoothing on this thread; blinks and emotion rows are drawn here
        too (in frame order), G_T + paste-back of each batch on a render thread (``overlap``), so the next
        audio block is decoded while the previous frames render: two cores work at once, frames still come
        out in order and at most :data:`MAX_IN_FLIGHT` batches wait (bounded memory and latency)."""
        feats, st = self.features, self.stats
        pool = ThreadPoolExecutor(1, thread_name_prefix="emotalk-render") if self.overlap else None
        try:
            next_lm = 0
            for block in audio_blocks(self.audio, self.sample_rate, self.block_seconds):
                if self.audio_tap is not None:
                    self.audio_tap(block)
                t = time.perf_counter()
                feats.push(block)
                st.audio_seconds = feats.samples / SAMPLE_RATE
                st.stages["features"] += time.perf_counter() - t
                next_lm = self._landmarks(next_lm, feats.ready())
                yield from self._render(self.smoother.pop(), pool)
            t = time.perf_counter()
            T = feats.finish()
            st.num_frames = T
            st.stages["features"] += time.perf_counter() - t
            next_lm = self._landmarks(next_lm, T)
            yield from self._render(self.smoother.pop(final=True), pool)
            yield from self._collect(wait=0)
            self.emotion.finish(T, feats.samples / SAMPLE_RATE)
        finally:
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)

    def _landmarks(self, start: int, stop: int) -> int:
        """G_L on frames ``start .. stop - 1`` into the smoother; returns ``stop``."""
        t = time.perf_counter()
        for a in range(start, stop, DEFAULT_BATCH):
            b = min(a + DEFAULT_BATCH, stop)
            emo, _ = self.emotion.rows(a, b)
            if emo.ndim == 1:  # one row per frame (G_L's own broadcast would hand torch a read-only view)
                emo = np.repeat(emo[None], b - a, 0)
            self.smoother.push(self.pipe.landmark.predict_batch(self.features.windows(a, b), emo, self.photo.aligned))
        if stop > start:
            self.features.discard_before(stop)
        self.stats.stages["landmarks"] += time.perf_counter() - t
        return max(start, stop)

    def _render(self, landmarks: np.ndarray, pool: ThreadPoolExecutor | None) -> Iterator[StreamFrame]:
        """Blinks and emotion rows for the next ``len(landmarks)`` frames, then G_T and paste-back per batch
        (on ``pool`` when given); yields the frames that are done."""
        bs = self.batch_size
        for a in range(0, len(landmarks), bs):
            first = self.stats.frames + sum(len(p[1]) for p in self._pending)
            lm = landmarks[a:a + bs]
            n = len(lm)
            if self.blinks is not None:
                lm = apply_blink(lm, self.blinks.closure(first, first + n)).astype(np.float32)
            _, tex = self.emotion.rows(first, first + n)
            yield from self._collect(wait=MAX_IN_FLIGHT - 1)  # room for this batch
            job = (pool.submit if pool is not None else _now)(self._draw, lm, tex)
            self._pending.append((first, lm, self.stats.audio_seconds, job))
        yield from self._collect(wait=MAX_IN_FLIGHT if pool is not None else 0)

    def _draw(self, lm: np.ndarray, tex: np.ndarray | None) -> list[np.ndarray]:
        t = time.perf_counter()
        crops = self.prepared.renderer(self.photo.aligned_to_crop(lm), tex)
        images = [self.compositor(c) if self.compositor is not None
                  else crop_on_own_background(c, self.photo, self.prepared.alpha) for c in crops]
        self.stats.stages["render"] += time.perf_counter() - t
        return images

    def _collect(self, wait: int) -> Iterator[StreamFrame]:
        """Frames of finished batches, in order; waits until at most ``wait`` batches are in flight."""
        while self._pending and (len(self._pending) > wait or self._pending[0][3].done()):
            first, lm, ready, job = self._pending.popleft()
            for i, image in enumerate(job.result()):
                if self.stats.first_frame_audio is None:
                    self.stats.first_frame_audio = self.stats.audio_seconds
                self.stats.frames += 1
                yield StreamFrame(first + i, (first + i) / self.fps, image, self.stats.audio_seconds, lm[i], ready)


#: batches handed to a stream's render thread and not yet collected: one renders while this thread decodes
#: the next audio block; the next batch waits for it, so no queue of renders builds up behind a slow
#: consumer (latency: a frame waits at most for the rest of the previous batch's render)
MAX_IN_FLIGHT = 1


def _now(fn, *args) -> Future:
    """``fn(*args)`` on this thread, as a finished future (a stream with ``overlap=False``)."""
    f: Future = Future()
    f.set_result(fn(*args))
    return f


def stream(pipe, audio, image=None, options: GenerateOptions | None = None, **kwargs) -> FrameStream:
    """:meth:`emotalk.inference.pipeline.Pipeline.stream`: a :class:`FrameStream` (iterate it for
    :class:`StreamFrame` objects). ``kwargs``: ``sample_rate=`` (of PCM blocks / arrays), ``block_seconds=``
    (how a file or array is cut), ``audio_tap=`` (called with each 16 kHz block as it is consumed, e.g.
    to mux it), ``feature_options=`` (phone decoding: ``lag``, ``warmup``), ``overlap=`` (False: G_T and
    paste-back on the caller's thread, one core; default True: on a render thread), and any
    :class:`GenerateOptions` field (``emotion=``, ``intensity=``, ``renderer=``, ...)."""
    return FrameStream(pipe, audio, image, options, **kwargs)
