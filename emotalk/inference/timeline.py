"""Emotion timelines: the emotion changes within one clip, with smooth transitions.

Text form (``emotalk generate --emotion``)::

    "0:neutral, 1.5:happy@3, 4.0:sad@2, 6:surprised:0.6+happy:0.4@2.5"

A comma-separated list of keyframes ``TIME:EMOTION[@INTENSITY]``: ``TIME`` in seconds from the start of
the audio, ``EMOTION`` a name or a blend ``name:weight+name:weight`` (weights normalised as in
:func:`emotalk.data.emotions.parse_emotion`), ``@INTENSITY`` a level 1..levels (fractions interpolate;
without it the keyframe takes ``--intensity``). A string is a timeline when one of its comma-separated
items starts with a number followed by ``:`` - so today's blend ``happy:0.7,surprised:0.3`` and single
names keep their meaning (:func:`is_timeline`).

Transitions happen in control-vector space, for G_L's and G_T's vectors alike: each keyframe ``k >= 1``
starts a ramp **centred on its time** ``t_k``, from ``t_k - ramp/2`` to ``t_k + ramp/2`` (default ramp
0.3 s), so at ``t_k`` the vector is half way. With ``c_k`` keyframe ``k``'s control vector and ``s`` the
ramp curve (``linear``: ``x``; ``smoothstep``: ``3x^2 - 2x^3``)::

    v(t) = c_0 + sum_k s(clip((t - t_k + ramp/2) / ramp, 0, 1)) * (c_k - c_{k-1})

This is exact piecewise interpolation between consecutive keyframes when ramps do not overlap, and
still a convex combination of the keyframes (weights ``1 - s_1, s_1 - s_2, ..., s_n``, non-negative
because later ramps start later) when keyframes are closer than the ramp: every frame's emotion part
and intensity part still sum to 1. Before the first keyframe the first keyframe's emotion holds; ramp 0
switches at ``t_k``. Frame ``i`` is at time ``i / fps``.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from emotalk.data.emotions import emotion_vector, parse_control
from emotalk.errors import InputError

__all__ = ["CURVES", "DEFAULT_RAMP", "Keyframe", "Timeline", "is_timeline", "parse_timeline"]

#: default transition length in seconds
DEFAULT_RAMP = 0.3
#: ramp shapes on x in [0, 1]
CURVES = {"linear": lambda x: x, "smoothstep": lambda x: x * x * (3.0 - 2.0 * x)}

_TIME = re.compile(r"^\s*([+-]?(?:\d+(?:\.\d*)?|\.\d+))\s*:(.*)$")


@dataclass(frozen=True)
class Keyframe:
    """From ``time`` (seconds) on, ``emotion`` (a name, ``"happy:0.7,surprised:0.3"`` or a mapping) at
    ``intensity`` (None: the run's default intensity). ``label``: how it was written, for errors."""

    time: float
    emotion: str | Mapping[str, float]
    intensity: float | None = None
    label: str = ""

    def describe(self) -> str:
        if self.label:
            return self.label
        emo = self.emotion if isinstance(self.emotion, str) else "+".join(f"{k}:{v:g}" for k, v in self.emotion.items())
        return f"{self.time:g}:{emo}" + (f"@{self.intensity:g}" if self.intensity is not None else "")


@dataclass(frozen=True)
class Timeline:
    """Keyframes in strictly increasing time order, a ramp length in seconds and a ramp curve.
    Structural problems (unsorted or duplicate times, negative times, a bad ramp) fail here;
    vocabulary problems in :meth:`keyframe_vectors`; times past the audio in :meth:`controls`."""

    keyframes: tuple[Keyframe, ...]
    ramp: float = DEFAULT_RAMP
    curve: str = "linear"

    def __init__(self, keyframes: Sequence[Keyframe | tuple], ramp: float = DEFAULT_RAMP, curve: str = "linear"):
        kfs = tuple(k if isinstance(k, Keyframe) else Keyframe(*k) for k in keyframes)
        if not kfs:
            raise InputError("an emotion timeline needs at least one keyframe, e.g. '0:neutral, 1.5:happy@3'")
        object.__setattr__(self, "keyframes", kfs)
        object.__setattr__(self, "ramp", _ramp(ramp))
        if curve not in CURVES:
            raise InputError(f"unknown ramp curve {curve!r}; choose one of: {', '.join(CURVES)}")
        object.__setattr__(self, "curve", curve)
        for i, k in enumerate(kfs, 1):
            try:
                t = float(k.time)
            except (TypeError, ValueError):
                t = float("nan")
            if isinstance(k.time, bool) or not math.isfinite(t) or t < 0:
                raise InputError(f"timeline keyframe {i} ({k.describe()!r}): time must be a number of seconds "
                                 f">= 0, got {k.time!r}")
            if i > 1:
                prev = float(kfs[i - 2].time)
                if t == prev:
                    raise InputError(f"timeline keyframes {i - 1} and {i} ({k.describe()!r}) are both at {t:g} s; "
                                     f"give each keyframe its own time")
                if t < prev:
                    raise InputError(f"timeline keyframe {i} ({k.describe()!r}) at {t:g} s comes before keyframe "
                                     f"{i - 1} at {prev:g} s; list keyframes in time order")

    @property
    def times(self) -> np.ndarray:
        return np.array([float(k.time) for k in self.keyframes], np.float64)

    def keyframe_vectors(self, vocab: Sequence[str], levels: int, intensity: float = 1.0) -> np.ndarray:
        """``(K, len(vocab) + levels)`` control vectors, one per keyframe; InputError naming the keyframe
        for an unknown emotion, a bad weight or an intensity outside ``1 .. levels``."""
        rows = []
        for i, k in enumerate(self.keyframes, 1):
            level = intensity if k.intensity is None else k.intensity
            try:
                rows.append(emotion_vector(k.emotion, level, list(vocab), int(levels)))
            except InputError as e:
                raise InputError(f"timeline keyframe {i} ({k.describe()!r}): {e}") from None
        return np.stack(rows)

    def weights(self, vocab: Sequence[str]) -> list[dict[str, float]]:
        """Each keyframe's parsed blend (for the result record)."""
        return [parse_control(k.emotion, list(vocab)) for k in self.keyframes]

    def ramp_weights(self, num_frames: int, fps: float, start: int = 0) -> np.ndarray:
        """``(T - start, K)`` weights of each keyframe for frames ``start .. T - 1`` (rows sum to 1; see the
        module docstring); ``start`` lets a stream take its frames batch by batch."""
        t = np.arange(int(start), int(num_frames), dtype=np.float64) / float(fps)
        times = self.times
        s = np.ones((len(t), len(times)), np.float64)  # s[:, k]: progress of the ramp into keyframe k
        for k in range(1, len(times)):
            if self.ramp > 0:
                x = np.clip((t - times[k] + self.ramp / 2) / self.ramp, 0.0, 1.0)
                s[:, k] = CURVES[self.curve](x)
            else:
                s[:, k] = (t >= times[k]).astype(np.float64)
        nxt = np.concatenate([s[:, 1:], np.zeros((len(t), 1))], axis=1)
        return s - nxt  # keyframe k's weight: s_k - s_{k+1}, with s_0 = 1 and s_{K} = 0

    def controls(self, num_frames: int, fps: float, vocab: Sequence[str], levels: int, intensity: float = 1.0,
                 duration: float | None = None) -> np.ndarray:
        """Per-frame control vectors ``(T, len(vocab) + levels)`` float32 for a clip of ``num_frames`` at
        ``fps``. ``duration`` (seconds, default ``num_frames / fps``): a keyframe after it is an error."""
        end = float(duration) if duration is not None else num_frames / float(fps)
        for i, k in enumerate(self.keyframes, 1):
            if float(k.time) > end + 1e-9:
                raise InputError(f"timeline keyframe {i} ({k.describe()!r}) is at {float(k.time):g} s, past the end "
                                 f"of the audio ({end:.2f} s); remove it or use a longer audio")
        keys = self.keyframe_vectors(vocab, levels, intensity)
        return (self.ramp_weights(num_frames, fps) @ keys.astype(np.float64)).astype(np.float32)


def _ramp(ramp) -> float:
    try:
        r = float(ramp)
    except (TypeError, ValueError):
        r = float("nan")
    if isinstance(ramp, bool) or not math.isfinite(r) or r < 0:
        raise InputError(f"the emotion ramp must be a number of seconds >= 0 (e.g. 0.3), got {ramp!r}")
    return r


def is_timeline(spec) -> bool:
    """Whether ``spec`` is a timeline: a :class:`Timeline`, or a string one of whose comma-separated items
    starts with a number followed by ``:`` (``"1.5:happy"``); ``"happy:0.7,surprised:0.3"`` is a blend."""
    if isinstance(spec, Timeline):
        return True
    return isinstance(spec, str) and any(_TIME.match(part) for part in spec.split(","))


def _blend(text: str, item: str, index: int) -> dict[str, float]:
    """``happy`` or ``surprised:0.6+happy:0.4`` -> ``{name: weight}`` (validated against a vocabulary later)."""
    out: dict[str, float] = {}
    for part in text.split("+"):
        part = part.strip()
        if not part:
            raise InputError(f"timeline keyframe {index} ({item!r}): empty emotion; write e.g. '1.5:happy' or "
                             f"'1.5:happy:0.7+sad:0.3'")
        name, _, w = part.partition(":")
        try:
            weight = float(w) if w.strip() else 1.0
        except ValueError:
            raise InputError(f"timeline keyframe {index} ({item!r}): emotion weight {w.strip()!r} is not a "
                             f"number") from None
        out[name.strip()] = out.get(name.strip(), 0.0) + weight
    return out


def parse_timeline(spec: str, ramp: float = DEFAULT_RAMP, curve: str = "linear") -> Timeline:
    """``"0:neutral, 1.5:happy@3, 6:surprised:0.6+happy:0.4@2.5"`` -> :class:`Timeline` (see the module
    docstring). Every error is one InputError line naming the offending keyframe."""
    keyframes = []
    items = [p.strip() for p in str(spec).split(",")]
    for i, item in enumerate(items, 1):
        if not item:
            raise InputError(f"timeline keyframe {i} is empty in {spec!r}; separate keyframes with single commas")
        m = _TIME.match(item)
        if not m:
            raise InputError(f"timeline keyframe {i} ({item!r}) must start with a time in seconds, e.g. "
                             f"'1.5:happy@2'")
        body = m.group(2).strip()
        emo, at, level = body.rpartition("@") if "@" in body else (body, "", "")
        intensity = None
        if at:
            try:
                intensity = float(level)
            except ValueError:
                raise InputError(f"timeline keyframe {i} ({item!r}): intensity {level.strip()!r} after '@' is "
                                 f"not a number; write e.g. '@2' or '@2.5'") from None
        keyframes.append(Keyframe(float(m.group(1)), _blend(emo, item, i), intensity, item))
    return Timeline(keyframes, ramp, curve)
