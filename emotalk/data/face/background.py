"""Background replacement (paper appendix "Background Replacement", Fig. 12).

G_T is trained on MEAD, whose backdrop is one fixed dark green. A photo with any other background is
handled in two steps:

1. **replace** - before G_T, the photo crop's background is replaced by the training background colour
   (:func:`replace_background`), so E_T sees the kind of image it was trained on;
2. **restore** - after G_T, the generated frame's background is replaced by the original photo's
   (:func:`restore_background`; the pipeline folds the same mask into its paste-back blend, so pixels
   outside the person come straight from the photo).

The person mask (:func:`person_mask`) is computed offline, without a segmentation network: the face's
landmark hull, extended upwards to cover the forehead, is certain foreground; a head region (hair) and a
neck/shoulder region below the chin are probable foreground; the rest of the crop is probable / certain
background; OpenCV's GrabCut (Rother et al. 2004) refines that into a mask, which is cleaned (the
component holding the face, holes filled) and feathered into a soft alpha.

The training background colour travels with the data, never read from a training folder at run time:
preprocessing records it in the dataset manifest (:func:`estimate_background_from_references` on the
subject reference crops), training copies it into the texture checkpoint's metadata (``background_rgb``),
and inference takes it from there (:func:`emotalk.inference.renderers.training_background`; without it,
:data:`DEFAULT_BACKGROUND_RGB`, MEAD's dark green backdrop, approximately).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from emotalk.data.io.clip import load_subject
from emotalk.models.face_graph import eye_distance

#: MEAD's studio backdrop (a dark green, approximately), used when nothing better is known.
DEFAULT_BACKGROUND_RGB: tuple[int, int, int] = (32, 64, 48)


def _face_unit(crop_landmarks: np.ndarray) -> float:
    """Outer-eye-corner distance in crop pixels (one canonical unit)."""
    lm = np.asarray(crop_landmarks, np.float64)
    return float(max(eye_distance(lm), 1.0))


def _up_vector(crop_landmarks: np.ndarray) -> np.ndarray:
    """Unit vector pointing from the chin towards the forehead (crops are upright, but be safe)."""
    lm = np.asarray(crop_landmarks, np.float64)
    v = lm[27] - lm[8]
    n = np.linalg.norm(v)
    return v / n if n > 1e-6 else np.array([0.0, -1.0])


def face_hull_points(crop_landmarks: np.ndarray, forehead: float = 0.55) -> np.ndarray:
    """Jaw line plus the brows lifted by ``forehead`` canonical units: the face including the forehead."""
    lm = np.asarray(crop_landmarks, np.float64)
    u, up = _face_unit(lm), _up_vector(lm)
    brows = lm[17:27] + up[None] * forehead * u
    return np.concatenate([lm[0:17], brows[::-1]])


def _poly_mask(shape: tuple[int, int], pts: np.ndarray, hull: bool = True) -> np.ndarray:
    import cv2

    m = np.zeros(shape, np.uint8)
    p = np.round(np.asarray(pts)).astype(np.int32)
    if hull:
        p = cv2.convexHull(p)
    cv2.fillPoly(m, [p.reshape(-1, 2)], 1)
    return m.astype(bool)


def prior_regions(shape: tuple[int, int], crop_landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(certain face, probable person, possible person) boolean masks of a crop from its landmarks."""
    lm = np.asarray(crop_landmarks, np.float64)
    u, up = _face_unit(lm), _up_vector(lm)
    side = np.array([-up[1], up[0]])  # perpendicular to "up"
    centre = lm[27] * 0.5 + lm[8] * 0.5
    face = _poly_mask(shape, face_hull_points(lm, 0.5))
    # head with hair: the face hull scaled about its centre, lifted further
    hull = face_hull_points(lm, 1.0)
    head = centre + (hull - centre) * 1.25
    # neck and shoulders: a trapezoid from the chin down to well below the crop
    chin = lm[8]
    jaw_w = float(np.linalg.norm(lm[16] - lm[0]))
    down = -up
    neck_top = chin - down * 0.35 * u
    shoulders = chin + down * 1.2 * u
    bottom = chin + down * 6.0 * u
    torso = np.array([neck_top - side * 0.35 * jaw_w, neck_top + side * 0.35 * jaw_w,
                      shoulders + side * 1.1 * jaw_w, bottom + side * 1.6 * jaw_w,
                      bottom - side * 1.6 * jaw_w, shoulders - side * 1.1 * jaw_w])
    probable = _poly_mask(shape, head) | _poly_mask(shape, torso, hull=False) | face
    big_head = centre + (hull - centre) * 1.6
    big_torso = chin + (torso - chin) * np.array([1.3, 1.0])
    possible = _poly_mask(shape, big_head) | _poly_mask(shape, big_torso, hull=False) | probable
    return face, probable, possible


def _largest_component_with(mask: np.ndarray, seed: np.ndarray) -> np.ndarray:
    import cv2

    n, labels = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)
    if n <= 1:
        return mask
    hits = np.bincount(labels[seed & mask].ravel(), minlength=n)
    hits[0] = 0
    if hits.max() == 0:
        return mask
    return labels == int(hits.argmax())


def _fill_holes(mask: np.ndarray) -> np.ndarray:
    import cv2

    m = mask.astype(np.uint8)
    h, w = m.shape
    flood = np.pad(m, 1).copy()
    ff = np.zeros((h + 4, w + 4), np.uint8)
    cv2.floodFill(flood, ff, (0, 0), 2)
    return (flood[1:-1, 1:-1] != 2)


def person_mask(crop: np.ndarray, crop_landmarks: np.ndarray, iterations: int = 4,
                feather: float | None = None, erode: float | None = None) -> np.ndarray:
    """Soft person alpha ``(S, S)`` float32 in [0, 1] for a face crop (see the module docstring).

    ``feather`` (pixels, default 1.5 % of the crop) blurs the edge; ``erode`` (pixels, default 1 % of the
    crop) shrinks the mask first so that no background colour bleeds in at the person's edge.
    """
    import cv2

    img = np.ascontiguousarray(np.asarray(crop, dtype=np.uint8)[..., :3])
    h, w = img.shape[:2]
    face, probable, possible = prior_regions((h, w), crop_landmarks)
    gc = np.full((h, w), cv2.GC_BGD, np.uint8)
    gc[possible] = cv2.GC_PR_BGD
    gc[probable] = cv2.GC_PR_FGD
    gc[face] = cv2.GC_FGD
    mask = probable
    if (gc == cv2.GC_BGD).any() or (gc == cv2.GC_PR_BGD).any():
        try:
            bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
            cv2.setRNGSeed(0)
            cv2.grabCut(img[..., ::-1].copy(), gc, None, bgd, fgd, int(iterations), cv2.GC_INIT_WITH_MASK)
            refined = (gc == cv2.GC_FGD) | (gc == cv2.GC_PR_FGD)
            if refined[face].mean() > 0.5 and refined.sum() >= face.sum():
                mask = refined
        except cv2.error:  # degenerate colour models (e.g. a flat image): keep the prior
            mask = probable
    mask = _largest_component_with(mask, face)
    mask = _fill_holes(mask | face)
    s = float(max(h, w))
    k = max(1, int(round(s * 0.01 if erode is None else erode)))
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * k + 1, 2 * k + 1))
    m = cv2.morphologyEx(mask.astype(np.uint8), cv2.MORPH_CLOSE, kernel)
    m = cv2.erode(m, kernel)
    m = np.maximum(m, face.astype(np.uint8))
    sigma = s * 0.015 if feather is None else float(feather)
    alpha = m.astype(np.float32)
    if sigma > 0:
        alpha = cv2.GaussianBlur(alpha, (0, 0), sigma)
    return np.clip(alpha, 0.0, 1.0)


def replace_background(crop: np.ndarray, alpha: np.ndarray, rgb) -> np.ndarray:
    """``crop * alpha + rgb * (1 - alpha)``: the person kept, everything else the training background."""
    a = np.asarray(alpha, np.float32)[..., None]
    bg = np.asarray(rgb, np.float32).reshape(1, 1, 3)
    out = np.asarray(crop, np.float32) * a + bg * (1 - a)
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def restore_background(generated: np.ndarray, original: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """``generated * alpha + original * (1 - alpha)``: the generated person on the photo's own background."""
    a = np.asarray(alpha, np.float32)[..., None]
    out = np.asarray(generated, np.float32) * a + np.asarray(original, np.float32) * (1 - a)
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def estimate_background_from_references(root: str | Path, max_subjects: int = 8) -> tuple[int, int, int] | None:
    """Median colour of the top corners of the subject reference crops under ``root/subjects`` (the
    backdrop of the training data), or None when there are none."""
    d = Path(root) / "subjects"
    if not d.is_dir():
        return None
    samples = []
    for p in sorted(d.glob("*.npz"))[:max_subjects]:
        try:
            img = np.asarray(load_subject(p).image)
        except Exception:  # noqa: BLE001 - an unreadable reference just does not count
            continue
        s = max(2, img.shape[0] // 10)
        samples.append(img[:s, :s].reshape(-1, 3))
        samples.append(img[:s, -s:].reshape(-1, 3))
    if not samples:
        return None
    med = np.median(np.concatenate(samples), axis=0)
    return tuple(int(round(v)) for v in med)

