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
  aperture (eyelid gap over eye width, both eyes) relative to the open eyes of the same frames: 0 = the
  rendered eyes close completely, 1 = the blink does not show. Lower is better. dlib's shape model never
  reports a fully closed eye (~0.4-0.6 of open even on the warp of a closed-eye landmark set), so the
  number is read against the warp baseline's row.
- **Blink, in pixels** (``blink_pixels`` -> Blink-px): what a person looks at: is the dark iris / white
  sclera still visible where the upper lid should have come down? In the part of each *open* eye (the
  driving landmarks of the paired open frame) that the upper lid sweeps over on the first half of its way
  to the closed position (the blink frame's driving landmarks; the second half holds the closed lid line,
  whose dark lashes are no open eye), the area of the pixels that look like an eye -- farther from the lid skin's colour
  (the median of a band just above the open upper lid, on the open frame) than half the open eye's median
  distance -- on the blink frame over the same on the open frame. 0: lid skin covers it (a closed eye);
  0.5: half of it still shows iris or sclera; 1: the eye did not change. No detector involved, so it
  reaches 0 (dlib's aperture does not); lower is better.
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
#: the band of lid skin whose colour :func:`eye_skin_distance` compares the eye with: this far above the upper
#: lid, in eye widths (below the brow, which sits ~0.5 eye widths higher)
SKIN_BAND = (0.12, 0.30)
#: :func:`swept_by_lids` looks at this share of the upper lid's travel, from the open lid down: the rest
#: holds the closed lid line, whose lashes (smeared over a few pixels at 256 x 256) a person does not read
#: as an open eye
SWEPT_SHARE = 0.5
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


def eye_skin_distance(frame: np.ndarray, open_landmarks: np.ndarray, skin_frame: np.ndarray | None = None
                      ) -> tuple[np.ndarray, np.ndarray]:
    """``(mask, distance)``: the ``(H, W)`` mask of both eye polygons of ``open_landmarks`` (68, 2) and, on
    ``frame``, every pixel's RGB distance from the lid skin's colour (the median colour of a band
    :data:`SKIN_BAND` eye widths above each upper lid, taken on ``skin_frame``, default ``frame``)."""
    lm = np.asarray(open_landmarks, np.float64)
    ref_img = frame if skin_frame is None else skin_frame
    mask = np.zeros(frame.shape[:2], bool)
    dist = np.zeros(frame.shape[:2])
    for poly, lid, (outer, inner) in zip(EYE_POLYGONS, UPPER_LIDS, EYE_CORNERS):
        w = float(np.linalg.norm(lm[inner] - lm[outer]))
        upper = lm[list(lid)]
        band = np.concatenate([upper - [0, SKIN_BAND[0] * w], (upper - [0, SKIN_BAND[1] * w])[::-1]])
        skin_px = ref_img[polygon_mask(ref_img.shape[:2], band)]
        eye = polygon_mask(frame.shape[:2], lm[list(poly)])
        if not len(skin_px) or not eye.any():
            continue
        skin = np.median(skin_px.astype(np.float64), axis=0)
        dist[eye] = np.linalg.norm(frame[eye].astype(np.float64) - skin, axis=1)
        mask |= eye
    return mask, dist


def swept_by_lids(shape: tuple[int, int], open_landmarks: np.ndarray, closed_landmarks: np.ndarray) -> np.ndarray:
    """``(H, W)`` mask of the eye area the upper lids cover on the first :data:`SWEPT_SHARE` of their way
    from ``open_landmarks`` to ``closed_landmarks`` (68, 2): where a closed eye shows lid skin only."""
    op, cl = np.asarray(open_landmarks, np.float64), np.asarray(closed_landmarks, np.float64)
    mask = np.zeros(shape, bool)
    for lid in UPPER_LIDS:
        upper = op[list(lid)]
        halfway = upper + SWEPT_SHARE * (cl[list(lid)] - upper)
        mask |= polygon_mask(shape, np.concatenate([upper, halfway[::-1]]))
    return mask


def visible_eye_area(frame: np.ndarray, open_landmarks: np.ndarray, threshold: float, region: np.ndarray,
                     skin_frame: np.ndarray | None = None) -> int:
    """Pixels inside the open eyes' polygons and ``region`` (:func:`swept_by_lids`) that look like an eye
    (iris, sclera): farther than ``threshold`` from the lid skin's colour (:func:`eye_skin_distance`)."""
    mask, dist = eye_skin_distance(frame, open_landmarks, skin_frame)
    return int(((dist > threshold) & mask & region).sum())


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
    """Eye area (iris, sclera) still visible on blink frames, over the open frames' (0 = closed)."""
    per, shut_a, open_a = {}, 0, 0
    for s in [s for s in samples if _is_blink(s)]:
        closure = np.asarray(s.blink, np.float64)
        a = b = 0
        for i, j in _blink_pairs(closure[:s.num_frames]):
            lm, opened = s.driving_landmarks[j], s.generated[j]
            mask, dist = eye_skin_distance(opened, lm)
            if not mask.any():
                continue
            # "looks like an eye": farther from the skin than half the open eye's typical distance
            tau = 0.5 * float(np.median(dist[mask]))
            band = swept_by_lids(mask.shape, lm, s.driving_landmarks[i])
            b += visible_eye_area(opened, lm, tau, band)
            a += visible_eye_area(s.generated[i], lm, tau, band, skin_frame=opened)
        if b:
            per[s.name] = a / b
            shut_a, open_a = shut_a + a, open_a + b
    if not open_a:
        return MetricResult("Blink-px", float("nan"), {"note": "no blink rendering with open and shut frames"})
    return MetricResult("Blink-px", shut_a / open_a, {"per_video": per, "open_eye_pixels": open_a,
                                                      "shut_eye_pixels": shut_a})


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
