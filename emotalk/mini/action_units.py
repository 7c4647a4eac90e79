"""Emotions as FACS action units (Ekman & Friesen) acting on the 68-point face, in canonical units.

Each action unit (AU) is a displacement field on the landmarks it moves, given at full (level-3)
strength as ``(outward, upward)`` per point — *outward* is away from the facial midline, so one definition
serves both sides. The jaw drop (AU26) is not a displacement but extra jaw opening, added to the speech
jaw track so the jaw rotation model moves the chin and lower lip consistently.

Emotion -> AUs (EMFACS-style prototypes, with weights):

==========  ====================================================
happy       AU6 cheek raiser + AU12 lip corner puller
sad         AU1 inner brow raiser + AU4 brow lowerer + AU15 lip corner depressor
angry       AU4 brow lowerer + AU5 upper lid raiser + AU7 lid tightener + AU23 lip tightener
surprised   AU1 + AU2 outer brow raiser + AU5 + AU26 jaw drop
fear        AU1 + AU2 + AU4 + AU5 + AU20 lip stretcher + AU26
disgusted   AU9 nose wrinkler + AU15 + AU16 lower lip depressor
contempt    unilateral AU12 + AU14 dimpler (the face's left side)
neutral     none
==========  ====================================================

MEAD's intensity levels 1/2/3 scale the AUs by :data:`LEVEL_SCALE`.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from emotalk.data.emotions import EMOTIONS, canonical_emotion
from emotalk.mini.geometry import side_sign

LEVEL_SCALE: dict[int, float] = {1: 0.45, 2: 0.75, 3: 1.0}


@dataclass(frozen=True)
class ActionUnit:
    number: int
    name: str
    #: point -> (outward, upward) at full strength, canonical units
    moves: dict[int, tuple[float, float]] = field(default_factory=dict)
    #: extra jaw opening (AU26 and friends), canonical units of lower-lip travel
    jaw: float = 0.0


def _sym(pairs: dict[tuple[int, ...], tuple[float, float]]) -> dict[int, tuple[float, float]]:
    out: dict[int, tuple[float, float]] = {}
    for idx, mv in pairs.items():
        for i in idx:
            out[i] = mv
    return out


ACTION_UNITS: dict[int, ActionUnit] = {au.number: au for au in [
    ActionUnit(1, "inner brow raiser", _sym({
        (21, 22): (0.0, 0.075), (20, 23): (0.0, 0.055), (19, 24): (0.0, 0.03), (18, 25): (0.0, 0.012)})),
    ActionUnit(2, "outer brow raiser", _sym({
        (17, 26): (0.0, 0.065), (18, 25): (0.0, 0.07), (19, 24): (0.0, 0.05), (20, 23): (0.0, 0.02)})),
    ActionUnit(4, "brow lowerer", _sym({
        (21, 22): (-0.03, -0.05), (20, 23): (-0.02, -0.045), (19, 24): (-0.01, -0.035),
        (18, 25): (0.0, -0.02), (17, 26): (0.0, -0.01), (37, 38, 43, 44): (0.0, -0.008)})),
    ActionUnit(5, "upper lid raiser", _sym({(37, 38, 43, 44): (0.0, 0.03)})),
    ActionUnit(6, "cheek raiser", _sym({
        (40, 41, 46, 47): (0.0, 0.022), (36, 45): (0.0, 0.008), (1, 15): (0.0, 0.012), (2, 14): (0.0, 0.012),
        (48, 54, 60, 64): (0.005, 0.012)})),
    ActionUnit(7, "lid tightener", _sym({
        (40, 41, 46, 47): (0.0, 0.022), (37, 38, 43, 44): (0.0, -0.012)})),
    ActionUnit(9, "nose wrinkler", _sym({
        (31, 35): (0.012, 0.032), (32, 34): (0.006, 0.024), (33,): (0.0, 0.022), (30,): (0.0, 0.012),
        (29,): (0.0, 0.005), (49, 53): (0.0, 0.02), (50, 52, 51): (0.0, 0.025), (61, 62, 63): (0.0, 0.02),
        (21, 22): (-0.01, -0.025), (20, 23): (0.0, -0.012), (40, 41, 46, 47): (0.0, 0.012)})),
    ActionUnit(12, "lip corner puller", _sym({
        (48, 54): (0.07, 0.065), (60, 64): (0.065, 0.06), (49, 53): (0.03, 0.03), (59, 55): (0.035, 0.035),
        (61, 63): (0.015, 0.015), (67, 65): (0.02, 0.02), (50, 52): (0.01, 0.01), (58, 56): (0.012, 0.01),
        (31, 35): (0.008, 0.004), (3, 13): (0.012, 0.006), (4, 12): (0.01, 0.004)})),
    ActionUnit(14, "dimpler", _sym({
        (48, 54): (-0.012, 0.015), (60, 64): (-0.012, 0.012), (49, 53): (-0.006, 0.006),
        (59, 55): (-0.006, 0.006)})),
    ActionUnit(15, "lip corner depressor", _sym({
        (48, 54): (0.012, -0.07), (60, 64): (0.01, -0.062), (59, 55): (0.005, -0.038), (49, 53): (0.0, -0.03),
        (61, 63): (0.0, -0.012), (67, 65): (0.0, -0.014), (58, 56): (0.0, -0.012), (5, 11): (0.0, -0.008)})),
    ActionUnit(16, "lower lip depressor", _sym({
        (65, 66, 67): (0.0, -0.028), (56, 57, 58): (0.0, -0.035), (55, 59): (0.0, -0.018)})),
    ActionUnit(20, "lip stretcher", _sym({
        (48, 54): (0.06, -0.015), (60, 64): (0.055, -0.012), (49, 53): (0.03, -0.004), (59, 55): (0.03, -0.008),
        (61, 63, 67, 65): (0.015, 0.0), (5, 11): (0.006, 0.0)})),
    ActionUnit(23, "lip tightener", _sym({
        (48, 54): (-0.025, 0.0), (60, 64): (-0.02, 0.0), (49, 53): (-0.012, -0.01), (50, 51, 52): (0.0, -0.014),
        (59, 55): (-0.012, 0.01), (56, 57, 58): (0.0, 0.014)})),
    ActionUnit(26, "jaw drop", {}, jaw=0.085),
]}

#: emotion -> {AU number: weight}
EMOTION_AUS: dict[str, dict[int, float]] = {
    "neutral": {},
    "happy": {6: 1.0, 12: 1.0},
    "sad": {1: 1.0, 4: 0.55, 15: 1.0},
    "angry": {4: 1.0, 5: 1.0, 7: 0.8, 23: 1.0},
    "surprised": {1: 1.0, 2: 1.0, 5: 1.0, 26: 1.0},
    "fear": {1: 1.0, 2: 0.6, 4: 0.5, 5: 1.0, 20: 1.0, 26: 0.55},
    "disgusted": {9: 1.0, 15: 0.7, 16: 0.8},
    "contempt": {12: 0.8, 14: 1.0},
}
#: emotions whose AUs act on one side of the face only (side sign: +1 = the face's left, image right)
UNILATERAL: dict[str, int] = {"contempt": +1}
assert set(EMOTION_AUS) == set(EMOTIONS)


def au_displacement(au: int | ActionUnit, neutral: np.ndarray, side: int = 0) -> np.ndarray:
    """(68, 2) displacement (x right, y down) of one AU at full strength on a face ``neutral``
    (canonical, sets which points are left/right). ``side`` +1/-1 restricts it to one side."""
    unit = ACTION_UNITS[au] if isinstance(au, int) else au
    sides = side_sign(neutral)
    d = np.zeros((68, 2))
    for i, (out, up) in unit.moves.items():
        s = sides[i]
        if side and s != side:
            if s != 0:
                continue
            out, up = 0.0, up * 0.5  # midline points follow half-way
        d[i, 0] = s * out
        d[i, 1] = -up
    return d


def level_scale(level: float) -> float:
    """Level 1..3 (fractional allowed) -> AU strength."""
    lv = float(np.clip(level, 1.0, 3.0))
    lo = int(np.floor(lv))
    if lo >= 3:
        return LEVEL_SCALE[3]
    f = lv - lo
    return (1 - f) * LEVEL_SCALE[lo] + f * LEVEL_SCALE[lo + 1]


def emotion_displacement(emotion: str, level: float, neutral: np.ndarray) -> tuple[np.ndarray, float]:
    """``(displacement (68, 2), extra jaw opening)`` of ``emotion`` at ``level`` on the face ``neutral``."""
    emo = canonical_emotion(emotion)
    k = level_scale(level) if emo != "neutral" else 0.0
    side = UNILATERAL.get(emo, 0)
    disp = np.zeros((68, 2))
    jaw = 0.0
    for au, w in EMOTION_AUS[emo].items():
        disp += k * w * au_displacement(au, neutral, side)
        jaw += k * w * ACTION_UNITS[au].jaw
    return disp, jaw
