"""The emotion vocabulary and the emotion-control vector fed to the emotion encoders.

The control vector is ``[emotion weights (len(vocab)) | intensity weights (levels)]``. For one emotion
at an integer level this is the concatenation of two one-hot vectors, exactly the paper's input. Beyond
the paper, a *blend* (``happy:0.7,surprised:0.3``) puts its normalised weights on several emotions, and a
*continuous* intensity (e.g. 2.5) splits linearly between the two neighbouring levels.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from emotalk.errors import InputError

#: MEAD's 8 classes (alphabetical except neutral first); the vocabulary of every dataset reader.
EMOTIONS: tuple[str, ...] = ("neutral", "angry", "contempt", "disgusted", "fear", "happy", "sad",
                             "surprised")
#: The paper's G_L setting: six emotions at two levels (a config choice).
PAPER_EMOTIONS: tuple[str, ...] = ("happy", "angry", "sad", "surprised", "fear", "disgusted")
INTENSITY_LEVELS = 3

ALIASES = {"anger": "angry", "disgust": "disgusted", "fearful": "fear", "surprise": "surprised",
           "happiness": "happy", "sadness": "sad", "calm": "neutral"}


def canonical_emotion(name: str, vocab: Sequence[str] = EMOTIONS) -> str:
    key = name.strip().lower()
    key = ALIASES.get(key, key)
    if key not in vocab:
        raise InputError(f"unknown emotion {name!r}; choose one of: {', '.join(vocab)}")
    return key


def parse_emotion(spec: str | Mapping[str, float], vocab: Sequence[str] = EMOTIONS) -> dict[str, float]:
    """``"happy"`` or ``"happy:0.7,surprised:0.3"`` or a mapping -> normalised ``{emotion: weight}``."""
    if isinstance(spec, Mapping):
        items = list(spec.items())
    else:
        items = []
        for part in str(spec).split(","):
            part = part.strip()
            if not part:
                continue
            if ":" in part:
                name, w = part.split(":", 1)
                try:
                    weight = float(w)
                except ValueError:
                    raise InputError(f"emotion weight {w!r} in {spec!r} is not a number") from None
            else:
                name, weight = part, 1.0
            items.append((name, weight))
    if not items:
        raise InputError(f"no emotion given; choose one of: {', '.join(vocab)}")
    out: dict[str, float] = {}
    for name, weight in items:
        try:
            weight = float(weight)
        except (TypeError, ValueError):
            raise InputError(f"emotion weight for {name!r} must be a number, got {weight!r}") from None
        if not np.isfinite(weight) or weight < 0:  # NaN / inf would poison the normalisation below
            raise InputError(f"emotion weight for {name!r} must be a finite number >= 0, got {weight}")
        key = canonical_emotion(name, vocab)
        out[key] = out.get(key, 0.0) + float(weight)
    total = sum(out.values())
    if total <= 0:
        raise InputError(f"emotion weights in {spec!r} sum to zero")
    return {k: v / total for k, v in out.items()}


def intensity_weights(intensity: float, levels: int = INTENSITY_LEVELS) -> np.ndarray:
    """Level ``1..levels`` -> one-hot; fractional levels interpolate between neighbours."""
    try:
        x = float(intensity)
    except (TypeError, ValueError):
        raise InputError(f"intensity must be a number between 1 and {levels}, got {intensity!r}") from None
    if not (1.0 <= x <= levels) or np.isnan(x):
        raise InputError(f"intensity must be between 1 and {levels}, got {intensity}")
    w = np.zeros(levels, dtype=np.float32)
    lo = int(np.floor(x)) - 1
    frac = x - np.floor(x)
    w[lo] = 1.0 - frac
    if frac > 0:
        w[lo + 1] = frac
    return w


def emotion_vector(emotion: str | Mapping[str, float], intensity: float = 1,
                   vocab: Sequence[str] = EMOTIONS, levels: int = INTENSITY_LEVELS) -> np.ndarray:
    """The control vector ``(len(vocab) + levels,)`` float32."""
    weights = parse_emotion(emotion, vocab)
    e = np.zeros(len(vocab), dtype=np.float32)
    for k, w in weights.items():
        e[list(vocab).index(k)] = w
    return np.concatenate([e, intensity_weights(intensity, levels)])


def emotion_dim(vocab: Sequence[str] = EMOTIONS, levels: int = INTENSITY_LEVELS) -> int:
    return len(vocab) + levels
