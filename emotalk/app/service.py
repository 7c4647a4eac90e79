"""What the web app does, without the web: load the models once, turn one form submission into a video.

:class:`Studio` is the app's back end and imports no Gradio, so its behaviour (errors shown as the CLI's
one-line messages, one private output folder per request, the limits on uploads) is tested without a
browser or a server. :mod:`emotalk.app.ui` lays the form out and calls :meth:`Studio.generate`.

Why a lock around generation: the photo's face detector (dlib) is shared by all requests and is not
documented as thread-safe, and on a CPU machine two clips rendered side by side take as long as one after
the other. Gradio's queue still accepts several users at once (each waits for its turn with a progress
bar), and every request writes into its own fresh folder, so two users never see each other's video.
"""
from __future__ import annotations

import logging
import os
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from emotalk.data.io.media import write_wav
from emotalk.data.io.photos import public_domain_photos
from emotalk.errors import CheckpointError, EmotalkError, InputError
from emotalk.inference import GenerateOptions, Pipeline, load_speech
from emotalk.inference.checkpoints import MAKE_MODELS_HINT, find_checkpoints, user_dir
from emotalk.inference.renderers import needs_texture
from emotalk.mini.tts import synthesize
from emotalk.app.landmark_gif import write_landmark_gif

__all__ = ["AppLimits", "Outcome", "Studio", "timeline_text", "example_inputs"]

log = logging.getLogger(__name__)

#: a progress callback: ``(fraction 0..1, description)``
Progress = Callable[[float, str], None]


@dataclass(frozen=True)
class AppLimits:
    """What one request may ask for. A public page on a CPU machine must not be made to decode a 2 GB
    upload or render an hour of video; ``emotalk generate`` has no such limits."""

    max_photo_mb: float = 20.0
    max_audio_mb: float = 50.0
    max_seconds: float = 60.0  # speech length
    max_finetune_steps: int = 20
    keep_seconds: float = 3600.0  # request folders older than this are removed


@dataclass
class Outcome:
    """One request's result: the video and the landmark animation, or the error line to show."""

    video: Path | None = None
    landmarks: Path | None = None
    message: str = ""

    @property
    def ok(self) -> bool:
        return self.video is not None


def one_line(error: BaseException) -> str:
    """The CLI's rendering of an :class:`EmotalkError`: ``error: <message on one line>``."""
    return "error: " + " ".join(str(error).split())


def _without_upload_dirs(message: str, *uploads) -> str:
    """The message with the server's upload folders cut from the uploaded files' paths: the user knows
    ``wall.png``, not ``/tmp/gradio/eb67.../wall.png``."""
    for value in uploads:
        if isinstance(value, (str, Path)) and str(value).strip():
            path = Path(value)
            message = message.replace(str(path), path.name)
    return message


def timeline_text(rows: Sequence[Sequence] | None) -> str:
    """The timeline editor's table (rows of ``time, emotion[, intensity]``; empty rows skipped) as the CLI's
    timeline string ``"0:neutral, 1.5:happy@3"``. Cells are checked by the timeline parser afterwards,
    which names the offending keyframe; here only the table's shape."""
    items = []
    for i, row in enumerate(rows or [], 1):
        cells = ["" if c is None or (isinstance(c, float) and np.isnan(c)) else str(c).strip() for c in row]
        cells += [""] * (3 - len(cells))
        time_, emotion, intensity = cells[:3]
        if not (time_ or emotion or intensity):
            continue
        if not time_ or not emotion:
            raise InputError(f"timeline row {i}: give a time in seconds and an emotion (e.g. 1.5 and happy)")
        items.append(f"{time_}:{emotion}" + (f"@{intensity}" if intensity else ""))
    if not items:
        raise InputError("the timeline table is empty; add a row such as 0, neutral, 1")
    return ", ".join(items)


class Studio:
    """The models (loaded once) and the generation handler behind the page.

    ``checkpoints``: a folder as for ``emotalk generate --checkpoints`` or None to search the usual places
    (:func:`emotalk.inference.checkpoints.find_checkpoints`). When nothing usable is found the studio is
    still built: :attr:`problem` holds the message (with the command that makes models) and every request
    answers with it instead of failing."""

    def __init__(self, checkpoints: str | Path | None = None, limits: AppLimits | None = None,
                 work_dir: str | Path | None = None, device: str = "auto", pipeline: Pipeline | None = None):
        self.limits = limits or AppLimits()
        self.work_dir = Path(work_dir) if work_dir else Path(tempfile.mkdtemp(prefix="emotalk-app-"))
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self.pipeline: Pipeline | None = pipeline
        self.checkpoints: Path | None = None
        self.problem: str | None = None
        if pipeline is None:
            try:
                self.pipeline, self.checkpoints = self._load(checkpoints, device)
            except EmotalkError as e:
                self.problem = " ".join(str(e).split())
                log.warning("the app starts without models: %s", self.problem)

    @staticmethod
    def _load(checkpoints, device: str) -> tuple[Pipeline, Path]:
        try:  # prefer a folder with both models; a landmark-only folder still gives the warp preview
            found = find_checkpoints(checkpoints, texture=True)
        except CheckpointError:
            found = find_checkpoints(checkpoints, texture=False)
        with_texture = (found.path / "texture").exists()
        return Pipeline.from_checkpoints(found.path, device=device, load_texture=with_texture), found.path

    # --- what the page offers ---------------------------------------------------------------------------
    @property
    def ready(self) -> bool:
        return self.pipeline is not None

    @property
    def emotions(self) -> list[str]:
        return list(self.pipeline.emotions) if self.pipeline else ["neutral"]

    @property
    def intensity_levels(self) -> int:
        return int(self.pipeline.intensity_levels) if self.pipeline else 3

    @property
    def renderers(self) -> list[str]:
        """``neural`` only when G_T is loaded; ``warp`` always (it needs only G_L)."""
        have_texture = self.pipeline is not None and self.pipeline.texture is not None
        return [r for r in ("neural", "warp") if have_texture or not needs_texture(r)]

    def hint(self) -> str:
        """What the page says above the form: the models in use, or how to get some."""
        if self.ready:
            return f"Models: {self.checkpoints or 'given pipeline'} (renderers: {', '.join(self.renderers)})."
        return f"No trained models yet. {self._how_to_get_models()}"

    def _how_to_get_models(self) -> str:
        """The loading problem, followed by the commands that make models when it does not name them."""
        problem = (self.problem or "").rstrip(". ")
        if "emotalk demo" in problem:
            return problem
        return f"{problem}. To get models: {MAKE_MODELS_HINT}" if problem else f"To get models: {MAKE_MODELS_HINT}"

    # --- one request ------------------------------------------------------------------------------------
    def generate(self, photo, audio, emotion: str = "neutral", intensity: float = 1.0,
                 timeline: Sequence[Sequence] | str | None = None, renderer: str = "neural",
                 finetune_steps: int = 5, progress: Progress | None = None) -> Outcome:
        """One form submission -> :class:`Outcome`. ``timeline``: the keyframe table (or a timeline string);
        when given it replaces ``emotion``. Every :class:`EmotalkError` becomes ``Outcome.message`` (the
        CLI's one line); anything else is a bug and propagates (Gradio shows it, the server keeps going)."""
        report = progress or (lambda fraction, desc: None)
        try:
            return self._generate(photo, audio, emotion, intensity, timeline, renderer, finetune_steps, report,
                                  progress is not None)
        except EmotalkError as e:
            log.warning("request failed: %s", one_line(e))
            return Outcome(message=_without_upload_dirs(one_line(e), photo, audio))

    def _generate(self, photo, audio, emotion, intensity, timeline, renderer, finetune_steps,
                  report: Progress, bars: bool) -> Outcome:
        if self.pipeline is None:
            raise CheckpointError(f"no trained models are loaded. {self._how_to_get_models()}")
        photo_path = self._upload(photo, "photo", self.limits.max_photo_mb)
        audio_path = self._upload(audio, "speech", self.limits.max_audio_mb)
        try:
            steps = int(finetune_steps or 0)
        except (TypeError, ValueError):
            raise InputError(f"one-shot steps must be a whole number, got {finetune_steps!r}") from None
        if steps > self.limits.max_finetune_steps:
            raise InputError(f"one-shot steps must be at most {self.limits.max_finetune_steps} in the app, got "
                             f"{steps}; use 'emotalk generate --finetune-steps' for more")
        if timeline is not None and not isinstance(timeline, str):
            timeline = timeline_text(timeline)
        opts = GenerateOptions(emotion=timeline or emotion or "neutral",
                               intensity=1 if intensity is None else intensity,
                               renderer=renderer, finetune_steps=steps,
                               progress=bars)  # the page shows the pipeline's tqdm bars (Gradio tracks them)
        self.pipeline.controls(opts.emotion, opts.intensity, opts.renderer, ramp=opts.ramp,
                               curve=opts.ramp_curve)  # vocabulary and renderer checks before any work
        speech = load_speech(audio_path)
        if speech.seconds > self.limits.max_seconds:
            raise InputError(f"the speech is {speech.seconds:.0f} s long; the app renders at most "
                             f"{self.limits.max_seconds:g} s (use 'emotalk generate' for longer clips)")
        folder = self._request_dir()
        report(0.05, "waiting for the renderer" if self._lock.locked() else "starting")
        with self._lock:
            report(0.1, f"generating ({opts.renderer} renderer)")
            t0 = time.perf_counter()
            result = self.pipeline.generate(photo_path, speech, opts, out=folder / "talking-face.mp4")
        report(0.9, "drawing the landmarks")
        gif = write_landmark_gif(result.landmarks, folder / "landmarks.gif", result.fps)
        notes = "".join(f" warning: {w}" for w in result.warnings)
        tuned = ("" if not needs_texture(result.renderer) else
                 f" after {steps} one-shot steps" if steps else ", no one-shot fine-tuning")
        message = (f"{result.frames} frames ({result.duration:.1f} s at {result.fps:g} fps), {result.size[0]}x"
                   f"{result.size[1]}, {result.renderer} renderer{tuned}, made in {time.perf_counter() - t0:.1f} s."
                   f"{notes}")
        report(1.0, "done")
        return Outcome(video=result.path, landmarks=gif, message=message)

    @staticmethod
    def _upload(value, what: str, max_mb: float) -> Path:
        """A Gradio file value (a path) checked for presence and size before anything decodes it."""
        if value is None or (isinstance(value, str) and not value.strip()):
            raise InputError(f"no {what} given; upload one (or click an example below the form)")
        path = Path(getattr(value, "name", value))
        if not path.is_file():
            raise InputError(f"{what} file {path.name} not found; upload it again")
        size_mb = path.stat().st_size / 1e6
        if size_mb > max_mb:
            raise InputError(f"the {what} file is {size_mb:.0f} MB; the app accepts up to {max_mb:g} MB")
        return path

    def _request_dir(self) -> Path:
        """A fresh folder for one request (unique even for simultaneous requests); old ones are removed."""
        cutoff = time.time() - self.limits.keep_seconds
        for old in self.work_dir.glob("req-*"):
            try:
                if old.stat().st_mtime < cutoff:
                    shutil.rmtree(old, ignore_errors=True)
            except OSError:
                pass
        return Path(tempfile.mkdtemp(prefix="req-", dir=self.work_dir))


#: the sentence of the example speech (spoken offline by eSpeak NG)
EXAMPLE_SENTENCE = "Hello! I can say anything you like, with any emotion you choose."


def example_inputs(folder: str | Path | None = None) -> dict[str, Path]:
    """Ready-to-click inputs: the public-domain photos (``astronaut``, ``grace_hopper``) as PNG files and a
    TTS sentence as WAV, written once into ``folder`` (default: ``<emotalk user dir>/app-examples``)."""
    import cv2

    out = Path(folder) if folder else user_dir() / "app-examples"
    out.mkdir(parents=True, exist_ok=True)
    files = {}
    for name, rgb in public_domain_photos().items():
        path = out / f"{name}.png"
        if not path.is_file():
            tmp = out / f".{name}.{os.getpid()}.png"
            cv2.imwrite(str(tmp), rgb[..., ::-1])
            os.replace(tmp, path)
        files[name] = path
    speech = out / "hello.wav"
    if not speech.is_file():
        tts = synthesize(EXAMPLE_SENTENCE)
        write_wav(speech, tts.audio, tts.sample_rate)  # atomic
    files["speech"] = speech
    return files
