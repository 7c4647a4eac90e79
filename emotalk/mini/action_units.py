"""Emotions as FACS action units (Ekman & Friesen) acting on the 68-point face, in canonical units.

Each action unit (AU) is a displacement field on the landmarks it moves, given at MEAD level 3 as
``(outward, upward)`` per point — *outward* is away from the facial midline, so one definition serves both
sides. The jaw drop (AU26) is not a displacement but extra jaw opening, added to the speech jaw track so
the jaw rotation model moves the chin and lower lip consistently.

Emotion -> AUs (EMFACS-style prototypes, Friesen & Ekman 1983; weights in :data:`EMOTION_AUS`):

==========  ==================================================================================
happy       AU6 cheek raiser (lower lids up, cheeks up) + AU12 lip corner puller + AU25 lips part
            (teeth show at level 3) — a Duchenne smile on top of whatever the photo's face does
sad         AU1 inner brow raiser + AU4 brow lowerer + AU15 lip corner depressor + AU17 chin raiser
angry       AU4 + AU5 upper lid raiser + AU7 lid tightener + AU23 lip tightener + AU24 lip presser
surprised   AU1 + AU2 outer brow raiser + AU5 + AU26 jaw drop
fear        AU1 + AU2 + AU4 + AU5 + AU20 lip stretcher + AU26
disgusted   AU4 + AU7 + AU9 nose wrinkler + AU10 upper lip raiser + AU15 + AU16 lower lip depressor
contempt    unilateral AU12 + AU14 dimpler (the face's left side)
neutral     none
==========  ==================================================================================

Amplitudes and levels — sources and reasoning:

* **Intensity scale.** The FACS Manual (Ekman, Friesen & Hager 2002, ch. 2 "Intensity scoring") scores
  every AU on five ordinal levels, A trace, B slight, C marked/pronounced, D severe/extreme, E maximum,
  drawn as *unequal* intervals of the AU's range of appearance change: A and E are narrow, C and D span
  most of it. MEAD (Wang et al., ECCV 2020, §3) records three levels per emotion, described as weak,
  medium and strong (the strongest the actor can show). We map level 1 -> B, 2 -> C, 3 -> D and take the
  intervals' midpoints as fractions of the maximum (E) change: B ~0.30, C ~0.55, D ~0.85. The fields
  below are written at level 3 (D), so :data:`LEVEL_SCALE` is each midpoint over D's:
  ``{1: 0.30/0.85, 2: 0.55/0.85, 3: 1}`` ~ ``{1: 0.35, 2: 0.65, 3: 1.0}``.
* **Millimetres.** One canonical unit is the outer-eye-corner (ex–ex) distance, about 90 mm in adults
  (Farkas, *Anthropometry of the Head and Face*, 1994: ex–ex ~87 mm in women, ~91 mm in men), so 0.1 unit
  ~ 9 mm. The level-3 (D) movements are our estimates of "severe" appearance changes as the Manual
  describes them, in that scale — not measurements (no MEAD video is available here): brows raised
  ~11 mm (AU1+2, surprise; inner brow ~12 mm), inner brows lowered ~10 mm and drawn together ~5 mm
  (AU4), upper lid raised ~3.5 mm (AU5, sclera above the iris), lower lid raised ~3 mm (AU6/AU7), lip
  corners pulled ~9 mm out and ~8 mm up (AU12), down ~8 mm (AU15), out ~8 mm (AU20), upper lip raised
  ~5 mm (AU10), nostril wings raised ~4 mm (AU9), lower lip ~2.5–4.5 mm (AU16/AU17), lips parted ~6 mm
  (AU25, so a level-3 smile bares the teeth), jaw dropped ~11 mm (AU26, lower-lip travel).
* **Check.** ``tests/test_mead_mini.py`` measures the generated sidecar landmarks per emotion, level and
  region (brows, eyes, mouth, nose) against stated ranges and requires them to grow with the level.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from emotalk.data.emotions import EMOTIONS, canonical_emotion
from emotalk.mini.geometry import side_sign
from emotalk.models.face_graph import INNER_LIP_PAIRS

#: MEAD level -> fraction of the level-3 (FACS D) field: FACS interval midpoints B, C, D over D's (above)
LEVEL_SCALE: dict[int, float] = {1: 0.35, 2: 0.65, 3: 1.0}


@dataclass(frozen=True)
class ActionUnit:
    number: int
    name: str
    #: point -> (outward, upward) at level 3 (FACS D), canonical units
    moves: dict[int, tuple[float, float]] = field(default_factory=dict)
    #: extra jaw opening (AU26 and friends), canonical units of lower-lip travel
    jaw: float = 0.0
    #: fraction of the face's *resting* inner-lip gap this AU closes (lip pressing): a photo that shows
    #: its teeth at rest gets its lips pressed together, a closed-lip face is unaffected
    seal: float = 0.0


def _sym(pairs: dict[tuple[int, ...], tuple[float, float]]) -> dict[int, tuple[float, float]]:
    out: dict[int, tuple[float, float]] = {}
    for idx, mv in pairs.items():
        for i in idx:
            out[i] = mv
    return out


ACTION_UNITS: dict[int, ActionUnit] = {au.number: au for au in [
    ActionUnit(1, "inner brow raiser", _sym({
        (21, 22): (0.0, 0.13), (20, 23): (0.0, 0.10), (19, 24): (0.0, 0.06), (18, 25): (0.0, 0.025)})),
    ActionUnit(2, "outer brow raiser", _sym({
        (17, 26): (0.0, 0.09), (18, 25): (0.0, 0.10), (19, 24): (0.0, 0.075), (20, 23): (0.0, 0.03)})),
    ActionUnit(4, "brow lowerer", _sym({
        (21, 22): (-0.055, -0.11), (20, 23): (-0.04, -0.095), (19, 24): (-0.02, -0.07),
        (18, 25): (-0.005, -0.045), (17, 26): (0.0, -0.025), (37, 38, 43, 44): (0.0, -0.012)})),
    ActionUnit(5, "upper lid raiser", _sym({(37, 38, 43, 44): (0.0, 0.04)})),
    ActionUnit(6, "cheek raiser", _sym({
        (40, 41, 46, 47): (0.0, 0.035), (36, 45): (0.0, 0.006), (1, 15): (0.0, 0.02), (2, 14): (0.0, 0.022),
        (3, 13): (0.0, 0.015), (17, 26): (0.0, -0.015), (18, 25): (0.0, -0.008),
        (48, 54, 60, 64): (0.005, 0.01)})),
    ActionUnit(7, "lid tightener", _sym({
        (40, 41, 46, 47): (0.0, 0.035), (37, 38, 43, 44): (0.0, -0.018)})),
    ActionUnit(9, "nose wrinkler", _sym({
        (31, 35): (0.015, 0.045), (32, 34): (0.008, 0.035), (33,): (0.0, 0.03), (30,): (0.0, 0.018),
        (29,): (0.0, 0.008), (49, 53): (0.0, 0.025), (50, 52, 51): (0.0, 0.03), (61, 62, 63): (0.0, 0.025),
        (21, 22): (-0.015, -0.04), (20, 23): (0.0, -0.02), (40, 41, 46, 47): (0.0, 0.015)})),
    ActionUnit(10, "upper lip raiser", _sym({
        (50, 51, 52): (0.0, 0.06), (49, 53): (0.0, 0.05), (61, 62, 63): (0.0, 0.05), (48, 54): (0.0, 0.015),
        (60, 64): (0.0, 0.02), (31, 35): (0.008, 0.015), (32, 33, 34): (0.0, 0.008)})),
    ActionUnit(12, "lip corner puller", _sym({
        (48, 54): (0.10, 0.09), (60, 64): (0.095, 0.085), (49, 53): (0.045, 0.045), (59, 55): (0.05, 0.05),
        (61, 63): (0.02, 0.035), (67, 65): (0.025, 0.025), (50, 52): (0.015, 0.015), (58, 56): (0.015, 0.012),
        (31, 35): (0.01, 0.006), (3, 13): (0.015, 0.012), (4, 12): (0.012, 0.008)})),
    ActionUnit(14, "dimpler", _sym({
        (48, 54): (-0.02, 0.035), (60, 64): (-0.02, 0.03), (49, 53): (-0.008, 0.015),
        (59, 55): (-0.008, 0.018), (4, 12): (0.006, 0.0)})),
    ActionUnit(15, "lip corner depressor", _sym({
        (48, 54): (0.015, -0.09), (60, 64): (0.012, -0.08), (59, 55): (0.006, -0.055), (49, 53): (0.0, -0.035),
        (61, 63): (0.0, -0.015), (67, 65): (0.0, -0.02), (58, 56): (0.0, -0.018), (5, 11): (0.0, -0.01)})),
    ActionUnit(16, "lower lip depressor", _sym({
        (65, 66, 67): (0.0, -0.035), (56, 57, 58): (0.0, -0.05), (55, 59): (0.0, -0.03)})),
    ActionUnit(17, "chin raiser", _sym({
        (56, 57, 58): (0.0, 0.03), (65, 66, 67): (0.0, 0.015), (55, 59): (0.0, 0.015), (7, 8, 9): (0.0, 0.02)}),
        seal=0.6),
    ActionUnit(20, "lip stretcher", _sym({
        (48, 54): (0.09, -0.02), (60, 64): (0.085, -0.015), (49, 53): (0.045, -0.005), (59, 55): (0.045, -0.01),
        (61, 63, 67, 65): (0.02, 0.0), (5, 11): (0.008, 0.0), (4, 12): (0.008, 0.0)})),
    ActionUnit(23, "lip tightener", _sym({
        (48, 54): (-0.04, 0.0), (60, 64): (-0.035, 0.0), (49, 53): (-0.018, -0.014), (50, 51, 52): (0.0, -0.02),
        (59, 55): (-0.018, 0.014), (56, 57, 58): (0.0, 0.02)}), seal=0.5),
    ActionUnit(24, "lip presser", _sym({
        (50, 51, 52): (0.0, -0.015), (56, 57, 58): (0.0, 0.02), (48, 54): (-0.01, 0.0)}), seal=1.0),
    ActionUnit(25, "lips part", _sym({
        (61, 62, 63): (0.0, 0.03), (50, 51, 52): (0.0, 0.015), (49, 53): (0.0, 0.008), (65, 66, 67): (0.0, -0.035),
        (56, 57, 58): (0.0, -0.025), (55, 59): (0.0, -0.015)})),
    ActionUnit(26, "jaw drop", {}, jaw=0.12),
]}

#: emotion -> {AU number: weight}
EMOTION_AUS: dict[str, dict[int, float]] = {
    "neutral": {},
    "happy": {6: 1.0, 12: 1.0, 25: 1.0},
    "sad": {1: 1.0, 4: 0.4, 15: 1.0, 17: 0.8},
    "angry": {4: 1.0, 5: 0.4, 7: 1.0, 23: 1.0, 24: 0.7},
    "surprised": {1: 1.0, 2: 1.0, 5: 1.0, 26: 1.0},
    "fear": {1: 1.0, 2: 0.6, 4: 0.6, 5: 1.0, 20: 1.0, 26: 0.6},
    "disgusted": {4: 0.5, 7: 0.5, 9: 1.0, 10: 0.8, 15: 0.5, 16: 0.5},
    "contempt": {12: 0.6, 14: 1.0},
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
    if unit.seal:
        # close the resting inner-lip gap, both lips meeting half-way; the outer lip lines follow
        pts = np.asarray(neutral, np.float64)
        for (up_i, lo_i), (uo, lo_o) in zip(INNER_LIP_PAIRS, ((50, 58), (51, 57), (52, 56))):
            if side and side_sign(pts)[up_i] not in (0, side):
                continue
            half = 0.5 * unit.seal * max(pts[lo_i, 1] - pts[up_i, 1], 0.0)
            d[up_i, 1] += half
            d[lo_i, 1] -= half
            d[uo, 1] += 0.8 * half
            d[lo_o, 1] -= 0.8 * half
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
