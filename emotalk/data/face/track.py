"""Per-clip 68-point landmark tracking: detect once, fit per frame, re-detect only when tracking is lost.

Backends (dlib, FAN) and ``make_landmarker(name)`` are in :mod:`emotalk.data.face.landmarkers`; they
share the :class:`emotalk.data.face.detect.DlibLandmarker` interface — ``detect_faces(image) -> [Face]``
and ``fit(image, box) -> Face``.

:func:`track_landmarks` runs over a clip's frames (grayscale or RGB): the largest face is detected on
the first frame (on a downscaled copy for speed); each next frame is fitted in a box predicted from the
previous frame's landmarks (with the detector's box convention, which the shape predictor expects). The box
follows the *rigid* landmarks only (eye corners, nose: :data:`STABLE_POINTS`): brows, mouth and jaw move with
the expression, and a box that followed them fed the expression back into the fit. Even so the box and the fit
can pull each other along (a larger box gives a larger fitted face, which predicts a larger box: on mead-mini
some expressive clips grew 30 % in 15 frames, 20 px wrong on a 256-px frame), so the box is also compared with
the last detection's, and a drift beyond ``max_box_drift`` of its size re-detects (a real head movement that
large gets a fresh detection too, which is right). Tracking counts as *lost* when the fitted face leaves the
frame, jumps or changes scale abruptly, drifts so, or its appearance (a small grey patch warped to the
canonical face) stops matching the previous frame — then the detector runs again. Frames where no face can
be found are filled by interpolation and reported; too many of them raise :class:`NoFaceError`. Finally the
landmark trajectories are smoothed in time (Savitzky-Golay by default, or a one-euro filter).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field

import numpy as np

from emotalk.data.face.alignment import STABLE_POINTS, similarity_fit, warp_image
from emotalk.data.face.detect import DlibLandmarker, Face
from emotalk.errors import InputError, NoFaceError
from emotalk.models.face_graph import canonical_template


def _gray(image: np.ndarray) -> np.ndarray:
    img = np.asarray(image)
    if img.ndim == 2:
        return np.ascontiguousarray(img, dtype=np.uint8)
    import cv2

    return cv2.cvtColor(np.ascontiguousarray(img[..., :3], dtype=np.uint8), cv2.COLOR_RGB2GRAY)


# ==================================================================================================
# detection helpers
# ==================================================================================================
def detect_boxes(landmarker, image: np.ndarray, max_side: int | None = 640) -> list[tuple[float, ...]]:
    """Face boxes in full-resolution pixels, largest first, detected on a copy downscaled to ``max_side``."""
    import cv2

    img = np.asarray(image)
    h, w = img.shape[:2]
    s = min(1.0, float(max_side) / max(h, w)) if max_side else 1.0
    small = img if s >= 1.0 else cv2.resize(img, (max(1, round(w * s)), max(1, round(h * s))),
                                            interpolation=cv2.INTER_AREA)
    if hasattr(landmarker, "detect_boxes"):
        boxes = list(landmarker.detect_boxes(small))
    else:
        boxes = [f.box for f in landmarker.detect_faces(small)]
    boxes = [tuple(float(v) / s for v in b) for b in boxes]
    return sorted(boxes, key=lambda b: -max(b[2] - b[0], b[3] - b[1]))


def detect_largest(landmarker, image: np.ndarray, max_side: int = 640) -> Face | None:
    """Largest face, landmarks fitted at full resolution (detection on a downscaled copy)."""
    boxes = detect_boxes(landmarker, image, max_side)
    return landmarker.fit(image, boxes[0]) if boxes else None


# ==================================================================================================
# tracking
# ==================================================================================================
_PATCH_IDX = list(range(17, 68))  # brows, nose, eyes, mouth: the patch follows the inner face
_RIGID = np.array(STABLE_POINTS)  # the box follows these (see _BoxModel)


@functools.lru_cache(maxsize=4)
def _patch_targets(size: int) -> tuple[np.ndarray, np.ndarray]:
    """``(indices, target points)`` of :func:`_patch`: the stable landmarks' places in a ``size``² patch (made
    once: the template is parsed from JSON, and this runs for every frame of every clip)."""
    tpl = canonical_template().astype(np.float64)
    dst = tpl * (size * 0.55) + np.array([size / 2.0, size * 0.45])
    idx = np.array(list(STABLE_POINTS))
    dst = np.ascontiguousarray(dst[idx])
    dst.flags.writeable = False
    return idx, dst


def _patch(gray: np.ndarray, pts: np.ndarray, size: int = 32) -> np.ndarray:
    """A ``size``² grey patch of the face, warped so the inner landmarks sit on the canonical template."""
    idx, dst = _patch_targets(size)
    m = similarity_fit(pts[idx].astype(np.float64), dst)
    p = warp_image(gray, m, size).astype(np.float32)
    p -= p.mean()
    n = np.linalg.norm(p)
    return p / n if n > 1e-6 else p


def _ncc(a: np.ndarray, b: np.ndarray) -> float:
    return float((a * b).sum())


@dataclass
class _BoxModel:
    """The detector box expressed relative to the rigid landmarks (centre offset and size in units of their
    spread; :data:`STABLE_POINTS`, which the expression does not move), so later boxes predicted from
    landmarks keep the detector's convention."""

    dx: float
    dy: float
    half_w: float
    half_h: float

    @staticmethod
    def _frame(pts: np.ndarray) -> tuple[np.ndarray, float]:
        pts = pts[_RIGID] if len(pts) == 68 else pts
        c = pts.mean(0)
        s = float(np.sqrt(((pts - c) ** 2).sum(1).mean()))
        return c, max(s, 1e-6)

    @classmethod
    def from_face(cls, face: Face) -> "_BoxModel":
        c, s = cls._frame(face.landmarks)
        l, t, r, b = face.box
        return cls(((l + r) / 2 - c[0]) / s, ((t + b) / 2 - c[1]) / s, (r - l) / 2 / s, (b - t) / 2 / s)

    def box(self, pts: np.ndarray) -> tuple[float, float, float, float]:
        c, s = self._frame(pts)
        cx, cy = c[0] + self.dx * s, c[1] + self.dy * s
        return (cx - self.half_w * s, cy - self.half_h * s, cx + self.half_w * s, cy + self.half_h * s)


@dataclass
class TrackResult:
    landmarks: np.ndarray  # (T, 68, 2) float32 image pixels, smoothed, gaps interpolated
    raw: np.ndarray  # (T, 68, 2) float32 before smoothing (NaN where no face)
    found: np.ndarray  # (T,) bool: a face was fitted in this frame
    detections: int  # detector runs (1 = detected once and tracked throughout)
    redetect_frames: list[int] = field(default_factory=list)  # frames where tracking was lost

    @property
    def missing(self) -> int:
        return int((~self.found).sum())


@dataclass
class TrackerOptions:
    detect_max_side: int = 640  # detection runs on a copy downscaled to this size
    min_patch_similarity: float = 0.5  # NCC of the face patch vs. the previous frame below this: lost
    max_scale_change: float = 0.25  # frame-to-frame change in face size above this: lost
    max_jump: float = 0.5  # centre jump above this fraction of the face size: lost
    #: the predicted box's size or centre off the last detection's box by more than this fraction of its size:
    #: re-detect (bounds the box/fit feedback drift; see the module docstring). None: never
    max_box_drift: float | None = 0.1
    max_missing_fraction: float = 0.25  # more frames without a face than this: NoFaceError
    smoothing: str = "savgol"  # savgol | one_euro | none
    smooth_window: int = 5  # Savitzky-Golay window (odd, frames)
    smooth_order: int = 2
    one_euro_min_cutoff: float = 1.7  # Hz
    one_euro_beta: float = 0.3  # per pixel/s: less lag while the face moves


class LandmarkTracker:
    """Stateful tracker over the frames of one clip; ``update(frame)`` per frame, then ``finish()``."""

    def __init__(self, landmarker=None, options: TrackerOptions | None = None, fps: float = 30.0):
        self.lm = landmarker if landmarker is not None else DlibLandmarker()
        self.opt = options or TrackerOptions()
        self.fps = fps
        self._raw: list[np.ndarray | None] = []
        self._prev: np.ndarray | None = None
        self._prev_patch: np.ndarray | None = None
        self._box_model: _BoxModel | None = None
        self._det_box: tuple[float, float, float, float] | None = None  # the last detection's box
        self.detections = 0
        self.redetect_frames: list[int] = []

    @property
    def num_frames(self) -> int:
        return len(self._raw)

    def _detect(self, gray: np.ndarray) -> np.ndarray | None:
        self.detections += 1
        face = detect_largest(self.lm, gray, self.opt.detect_max_side)
        if face is None:
            return None
        self._box_model = _BoxModel.from_face(face)
        self._det_box = tuple(float(v) for v in face.box)
        return face.landmarks.astype(np.float32)

    def _drifted(self, pts: np.ndarray) -> bool:
        """Whether the box ``pts`` predict is off the last detection's by more than ``max_box_drift``."""
        if self.opt.max_box_drift is None or self._det_box is None:
            return False
        l, t, r, b = self._box_model.box(pts)
        dl, dt, dr, db = self._det_box
        size, dsize = max(r - l, b - t), max(dr - dl, db - dt, 1e-6)
        shift = np.hypot((l + r - dl - dr) / 2, (t + b - dt - db) / 2)
        return abs(size / dsize - 1.0) > self.opt.max_box_drift or shift > self.opt.max_box_drift * dsize

    def _lost(self, gray: np.ndarray, pts: np.ndarray, patch: np.ndarray) -> bool:
        h, w = gray.shape[:2]
        c = pts.mean(0)
        if not (0 <= c[0] < w and 0 <= c[1] < h) or not np.isfinite(pts).all():
            return True
        prev = self._prev
        spread = float(np.sqrt(((pts - c) ** 2).sum(1).mean()))
        pc = prev.mean(0)
        pspread = float(np.sqrt(((prev - pc) ** 2).sum(1).mean()))
        if abs(spread / max(pspread, 1e-6) - 1.0) > self.opt.max_scale_change:
            return True
        if np.linalg.norm(c - pc) > self.opt.max_jump * 2.5 * pspread:
            return True
        if self._drifted(pts):
            return True
        return _ncc(patch, self._prev_patch) < self.opt.min_patch_similarity

    def update(self, frame: np.ndarray) -> np.ndarray | None:
        gray = _gray(frame)
        t = len(self._raw)
        pts = None
        if self._prev is not None and self._box_model is not None:
            pts = self.lm.fit(gray, self._box_model.box(self._prev)).landmarks.astype(np.float32)
            patch = _patch(gray, pts)
            if self._lost(gray, pts, patch):
                self.redetect_frames.append(t)
                pts = None
            else:
                self._prev_patch = patch
        if pts is None:
            pts = self._detect(gray)
            if pts is not None:
                self._prev_patch = _patch(gray, pts)
        self._prev = pts if pts is not None else self._prev
        if pts is None:
            # lost and not found again: the next frame starts from a fresh detection
            self._prev = None
        self._raw.append(pts)
        return pts

    def finish(self) -> TrackResult:
        T = len(self._raw)
        if T == 0:
            raise NoFaceError("the clip has no frames")
        found = np.array([p is not None for p in self._raw])
        if not found.any():
            raise NoFaceError(f"no face found in any of the {T} frames")
        miss = int((~found).sum())
        if miss > self.opt.max_missing_fraction * T:
            raise NoFaceError(f"no face found in {miss} of {T} frames (more than "
                              f"{self.opt.max_missing_fraction:.0%})")
        raw = np.full((T, 68, 2), np.nan, dtype=np.float32)
        for i, p in enumerate(self._raw):
            if p is not None:
                raw[i] = p
        filled = fill_gaps(raw, found)
        smoothed = smooth_landmarks(filled, self.opt, self.fps)
        return TrackResult(smoothed.astype(np.float32), raw, found, self.detections, list(self.redetect_frames))


def track_landmarks(frames, landmarker=None, options: TrackerOptions | None = None,
                    fps: float = 30.0) -> TrackResult:
    """Track the largest face through ``frames`` (an iterable of RGB or grey images)."""
    tracker = LandmarkTracker(landmarker, options, fps)
    for f in frames:
        tracker.update(f)
    return tracker.finish()


# ==================================================================================================
# gap filling and temporal smoothing
# ==================================================================================================
def fill_gaps(landmarks: np.ndarray, found: np.ndarray) -> np.ndarray:
    """Linearly interpolate frames without a face from their neighbours (nearest at the ends)."""
    out = np.array(landmarks, dtype=np.float32, copy=True)
    found = np.asarray(found, bool)
    if found.all():
        return out
    t = np.arange(len(out))
    flat = out.reshape(len(out), -1)
    for j in range(flat.shape[1]):
        flat[~found, j] = np.interp(t[~found], t[found], flat[found, j])
    return flat.reshape(out.shape)


def savgol_smooth(x: np.ndarray, window: int = 5, order: int = 2) -> np.ndarray:
    from scipy.signal import savgol_filter

    T = x.shape[0]
    w = min(int(window), T if T % 2 else T - 1)
    if w <= order or w < 3:
        return np.asarray(x, dtype=np.float32)
    return savgol_filter(x, w, order, axis=0, mode="interp").astype(np.float32)


def one_euro_smooth(x: np.ndarray, fps: float = 30.0, min_cutoff: float = 1.7, beta: float = 0.3,
                    d_cutoff: float = 1.0) -> np.ndarray:
    """One-euro filter (Casiez et al. 2012) along axis 0, each coordinate independently (causal)."""
    x = np.asarray(x, dtype=np.float64)
    out = np.empty_like(x)
    dt = 1.0 / fps

    def alpha(cutoff):
        tau = 1.0 / (2 * np.pi * cutoff)
        return 1.0 / (1.0 + tau / dt)

    prev, dprev = x[0], np.zeros_like(x[0])
    out[0] = prev
    a_d = alpha(d_cutoff)
    for t in range(1, len(x)):
        dx = (x[t] - prev) / dt
        dprev = a_d * dx + (1 - a_d) * dprev
        cutoff = min_cutoff + beta * np.abs(dprev)
        a = alpha(cutoff)
        prev = a * x[t] + (1 - a) * prev
        out[t] = prev
    return out.astype(np.float32)


def smooth_landmarks(landmarks: np.ndarray, options: TrackerOptions | None = None,
                     fps: float = 30.0) -> np.ndarray:
    opt = options or TrackerOptions()
    kind = (opt.smoothing or "none").lower()
    if kind in ("none", "off", "") or len(landmarks) < 3:
        return np.asarray(landmarks, dtype=np.float32)
    if kind == "savgol":
        return savgol_smooth(landmarks, opt.smooth_window, opt.smooth_order)
    if kind in ("one_euro", "oneeuro", "one-euro"):
        return one_euro_smooth(landmarks, fps, opt.one_euro_min_cutoff, opt.one_euro_beta)
    raise InputError(f"unknown smoothing {opt.smoothing!r}; choose savgol, one_euro or none")
