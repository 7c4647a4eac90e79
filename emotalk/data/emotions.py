"""The emotion vocabulary and the emotion-control vector fed to the emotion encoders.

The control vector is ``[emotion weights (len(vocab)) | intensity weights (levels)]``. For one emotion
at an integer level this is the concatenation of two one-hot vectors, exactly the paper's input. Beyond
the paper, a *blend* (``happy:0.7,surprised:0.3``) puts its normalised weights on several emotions, and a
*continuous* intensity (e.g. 2.5) splits linearly between the two neighbouring levels.

Two vocabularies ship (``configs/*/mead.yaml`` and ``mead-8x3.yaml``):

* the paper's (§3.1): six emotions (:data:`PAPER_EMOTIONS`) at two levels, low and high
  (:data:`PAPER_INTENSITY_LEVELS`). Neutral is not one of its emotions; it is the control vector with an
  all-zero emotion part at level 1 (:func:`emotion_vector` builds it for ``"neutral"``), so neutral clips
  still train G_L and G_T and Tables 4 and 5 (the neutral rows) work;
* MEAD's own: 8 classes (:data:`EMOTIONS`, neutral included) at 3 levels.

Datasets record the source's level (MEAD ``level_1..3``, CREMA-D LO/MD/HI -> 1..3, RAVDESS normal/strong
-> 2/3); :func:`control_level` is the one place that maps it onto a model's levels (see there).
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
#: The paper's two intensity levels: 1 = low, 2 = high.
PAPER_INTENSITY_LEVELS = 2
#: Source level (MEAD level_1 weak, level_2 medium, level_3 strong) -> the paper's two levels. Medium goes
#: with weak: "high" is then MEAD's strongest, exaggerated take only, and RAVDESS's normal / strong (our
#: levels 2 / 3) land on low / high as that dataset names them. CREMA-D: LO, MD, XX -> low, HI -> high.
THREE_TO_TWO_LEVELS: dict[int, int] = {1: 1, 2: 1, 3: 2}

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


def control_level(level: int, levels: int) -> int:
    """A dataset's recorded intensity level (1..3) as a model's level (1..``levels``): the one mapping.

    ``levels >= 3`` keeps the level (clamped); ``levels == 2`` (the paper) applies
    :data:`THREE_TO_TWO_LEVELS`; ``levels == 1`` has a single level.
    """
    lv = max(1, int(level))
    if levels == PAPER_INTENSITY_LEVELS:
        return THREE_TO_TWO_LEVELS[min(lv, 3)]
    return min(lv, int(levels))


def trains_on(emotion: str, vocab: Sequence[str]) -> bool:
    """Whether a clip labelled ``emotion`` is a training sample for a model with vocabulary ``vocab``:
    its emotions, plus neutral always (the all-zero emotion part when the vocabulary has no neutral)."""
    return emotion in vocab or emotion == "neutral"


def parse_control(spec: str | Mapping[str, float], vocab: Sequence[str] = EMOTIONS) -> dict[str, float]:
    """:func:`parse_emotion` for a model's control vector: ``neutral`` is accepted in every vocabulary (in one
    without it, such as the paper's six emotions, neutral is the all-zero emotion part)."""
    return parse_emotion(spec, list(vocab) if "neutral" in vocab else [*vocab, "neutral"])


def emotion_vector(emotion: str | Mapping[str, float], intensity: float = 1,
                   vocab: Sequence[str] = EMOTIONS, levels: int = INTENSITY_LEVELS) -> np.ndarray:
    """The control vector ``(len(vocab) + levels,)`` float32.

    In a vocabulary without neutral (the paper's six emotions) ``"neutral"`` is accepted and contributes
    an all-zero emotion part (a blend ``neutral:0.5,happy:0.5`` gives happy half its weight)."""
    weights = parse_control(emotion, vocab)
    e = np.zeros(len(vocab), dtype=np.float32)
    for k, w in weights.items():
        if k in vocab:
            e[list(vocab).index(k)] = w
    return np.concatenate([e, intensity_weights(intensity, levels)])


def emotion_dim(vocab: Sequence[str] = EMOTIONS, levels: int = INTENSITY_LEVELS) -> int:
    return len(vocab) + levels
