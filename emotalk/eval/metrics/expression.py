"""Is the asked-for emotion visible in the rendered pixels? Landmark metrics re-detected with dlib on the
rendered frames (no weights needed), computed on the *emotion grid* (:mod:`emotalk.eval.emotion_grid`): one
photo and one speech clip rendered by the same method in every emotion and intensity, plus its neutral
rendering and the landmarks that drove each rendering.

Regions: brows (points 17-26), eyes (36-47), mouth (48-67). Distances are divided by the outer-eye-corner
distance of the neutral rendering (points 36, 45), so numbers do not depend on the frame size.

- **Expression transfer** (``expr_transfer_brows|eyes|mouth`` -> ExT-brows, ExT-eyes, ExT-mouth): with
  ``got`` = re-detected landmarks of the emotional rendering minus those of the neutral rendering (same
  frame, same points) and ``asked`` = the driving landmarks of the emotional rendering minus the neutral
  one's, ``ExT = sum <got, asked> / sum |asked|^2`` over all frames, region points and emotional grid
  renderings (a least-squares gain). 1.0: the renderer draws exactly the displacement it was asked for;
  0: it ignores the expression; 0.5: half of it; negative: the wrong direction. The warp renderer, which
  moves pixels exactly to the driving landmarks, is the practical ceiling.
- **Emotion separation** (``emotion_separation`` -> Sep): per rendering, the mean over frames and region
  points of ``|re-detected - re-detected neutral|`` over the eye distance; reported: the mean over the
  emotions at the highest integer level and over the three regions. ``details`` holds every emotion x
  level x region, and the same number for the driving landmarks (what was asked).
- **Intensity monotonicity** (``intensity_monotonic`` -> Int-mono): per emotion, is the separation (mean
  over regions) strictly increasing over the grid's intensities (levels 1 < 2 < 3 and the fractional ones
  in between)? Reported: the share of emotions for which it is; ``details``: yes/no and the numbers.
- **Blink visibility** (``blink_visibility`` -> Blink-ap): on the grid's blink rendering (the neutral
  frames again with the eyelids closed in the driving landmarks, ``blink`` = 1), the re-detected eye
  aperture (eyelid gap over eye width, both eyes) relative to the open eyes of the same frames. dlib cannot
  see a blink at these sizes: on *real* mead-mini frames at a blink's middle frame (the eyes visibly closed
  to a line) it reads 0.44-0.52 of open on the astronaut subjects and 0.84 behind Grace Hopper's glasses,
  also on 4x upscaled frames (its shape model favours open eyes). Kept for comparison; Blink-px is the
  blink measure.
- **Blink, in pixels** (``blink_pixels`` -> Blink-px): how open the rendered eyes look at the blink, from
  the pixels (:func:`eye_opening`): per shut frame and its open twin, in each eye's iris columns, the height
  of the dark band (iris under the lash line) minus the lash line's own height (a closed eye is a dark
  line), over the same on the open frame. 0 = closed to a line, 1 = the blink does not show; lower is
  better. Calibrated on real frames (mead-mini's ground truth, blink track from the sidecar, 222 blinks of
  8 subjects): at a blink's middle frame 0.15-0.31 per subject (held-out W007 0.29, W008 0.16; the same at
  128 px upscaled), another open frame 1.00 (min 0.86), half-closed frames follow ``1 - closure`` with
  correlation 0.82-0.99. That real-frame value is the ground-truth row's ceiling.
- **Mouth-interior PSNR** (``mouth_psnr`` -> Mouth-PSNR): on the test clips, the PSNR of the generated
  frames against the ground truth inside the ground truth's inner-lip polygon (points 60-67, dlib
  re-detected on the real frames), on the frames where that polygon is open (area >= ``MOUTH_OPEN_AREA``
  squared eye distances); squared errors pooled over all those pixels of all clips. It asks whether the
  renderer paints the dark cavity and teeth where the real mouth shows them, which the image-wide PSNR
  barely notices (the mouth interior is ~1 % of the crop).
"""
from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np

from emotalk.eval.face_features import sample_landmarks
from emotalk.eval.feature_store import Side
from emotalk.eval.metrics.base import MetricOptions, MetricResult, VideoSample, register_metric
from emotalk.models.face_graph import BROWS, EYELID_PAIRS, EYES, MOUTH, eye_distance

#: the regions the expression metrics report, in table order
REGIONS: dict[str, tuple[int, ...]] = {"brows": tuple(BROWS), "eyes": tuple(EYES), "mouth": tuple(MOUTH)}
#: eye corners (outer, inner) of each eye, for the eye width in :func:`eye_aperture`
EYE_CORNERS = ((36, 39), (42, 45))
#: the eye polygons (dlib's six points per eye, in order) and the upper lids from corner to corner
EYE_POLYGONS = (tuple(range(36, 42)), tuple(range(42, 48)))
UPPER_LIDS = ((36, 37, 38, 39), (42, 43, 44, 45))
#: :func:`eye_dark_columns` samples each eye on an eye-aligned grid: EYE_COLUMNS columns from the outer to the
#: inner corner, rows from EYE_ROWS[0] to EYE_ROWS[1] eye widths across the corner line (negative: above) every
#: ROW_STEP eye widths (sub-pixel: an eye 25 px wide gets ~3 rows a pixel, bilinear)
EYE_COLUMNS, EYE_ROWS, ROW_STEP = 40, (-0.6, 0.5), 0.0125
#: the lid skin's luminance: the median of this band above the open upper lid, in eye widths (below the brow)
SKIN_BAND = (0.12, 0.30)
#: dark rows count from this far (eye widths) above the open upper lid to this far below the open lower lid
LID_MARGIN = 0.1
#: the columns measured: this share of the eye's width, away from the corners
CENTRAL = (0.15, 0.85)
#: landmarks a blink does not move (eye corners, nose): they register the open eye onto a shut frame's pose
STILL_POINTS = (36, 39, 42, 45, 27, 28, 29, 30, 33)
INNER_LIPS = tuple(range(60, 68))
#: a frame enters the mouth-interior PSNR when its inner-lip polygon covers this many squared eye distances
MOUTH_OPEN_AREA = 0.004


# --- geometry -----------------------------------------------------------------------------------------

def transfer_gain(got: np.ndarray, asked: np.ndarray) -> tuple[float, float]:
    """``(sum <got, asked> / sum |asked|^2, sum |asked|^2)`` over all finite rows of (..., 2) displacement
    arrays; NaN gain when nothing was asked."""
    g, a = np.asarray(got, np.float64).reshape(-1, 2), np.asarray(asked, np.float64).reshape(-1, 2)
    ok = np.isfinite(g).all(1) & np.isfinite(a).all(1)
    den = float((a[ok] ** 2).sum())
    num = float((g[ok] * a[ok]).sum())
    return (num / den if den > 0 else float("nan")), den


def separation(landmarks: np.ndarray, neutral: np.ndarray, points: Sequence[int]) -> float:
    """Mean over frames and ``points`` of ``|landmarks - neutral|`` over the neutral's eye distance (frames
    where either is missing are left out; NaN if none is left)."""
    a, n = np.asarray(landmarks, np.float64), np.asarray(neutral, np.float64)
    k = min(len(a), len(n))
    a, n = a[:k], n[:k]
    d = np.linalg.norm(a[:, list(points)] - n[:, list(points)], axis=-1).mean(-1) / eye_distance(n)
    d = d[np.isfinite(d)]
    return float(d.mean()) if d.size else float("nan")


def eye_aperture(landmarks: np.ndarray) -> np.ndarray:
    """(...,) mean eyelid gap over eye width of both eyes (an eye-aspect ratio; ~0.3 open, 0 closed)."""
    p = np.asarray(landmarks, np.float64)
    out = []
    for (outer, inner), pairs in zip(EYE_CORNERS, (EYELID_PAIRS[:2], EYELID_PAIRS[2:])):
        width = np.linalg.norm(p[..., inner, :] - p[..., outer, :], axis=-1)
        gap = sum(p[..., lo, 1] - p[..., up, 1] for up, lo in pairs) / len(pairs)
        out.append(gap / width)
    return (out[0] + out[1]) / 2


def polygon_mask(shape: tuple[int, int], polygon: np.ndarray) -> np.ndarray:
    """``(H, W)`` bool mask of the pixels whose centres the closed ``(V, 2)`` polygon (pixels) covers."""
    mask = np.zeros(shape, np.uint8)
    pts = np.round(np.asarray(polygon, np.float64) * 16).astype(np.int32)
    cv2.fillPoly(mask, [pts], 1, lineType=cv2.LINE_8, shift=4)
    return mask.astype(bool)


def polygon_area(polygon: np.ndarray) -> float:
    """Area of a closed ``(V, 2)`` polygon (shoelace formula), in squared input units."""
    x, y = np.asarray(polygon, np.float64).T
    return float(abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))) / 2)


def _gray(frame: np.ndarray) -> np.ndarray:
    return np.asarray(frame, np.float32)[..., :3] @ np.array([0.299, 0.587, 0.114], np.float32)


def _eye_axes(lm: np.ndarray, outer: int, inner: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Outer corner, unit vector to the inner corner, unit normal pointing down the face, eye width."""
    o = lm[outer]
    w = float(np.linalg.norm(lm[inner] - o))
    u = (lm[inner] - o) / max(w, 1e-6)
    v = np.array([-u[1], u[0]])
    return o, u, (v if v[1] >= 0 else -v), w


def eye_dark_columns(frame: np.ndarray, open_landmarks: np.ndarray, eye: int,
                     levels: tuple[float, float] | None = None) -> tuple[np.ndarray, tuple[float, float]]:
    """``(thickness, (skin, iris))``: for eye 0 (image left) or 1, the height in eye widths of the dark band
    in each central column of the eye that the (68, 2) ``open_landmarks`` outline, measured on ``frame``.

    Dark: luminance below the midpoint of the lid skin's (median of :data:`SKIN_BAND`) and the iris' (10th
    percentile inside the open eye) -- ``levels``, taken from the open frame when given so that the open and
    the shut frame share one threshold. Rows count within :data:`LID_MARGIN` of the open lids."""
    lm = np.asarray(open_landmarks, np.float64)
    outer, inner = (36, 39) if eye == 0 else (45, 42)
    upper, lower = ((37, 38), (41, 40)) if eye == 0 else ((44, 43), (46, 47))
    o, u, v, w = _eye_axes(lm, outer, inner)
    rows = int(round((EYE_ROWS[1] - EYE_ROWS[0]) / ROW_STEP))
    a = np.stack([w / EYE_COLUMNS * u, ROW_STEP * w * v], 1)  # patch (col, row) -> image offset
    m = np.concatenate([a, (o + EYE_ROWS[0] * w * v + 0.5 * a[:, 0])[:, None]], 1)
    patch = cv2.warpAffine(_gray(frame), m, (EYE_COLUMNS, rows), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                           borderMode=cv2.BORDER_REPLICATE)

    def lid(points) -> np.ndarray:  # the lid's row in every column (its landmarks, linearly interpolated)
        p = lm[[outer, *points, inner]] - o
        at = np.interp((np.arange(EYE_COLUMNS) + 0.5) / EYE_COLUMNS, p @ u / w, p @ v / w)
        return (at - EYE_ROWS[0]) / ROW_STEP

    up, lo = lid(upper), lid(lower)
    r = np.arange(rows)[:, None]  # patch row r lies EYE_ROWS[0] + r ROW_STEP eye widths across
    if levels is None:
        skin = (r >= up - SKIN_BAND[1] / ROW_STEP) & (r <= up - SKIN_BAND[0] / ROW_STEP)
        levels = (float(np.median(patch[skin])), float(np.percentile(patch[(r >= up) & (r <= lo)], 10)))
    window = (r >= up - LID_MARGIN / ROW_STEP) & (r <= lo + LID_MARGIN / ROW_STEP)
    dark = (patch < 0.5 * (levels[0] + levels[1])) & window
    cols = slice(int(CENTRAL[0] * EYE_COLUMNS), int(round(CENTRAL[1] * EYE_COLUMNS)))
    return dark.sum(0)[cols] * ROW_STEP, levels


def register_open_eyes(open_landmarks: np.ndarray, pose_landmarks: np.ndarray) -> np.ndarray:
    """``open_landmarks`` moved onto the head pose of ``pose_landmarks`` (a similarity fitted on the points a
    blink does not move, :data:`STILL_POINTS`): where the open eye would be in another frame."""
    src = np.asarray(open_landmarks, np.float64)
    m, _ = cv2.estimateAffinePartial2D(src[list(STILL_POINTS)].astype(np.float32),
                                       np.asarray(pose_landmarks, np.float32)[list(STILL_POINTS)], method=cv2.LMEDS)
    return src if m is None else src @ m[:, :2].T + m[:, 2]


def eye_opening(frame: np.ndarray, pose_landmarks: np.ndarray, open_frame: np.ndarray,
                open_landmarks: np.ndarray) -> float:
    """How open the eyes of ``frame`` look relative to the same face's ``open_frame`` (whose landmarks, eyes
    open, are ``open_landmarks``; ``pose_landmarks``: any landmarks of ``frame``, only its pose is used):
    1 = as open, 0 = closed to a line; mean of both eyes, NaN where the open eye shows no dark band.

    In each eye's iris columns (the third of the central columns with the thickest dark band on the open
    frame) the dark band (:func:`eye_dark_columns`) is the iris under the upper lid's lash line; the thinnest
    third of the open frame's columns holds the lash line alone, which a closed eye keeps (a closed eye is a
    dark line, not skin). So ``(band(frame) - line) / (band(open) - line)``, clipped at 0."""
    shut_lm = register_open_eyes(open_landmarks, pose_landmarks)
    out = []
    for eye in (0, 1):
        t_open, levels = eye_dark_columns(open_frame, open_landmarks, eye)
        t_frame, _ = eye_dark_columns(frame, shut_lm, eye, levels)
        k = max(1, len(t_open) // 3)
        o, f = np.sort(t_open)[::-1], np.sort(t_frame)[::-1]
        line, band = float(o[-k:].mean()), float(o[:k].mean())
        if band - line > 2 * ROW_STEP and levels[0] > levels[1]:
            out.append(max(0.0, float(f[:k].mean()) - line) / (band - line))
    return float(np.mean(out)) if out else float("nan")


def strictly_increasing(values: Sequence[float]) -> bool:
    v = np.asarray(values, np.float64)
    return bool(v.size >= 2 and np.isfinite(v).all() and (np.diff(v) > 0).all())


# --- per-sample measurements -----------------------------------------------------------------------------

def _emotional(samples: Sequence[VideoSample]) -> list[VideoSample]:
    """Grid renderings that ask for an expression (not the neutral one, not the blink one)."""
    return [s for s in samples if s.emotion != "neutral" and not _is_blink(s)]


def _is_blink(s: VideoSample) -> bool:
    return s.blink is not None and bool(np.any(np.asarray(s.blink) > 0))


def _displacements(s: VideoSample, opts: MetricOptions, points) -> tuple[np.ndarray, np.ndarray]:
    got = sample_landmarks(s, Side.GENERATED, opts) - sample_landmarks(s, Side.NEUTRAL_GENERATED, opts)
    asked = s.driving_landmarks - s.neutral_driving_landmarks
    k = min(len(got), len(asked))
    return got[:k, list(points)], asked[:k, list(points)]


_GRID = ("generated", "neutral_generated", "driving_landmarks", "neutral_driving_landmarks", "emotion")


def _transfer(samples: Sequence[VideoSample], opts: MetricOptions, region: str) -> MetricResult:
    points = REGIONS[region]
    got_all, asked_all, per = [], [], {}
    for s in _emotional(samples):
        got, asked = _displacements(s, opts, points)
        per[s.name] = transfer_gain(got, asked)[0]
        got_all.append(got)
        asked_all.append(asked)
    if not got_all:
        return MetricResult(f"ExT-{region}", float("nan"), {"note": "no emotional renderings"})
    gain, energy = transfer_gain(np.concatenate(got_all), np.concatenate(asked_all))
    return MetricResult(f"ExT-{region}", gain, {"per_video": per, "asked_energy": energy, "region": region})


@register_metric("expr_transfer_brows", display="ExT-brows", needs=_GRID, on="grid")
def expr_transfer_brows(samples: Sequence[VideoSample], opts: MetricOptions) -> MetricResult:
    """Share of the asked brow displacement (vs neutral) that shows in re-detected landmarks; 1 = all."""
    return _transfer(samples, opts, "brows")


@register_metric("expr_transfer_eyes", display="ExT-eyes", needs=_GRID, on="grid")
def expr_transfer_eyes(samples: Sequence[VideoSample], opts: MetricOptions) -> MetricResult:
    """Share of the asked eye displacement (vs neutral) that shows in re-detected landmarks; 1 = all."""
    return _transfer(samples, opts, "eyes")


@register_metric("expr_transfer_mouth", display="ExT-mouth", needs=_GRID, on="grid")
def expr_transfer_mouth(samples: Sequence[VideoSample], opts: MetricOptions) -> MetricResult:
    """Share of the asked mouth displacement (vs neutral) that shows in re-detected landmarks; 1 = all."""
    return _transfer(samples, opts, "mouth")


def separation_table(samples: Sequence[VideoSample], opts: MetricOptions, driving: bool = False
                     ) -> dict[str, dict[float, dict[str, float]]]:
    """``{emotion: {intensity: {region: separation}}}`` of the emotional grid renderings, re-detected
    (or, ``driving=True``, of the landmarks that drove them)."""
    out: dict[str, dict[float, dict[str, float]]] = {}
    for s in _emotional(samples):
        if driving:
            a, n = s.driving_landmarks, s.neutral_driving_landmarks
        else:
            a, n = sample_landmarks(s, Side.GENERATED, opts), sample_landmarks(s, Side.NEUTRAL_GENERATED, opts)
        level = float(s.intensity if s.intensity is not None else 1.0)
        out.setdefault(s.emotion, {})[level] = {r: separation(a, n, pts) for r, pts in REGIONS.items()}
    return out


def _jsonable(table: dict) -> dict:
    return {e: {f"{lvl:g}": v for lvl, v in sorted(levels.items())} for e, levels in table.items()}


@register_metric("emotion_separation", display="Sep", needs=_GRID + ("intensity",), on="grid")
def emotion_separation(samples: Sequence[VideoSample], opts: MetricOptions) -> MetricResult:
    """Landmark distance of each emotion's rendering from the neutral one (eye distances), top level."""
    table = separation_table(samples, opts)
    top = {e: levels[max(lvl for lvl in levels if float(lvl).is_integer())] for e, levels in table.items()
           if any(float(lvl).is_integer() for lvl in levels)}
    vals = [np.mean(list(r.values())) for r in top.values()]
    value = float(np.nanmean(vals)) if vals else float("nan")
    per_region = {r: float(np.nanmean([v[r] for v in top.values()])) for r in REGIONS} if top else {}
    return MetricResult("Sep", value, {"top_level": per_region, "rendered": _jsonable(table),
                                       "driving": _jsonable(separation_table(samples, opts, driving=True))})


@register_metric("intensity_monotonic", display="Int-mono", needs=_GRID + ("intensity",), on="grid")
def intensity_monotonic(samples: Sequence[VideoSample], opts: MetricOptions) -> MetricResult:
    """Share of emotions whose rendered separation grows strictly with the intensity (fractions included)."""
    table, asked = separation_table(samples, opts), separation_table(samples, opts, driving=True)
    per = {}
    for emotion, levels in sorted(table.items()):
        lv = sorted(levels)
        sep = [float(np.mean(list(levels[x].values()))) for x in lv]
        drv = [float(np.mean(list(asked[emotion][x].values()))) for x in lv]
        integer = [s for x, s in zip(lv, sep) if float(x).is_integer()]
        # driving_*: the same for the landmarks that drove the renderer: tells G_L's failures from G_T's
        per[emotion] = {"monotonic": strictly_increasing(sep), "levels_monotonic": strictly_increasing(integer),
                        "intensities": lv, "separation": sep, "driving_monotonic": strictly_increasing(drv),
                        "driving_separation": drv}
    value = float(np.mean([p["monotonic"] for p in per.values()])) if per else float("nan")
    return MetricResult("Int-mono", value, {"per_emotion": per})


@register_metric("blink_visibility", display="Blink-ap", needs=("generated", "driving_landmarks", "blink"),
                 on="grid", higher_is_better=False)
def blink_visibility(samples: Sequence[VideoSample], opts: MetricOptions) -> MetricResult:
    """Re-detected eye aperture on inserted-blink frames over the open eyes' (0 = closes fully)."""
    rendered, asked, per = [], [], {}
    for s in [s for s in samples if _is_blink(s)]:
        closure = np.asarray(s.blink, np.float64)
        ap = eye_aperture(sample_landmarks(s, Side.GENERATED, opts))[:len(closure)]
        drv = eye_aperture(s.driving_landmarks)[:len(closure)]
        shut, open_ = closure >= 0.5, closure == 0
        ok = np.isfinite(ap)
        if not (shut & ok).any() or not (open_ & ok).any():
            continue
        ratio = float(ap[shut & ok].mean() / ap[open_ & ok].mean())
        rendered.append(ratio)
        asked.append(float(drv[shut].mean() / drv[open_].mean()))
        per[s.name] = ratio
    value = float(np.mean(rendered)) if rendered else float("nan")
    return MetricResult("Blink-ap", value, {"per_video": per, "driving_ratio": float(np.mean(asked)) if asked
                                            else None})


def _blink_pairs(closure: np.ndarray) -> list[tuple[int, int]]:
    """(shut frame, open frame) pairs of a blink rendering: in order when there are as many open as shut
    frames (the emotion grid renders the same frames twice), else each shut frame with the nearest open one."""
    shut, open_ = np.nonzero(closure >= 0.5)[0], np.nonzero(closure == 0)[0]
    if not len(shut) or not len(open_):
        return []
    if len(shut) == len(open_):
        return list(zip(shut.tolist(), open_.tolist()))
    return [(int(i), int(open_[np.abs(open_ - i).argmin()])) for i in shut]


@register_metric("blink_pixels", display="Blink-px", needs=("generated", "driving_landmarks", "blink"),
                 on="grid", higher_is_better=False)
def blink_pixels(samples: Sequence[VideoSample], opts: MetricOptions) -> MetricResult:
    """How open the rendered eyes look at an inserted blink, from the pixels (:func:`eye_opening`): 0 = closed
    to a line, 1 = the blink does not show."""
    per, values = {}, []
    for s in [s for s in samples if _is_blink(s)]:
        closure = np.asarray(s.blink, np.float64)
        v = [eye_opening(s.generated[i], s.driving_landmarks[i], s.generated[j], s.driving_landmarks[j])
             for i, j in _blink_pairs(closure[:s.num_frames])]
        v = [x for x in v if np.isfinite(x)]
        if v:
            per[s.name] = float(np.mean(v))
            values += v
    if not values:
        return MetricResult("Blink-px", float("nan"), {"note": "no blink rendering with open and shut frames"})
    return MetricResult("Blink-px", float(np.mean(values)), {"per_video": per, "pairs": len(values)})


@register_metric("mouth_psnr", display="Mouth-PSNR", needs=("generated", "ground_truth"))
def mouth_psnr(samples: Sequence[VideoSample], opts: MetricOptions) -> MetricResult:
    """PSNR inside the real frame's inner-lip polygon, on the frames where the real mouth is open."""
    se_all, n_all, per, frames = 0.0, 0, {}, 0
    for s in samples:
        gen, gt = s.paired_frames()
        lms = sample_landmarks(s, Side.GROUND_TRUTH, opts)[:len(gt)]
        se, n = 0.0, 0
        for t in range(len(lms)):
            if not np.isfinite(lms[t]).all():
                continue
            lips = lms[t, list(INNER_LIPS)]
            if polygon_area(lips) < MOUTH_OPEN_AREA * float(eye_distance(lms[t])) ** 2:
                continue
            m = polygon_mask(gt.shape[1:3], lips)
            d = gen[t][m].astype(np.float64) - gt[t][m].astype(np.float64)
            se, n, frames = se + float((d ** 2).sum()), n + d.size, frames + 1
        per[s.name] = _psnr(se, n)
        se_all, n_all = se_all + se, n_all + n
    return MetricResult("Mouth-PSNR", _psnr(se_all, n_all), {"per_video": per, "open_frames": frames,
                                                             "pixels": n_all // 3})


def _psnr(squared_error: float, count: int) -> float:
    if count == 0:
        return float("nan")
    mse = squared_error / count
    return float("inf") if mse == 0 else float(10.0 * np.log10(255.0 ** 2 / mse))
