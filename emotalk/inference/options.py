"""What a generation run is asked to do (:class:`GenerateOptions`) and what it made (:class:`GenerateResult`).

Options are one frozen, validated dataclass instead of a long keyword list, so the CLI, the demo, the
evaluation and (later) the streaming and app front ends share one definition and one set of checks.
Checks that need no model run when the options are built (a bad size fails before any file is read);
checks against a checkpoint's vocabulary (unknown emotion, intensity beyond its levels) run once in
:meth:`emotalk.inference.pipeline.Pipeline.controls`.

``Pipeline.generate(image, audio, emotion="happy", intensity=2, out="out.mp4")`` still works: keyword
arguments other than ``out`` build (or override) the options.
"""
from __future__ import annotations

import dataclasses
import math
import warnings as _warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from emotalk.errors import InputError
from emotalk.inference.one_shot import OneShotInfo
from emotalk.inference.renderers import RENDERERS
from emotalk.inference.timeline import DEFAULT_RAMP, Timeline, is_timeline, parse_timeline


def _is_int(v: Any) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


@dataclass(frozen=True)
class GenerateOptions:
    """How to turn one photo + speech into a video (every field has the CLI's default)."""

    #: a vocabulary name ("happy"), a blend ("happy:0.7,surprised:0.3"), a mapping name -> weight, a timeline
    #: ("0:neutral, 1.5:happy@3" or a :class:`~emotalk.inference.timeline.Timeline`) or per-frame control
    #: vectors ((T, E + I) array, or a (landmark, texture) pair of arrays)
    emotion: Any = "neutral"
    #: intensity level 1 .. the checkpoint's levels; fractions interpolate (2.5); a timeline's default
    intensity: float = 1.0
    #: seconds of each transition of a timeline *string* (centred on its keyframe; a Timeline has its own)
    ramp: float = DEFAULT_RAMP
    #: shape of those transitions: "linear" or "smoothstep"
    ramp_curve: str = "linear"
    #: a name from :data:`emotalk.inference.renderers.RENDERERS` ("neural": G_T, "warp": preview)
    renderer: str = "neural"
    #: one-shot fine-tuning steps of G_T on the photo (0 skips it; paper: up to 5)
    finetune_steps: int = 5
    #: add spontaneous eye blinks
    blink: bool = True
    #: Savitzky-Golay window (frames, odd) over the landmarks; 0 or 1 turns smoothing off
    smoothing: int = 5
    #: replace the photo's background by the training backdrop before G_T (and restore it after)
    background: bool = True
    #: paste the generated crop back into the full photo; False: the video shows the face crop
    paste: bool = True
    #: face crop resolution in pixels (G_T's output is brought to it before paste-back)
    size: int = 256
    #: frames per renderer call (None: the renderer's default for the device)
    batch_size: int | None = None
    #: seed of the blinks
    seed: int = 0
    #: video frame rate (None: the landmark checkpoint's, the rate G_L was trained at)
    fps: float | None = None
    #: progress bars on a terminal
    progress: bool = True
    #: precomputed speech features for backends that cannot run here (DeepSpeech logits file or array)
    feature_source: Any = None

    def __post_init__(self) -> None:
        if not isinstance(self.emotion, (str, Mapping, Timeline, np.ndarray, tuple)):
            raise InputError(f"emotion must be a name such as 'happy', a blend such as 'happy:0.7,surprised:0.3', "
                             f"a mapping of names to weights, a timeline such as '0:neutral, 1.5:happy@3' or "
                             f"per-frame control vectors, got {type(self.emotion).__name__}")
        Timeline([(0, "neutral")], self.ramp, self.ramp_curve)  # checks the ramp and its curve
        if isinstance(self.emotion, str) and is_timeline(self.emotion):
            parse_timeline(self.emotion, self.ramp, self.ramp_curve)  # order, times, syntax: fail before any work
        try:
            intensity = float(self.intensity)
        except (TypeError, ValueError):
            raise InputError(f"intensity must be a number such as 1, 2 or 2.5, got {self.intensity!r}") from None
        if isinstance(self.intensity, bool) or not math.isfinite(intensity):
            raise InputError(f"intensity must be a number such as 1, 2 or 2.5, got {self.intensity!r}")
        if self.renderer not in RENDERERS:
            raise InputError(f"unknown renderer {self.renderer!r}; choose one of: {', '.join(RENDERERS)}")
        if not _is_int(self.size) or self.size < 64 or self.size % 2:
            raise InputError(f"size must be an even number of pixels >= 64, got {self.size}")
        if not _is_int(self.finetune_steps) or self.finetune_steps < 0:
            raise InputError(f"finetune_steps must be an integer >= 0, got {self.finetune_steps}")
        if self.batch_size is not None and (not _is_int(self.batch_size) or self.batch_size < 1):
            raise InputError(f"batch_size must be an integer >= 1, got {self.batch_size}")
        if not _is_int(self.smoothing) or self.smoothing < 0 or (self.smoothing > 1 and self.smoothing % 2 == 0):
            raise InputError(f"smoothing must be an odd number of frames (or 0 / 1 for none), got {self.smoothing}")
        if not _is_int(self.seed):
            raise InputError(f"seed must be an integer, got {self.seed!r}")
        if self.fps is not None and (isinstance(self.fps, bool) or not isinstance(self.fps, (int, float, np.number))
                                     or not math.isfinite(self.fps) or self.fps <= 0):
            raise InputError(f"fps must be a positive number (or None for the checkpoint's rate), got {self.fps!r}")
        for name in ("blink", "background", "paste", "progress"):
            if not isinstance(getattr(self, name), (bool, np.bool_)):
                raise InputError(f"{name} must be True or False, got {getattr(self, name)!r}")

    @property
    def per_frame_emotion(self) -> bool:
        """Whether the emotion changes within the clip (a timeline or per-frame arrays)."""
        return isinstance(self.emotion, (np.ndarray, tuple)) or is_timeline(self.emotion)

    def replace(self, **changes) -> "GenerateOptions":
        """A validated copy with ``changes``; an unknown name is an InputError listing the valid ones."""
        names = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(changes) - names)
        if unknown:
            raise InputError(f"unknown generate option(s) {', '.join(unknown)}; valid options: "
                             f"{', '.join(sorted(names))}")
        return dataclasses.replace(self, **changes)

    @classmethod
    def resolve(cls, options: "GenerateOptions | None", overrides: dict, call: str) -> "GenerateOptions":
        """What ``generate``/``stream`` take: a GenerateOptions (or None for the defaults) plus keyword
        overrides. Anything else in the options slot is refused with how to pass the emotion instead
        (``call``: the method's usage, e.g. ``generate(image, audio, emotion=...)``)."""
        if options is not None and not isinstance(options, cls):
            raise InputError(f"the options argument of {call.split('(')[0]}() is a GenerateOptions, got "
                             f"{type(options).__name__}; pass the emotion by name: {call}")
        opts = options or cls()
        return opts.replace(**overrides) if overrides else opts


class EmotalkWarning(UserWarning):
    """A non-fatal problem with the inputs (several faces, silent audio, ...); also in ``result.warnings``."""


def warn(messages: list[str], message: str) -> None:
    """Record ``message`` in a result's warnings and emit it as an :class:`EmotalkWarning`."""
    messages.append(message)
    _warnings.warn(message, EmotalkWarning, stacklevel=3)


@dataclass
class GenerateResult:
    """What :meth:`emotalk.inference.pipeline.Pipeline.generate` made."""

    path: Path  # the finished mp4
    frames: int
    fps: float
    size: tuple[int, int]  # (width, height) of the video
    seconds: dict[str, float]  # per stage (photo, audio, features, landmarks, finetune, render) + total
    warnings: list[str] = field(default_factory=list)
    landmarks: np.ndarray | None = None  # (T, 68, 2) final landmarks, the photo's aligned canonical space
    blinks: np.ndarray | None = None  # (T,) eyelid closure 0..1 added to ``landmarks``
    emotion: dict[str, float] = field(default_factory=dict)  # the parsed blend
    intensity: float = 1.0
    renderer: str = "neural"
    speech: bool = True  # False: no speech was found in the audio
    background_rgb: tuple[int, int, int] | None = None  # training backdrop fed to G_T (neural renderer)
    finetune: OneShotInfo | None = None  # the one-shot fine-tuning record (neural renderer, steps > 0)
    options: GenerateOptions | None = None

    @property
    def duration(self) -> float:
        return self.frames / self.fps if self.fps else 0.0

    @property
    def frames_per_second(self) -> float:
        """Rendering speed: frames over the time of the whole run."""
        total = self.seconds.get("total") or sum(self.seconds.values())
        return self.frames / total if total else 0.0
