"""Phones -> visemes -> per-frame mouth/jaw motion of the 68-point face (canonical units).

A viseme is five articulatory parameters (:data:`PARAMS`):

- ``jaw``: jaw opening, as the downward travel of the lower lip in canonical units (0 = rest, ~0.17 for
  /A:/; the outer-eye-corner distance is 1 unit, about 9 cm);
- ``width``: horizontal lip spreading per mouth corner (+ spread as in /i:/, - narrowed);
- ``round``: lip rounding/protrusion 0..1 (/u:/, /w/, /S/);
- ``closure``: bilabial closure 0..1 (/p b m/ press the lips together whatever the jaw does);
- ``tuck``: labiodental tuck 0..1 (/f v/: the lower lip rises under the upper teeth).

Coarticulation follows Cohen & Massaro (1993): every phone has a target per parameter and a dominance
function that peaks over the phone and decays exponentially outside it; the parameter track is the
dominance-weighted mean of the targets, so neighbouring phones blend (anticipation and carry-over), while
phones with a high dominance (the closure of /p b m/, the tuck of /f v/, the rounding of /w u:/) reach
their targets. :func:`apply_speech` turns the five tracks into displacements of the 68 points: jaw
rotation moves the lower lip, chin and lower jaw line; width/round move the mouth corners and lips;
closure and tuck then close the remaining inner-lip gap.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from emotalk.mini.geometry import side_sign

PARAMS: tuple[str, ...] = ("jaw", "width", "round", "closure", "tuck")
JAW, WIDTH, ROUND, CLOSURE, TUCK = range(5)

# (jaw, width, round, closure, tuck)
_REST = (0.0, 0.0, 0.0, 0.6, 0.0)  # pauses: jaw at rest, lips relax shut
_V: dict[str, tuple[float, float, float, float, float]] = {
    # consonants
    "p": (0.015, 0.0, 0.0, 1.0, 0.0), "b": (0.015, 0.0, 0.0, 1.0, 0.0), "m": (0.015, 0.0, 0.0, 1.0, 0.0),
    "f": (0.03, 0.01, 0.0, 0.0, 1.0), "v": (0.03, 0.01, 0.0, 0.0, 1.0),
    "T": (0.05, 0.01, 0.0, 0.0, 0.0), "D": (0.045, 0.01, 0.0, 0.0, 0.0),
    "s": (0.025, 0.02, 0.0, 0.0, 0.0), "z": (0.025, 0.02, 0.0, 0.0, 0.0),
    "S": (0.04, -0.02, 0.7, 0.0, 0.0), "Z": (0.04, -0.02, 0.7, 0.0, 0.0),
    "tS": (0.04, -0.02, 0.7, 0.0, 0.0), "dZ": (0.04, -0.02, 0.7, 0.0, 0.0),
    "t": (0.045, 0.01, 0.0, 0.0, 0.0), "d": (0.045, 0.01, 0.0, 0.0, 0.0), "n": (0.045, 0.01, 0.0, 0.0, 0.0),
    "l": (0.06, 0.0, 0.0, 0.0, 0.0), "t#": (0.05, 0.0, 0.0, 0.0, 0.0),
    "k": (0.06, 0.0, 0.0, 0.0, 0.0), "g": (0.06, 0.0, 0.0, 0.0, 0.0), "N": (0.055, 0.0, 0.0, 0.0, 0.0),
    "x": (0.06, 0.0, 0.0, 0.0, 0.0), "?": (0.05, 0.0, 0.0, 0.0, 0.0),
    "h": (0.08, 0.0, 0.0, 0.0, 0.0),
    "r": (0.05, -0.02, 0.5, 0.0, 0.0), "r-": (0.05, -0.02, 0.45, 0.0, 0.0),
    "w": (0.03, -0.04, 1.0, 0.0, 0.0), "j": (0.04, 0.03, 0.0, 0.0, 0.0),
    # vowels
    "i:": (0.045, 0.045, 0.0, 0.0, 0.0), "i": (0.05, 0.035, 0.0, 0.0, 0.0),
    "I": (0.06, 0.03, 0.0, 0.0, 0.0), "I2": (0.06, 0.025, 0.0, 0.0, 0.0), "I#": (0.06, 0.02, 0.0, 0.0, 0.0),
    "E": (0.10, 0.025, 0.0, 0.0, 0.0), "e": (0.09, 0.025, 0.0, 0.0, 0.0),
    "a": (0.15, 0.02, 0.0, 0.0, 0.0), "a#": (0.13, 0.015, 0.0, 0.0, 0.0),
    "A:": (0.17, 0.0, 0.0, 0.0, 0.0), "aa": (0.16, 0.005, 0.0, 0.0, 0.0), "A@": (0.15, 0.0, 0.1, 0.0, 0.0),
    "V": (0.12, 0.0, 0.0, 0.0, 0.0), "0": (0.14, -0.01, 0.35, 0.0, 0.0),
    "@": (0.07, 0.0, 0.0, 0.0, 0.0), "@2": (0.06, 0.0, 0.0, 0.0, 0.0), "@5": (0.06, 0.0, 0.1, 0.0, 0.0),
    "3": (0.07, 0.0, 0.15, 0.0, 0.0), "3:": (0.08, -0.01, 0.35, 0.0, 0.0),
    "O:": (0.12, -0.03, 0.7, 0.0, 0.0), "O": (0.12, -0.03, 0.6, 0.0, 0.0), "O2": (0.11, -0.02, 0.5, 0.0, 0.0),
    "O@": (0.12, -0.03, 0.6, 0.0, 0.0), "o@": (0.11, -0.03, 0.6, 0.0, 0.0),
    "U": (0.06, -0.02, 0.6, 0.0, 0.0), "u:": (0.05, -0.04, 1.0, 0.0, 0.0),
    "@L": (0.06, 0.0, 0.0, 0.0, 0.0),
}
#: Diphthongs are two targets, each taking half the phone.
_DIPHTHONGS: dict[str, tuple[str, str]] = {
    "aI": ("a", "I"), "aI@": ("a", "@"), "aI3": ("a", "@"), "aU": ("a", "U"), "aU@": ("a", "@"),
    "eI": ("E", "i"), "oU": ("O2", "U"), "OI": ("O", "I"), "e@": ("E", "@"), "I@": ("I", "@"),
    "i@": ("i", "@"), "i@3": ("i", "@"), "U@": ("U", "@"),
}
# per-parameter dominance by phone kind
_DOM_VOWEL = np.array([1.0, 1.0, 1.0, 0.6, 0.6])
_DOM_CONS = np.array([0.7, 0.6, 0.6, 0.6, 0.6])
_DOM_WEAK = np.array([0.25, 0.25, 0.25, 0.25, 0.25])  # /h/, glottal stop: adopt the neighbours
_DOM_PAUSE = np.array([1.2, 1.2, 1.2, 1.2, 1.2])
_DOM_SPECIAL: dict[str, np.ndarray] = {
    **{c: np.array([2.5, 0.8, 0.8, 5.0, 0.6]) for c in "pbm"},
    **{c: np.array([1.5, 0.8, 0.8, 0.6, 4.0]) for c in "fv"},
    "w": np.array([0.8, 2.5, 4.0, 0.6, 0.6]), "u:": np.array([1.0, 2.0, 3.0, 0.6, 0.6]),
    **{c: np.array([0.8, 1.5, 2.5, 0.6, 0.6]) for c in ("S", "Z", "tS", "dZ")},
}
_VOWEL_CHARS = set("aeiouAEIOUV03@")


def _targets(symbol: str) -> tuple[np.ndarray, np.ndarray]:
    if symbol.startswith("_") or symbol == "":
        return np.array(_REST), _DOM_PAUSE
    if symbol in _DOM_SPECIAL:
        dom = _DOM_SPECIAL[symbol]
    elif symbol in ("h", "?"):
        dom = _DOM_WEAK
    elif symbol[0] in _VOWEL_CHARS:
        dom = _DOM_VOWEL
    else:
        dom = _DOM_CONS
    if symbol in _V:
        return np.array(_V[symbol]), dom
    # unknown variant (e.g. "n-", "l/", "@-"): longest known prefix, else a reduced vowel
    for k in range(len(symbol) - 1, 0, -1):
        if symbol[:k] in _V:
            return np.array(_V[symbol[:k]]), dom
    return np.array(_V["@"]), dom


def expand_phones(phones: Sequence) -> list[tuple[float, float, np.ndarray, np.ndarray]]:
    """Phones (objects with ``symbol``, ``start``, ``end``) -> ``(start, end, target(5), dominance(5))``
    segments; diphthongs are split into two halves."""
    segs = []
    for p in phones:
        a, b = float(p.start), float(p.end)
        if b <= a:
            continue
        if p.symbol in _DIPHTHONGS:
            m = (a + b) / 2
            for (s, e), sym in zip(((a, m), (m, b)), _DIPHTHONGS[p.symbol]):
                t, d = _targets(sym)
                segs.append((s, e, t, _DOM_VOWEL if sym not in _DOM_SPECIAL else d))
        else:
            t, d = _targets(p.symbol)
            segs.append((a, b, t, d))
    return segs


def viseme_track(phones: Sequence, num_frames: int, fps: float = 30.0, decay: float = 0.045,
                 strength: float = 1.0) -> np.ndarray:
    """(T, 5) viseme parameters at the frame times ``(t + 0.5) / fps`` (Cohen–Massaro blending).

    ``decay`` (s) is how fast a phone's dominance falls off outside it; ``strength`` scales the
    articulation (jaw, width, rounding) — a subject/emotion-specific speaking style.
    """
    segs = expand_phones(phones)
    if not segs or num_frames <= 0:
        return np.zeros((max(num_frames, 0), len(PARAMS)), dtype=np.float64)
    times = (np.arange(num_frames) + 0.5) / fps
    starts = np.array([s[0] for s in segs])
    ends = np.array([s[1] for s in segs])
    targets = np.stack([s[2] for s in segs])  # (S, 5)
    doms = np.stack([s[3] for s in segs])  # (S, 5)
    # distance of every frame time to every segment (0 inside it)
    dist = np.maximum(0.0, np.maximum(starts[None] - times[:, None], times[:, None] - ends[None]))  # (T, S)
    # short segments are represented a little beyond their edges (the articulators need time)
    dur = np.minimum(ends - starts, 0.2)[None]
    # lip closure and tuck are brief, precise gestures: their influence falls off faster
    tau = np.stack([decay + 0.25 * dur] * 3 + [0.015 + 0.1 * dur] * 2, axis=-1)  # (1, S, 5)
    dw = np.exp(-dist[:, :, None] / tau) * doms[None]  # (T, S, 5)
    track = (dw * targets[None]).sum(1) / np.maximum(dw.sum(1), 1e-9)
    track[:, [JAW, WIDTH, ROUND]] *= strength
    track[:, CLOSURE] = np.clip(track[:, CLOSURE] * 1.15, 0.0, 1.0)  # closure saturates: lips seal
    track[:, TUCK] = np.clip(track[:, TUCK] * 1.15, 0.0, 1.0)
    return track


# ----------------------------------------------------------------------------------------------------
# parameters -> 68-point displacements
# ----------------------------------------------------------------------------------------------------
#: how much of the lower-lip (jaw) travel each point makes when the jaw rotates open
JAW_WEIGHTS = np.zeros(68)
for _i, _w in {8: 1.0, 7: 0.95, 9: 0.95, 6: 0.85, 10: 0.85, 5: 0.65, 11: 0.65, 4: 0.42, 12: 0.42,
               3: 0.22, 13: 0.22, 2: 0.08, 14: 0.08, 1: 0.02, 15: 0.02}.items():
    JAW_WEIGHTS[_i] = _w * 1.05  # the chin travels a little further than the lower lip
JAW_WEIGHTS[[55, 56, 57, 58, 59, 65, 66, 67]] = 1.0
JAW_WEIGHTS[[48, 54, 60, 64]] = 0.45
UPPER_INNER = (61, 62, 63)
LOWER_INNER = (67, 66, 65)  # paired with UPPER_INNER
UPPER_OUTER = (50, 51, 52)
LOWER_OUTER = (58, 57, 56)  # below 61, 62, 63
CORNERS = (48, 54, 60, 64)


def _lateral_weights() -> np.ndarray:
    w = np.zeros(68)
    w[list(CORNERS)] = 1.0
    w[[49, 53, 59, 55, 61, 63, 65, 67]] = 0.55
    w[[50, 52, 58, 56]] = 0.25
    w[[3, 13, 4, 12]] = 0.12  # cheeks follow a little
    return w


LATERAL_WEIGHTS = _lateral_weights()


def apply_speech(points: np.ndarray, params: np.ndarray, neutral: np.ndarray) -> np.ndarray:
    """Apply viseme parameters ``(T, 5)`` to base shapes ``points`` ``(T, 68, 2)`` (canonical units).

    ``neutral`` ``(68, 2)`` is the subject's rest shape (sets the left/right sides). Order: jaw rotation,
    lip spreading/rounding, then bilabial closure and labiodental tuck close whatever inner-lip gap is
    left (so /p b m/ seal the lips even during a jaw drop).
    """
    pts = np.array(points, dtype=np.float64, copy=True)
    prm = np.asarray(params, dtype=np.float64)
    jaw, width, rnd, clo, tuck = (prm[:, k][:, None] for k in range(5))
    side = side_sign(neutral)[None]  # (1, 68)
    # jaw: lower lip/jaw line down; upper lip lifts a little; jaw line and corners draw in slightly
    pts[:, :, 1] += jaw * JAW_WEIGHTS[None]
    pts[:, list(UPPER_INNER), 1] -= 0.08 * jaw
    pts[:, [49, 50, 51, 52, 53], 1] -= 0.05 * jaw
    pts[:, :, 0] -= side * (0.10 * jaw) * np.minimum(JAW_WEIGHTS, 0.6)[None]
    # spreading (+) / narrowing (-) of the mouth corners
    pts[:, :, 0] += side * width * LATERAL_WEIGHTS[None]
    # rounding / protrusion: corners in, lips pout (outer lips away from the inner line)
    pts[:, :, 0] -= side * (0.075 * rnd) * LATERAL_WEIGHTS[None] * 1.1
    pts[:, [60, 64], 0] -= side[:, [60, 64]] * 0.02 * rnd
    pts[:, [49, 50, 51, 52, 53], 1] -= 0.012 * rnd
    pts[:, [55, 56, 57, 58, 59], 1] += 0.012 * rnd
    # closure / tuck act on the remaining inner-lip gap
    gap = np.maximum(pts[:, list(LOWER_INNER), 1] - pts[:, list(UPPER_INNER), 1], 0.0)  # (T, 3)
    d_clo = clo * gap  # closure seals the lips (lower lip 3/4 of the way, upper 1/4)
    d_tuck = tuck * np.maximum(gap - d_clo - 0.008, 0.0) * 0.95  # the lower lip rises to the upper teeth
    lower_up = 0.75 * d_clo + d_tuck
    upper_down = 0.25 * d_clo
    pts[:, list(LOWER_INNER), 1] -= lower_up
    pts[:, list(LOWER_OUTER), 1] -= lower_up * 0.9 + 0.012 * tuck
    pts[:, 59, 1] -= 0.5 * lower_up[:, 0]
    pts[:, 55, 1] -= 0.5 * lower_up[:, 2]
    pts[:, list(UPPER_INNER), 1] += upper_down - 0.006 * tuck
    pts[:, list(UPPER_OUTER), 1] += upper_down * 0.9
    pts[:, [49, 53], 1] += upper_down[:, [0, 2]] * 0.5
    return pts
