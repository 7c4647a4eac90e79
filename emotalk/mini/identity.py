"""Subjects from real photos: face-centred crops, and several identities per photo.

:func:`prepare_photo` finds the face with dlib, similarity-aligns the photo so the face sits upright and
centred in a square frame (outer eye corners ``UNIT_FRACTION`` of the frame width apart), re-detects the
68 landmarks on the crop (so the ground truth is what dlib sees at this resolution) and segments the
person from the background with GrabCut seeded by the landmarks
(:func:`emotalk.data.face.background.person_mask`, the mask inference uses too).

:func:`make_subject` turns a prepared photo into one subject with :class:`IdentityParams`: an optional
left-right mirror (real faces are asymmetric, so a mirrored face is a different face), landmark-driven
reshaping applied as a piecewise-affine warp — face width, jaw length, eye spacing, eye size, brow
height, nose width/length, mouth width/height — then a skin-tone shift (in CIE Lab, weighted by how
skin-coloured a pixel is), an illumination change (gain, a left-right/top-bottom light gradient, colour
temperature) and a new background colour. All parameters come from :func:`sample_identity` (seeded).
Variant 0 of a photo is the photo itself.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from emotalk.data.face.background import person_mask
from emotalk.data.face.detect import DlibLandmarker
from emotalk.data.face.warp import FaceWarper
from emotalk.models.face_graph import MIRROR, canonical_template, eye_distance
from emotalk.mini.geometry import Similarity, side_sign
from emotalk.errors import InputError, NoFaceError

FRAME_SIZE = 256
#: outer-eye-corner distance as a fraction of the frame width
UNIT_FRACTION = 0.29
#: canonical point placed at the frame centre (a little above the landmark centroid: shows the forehead)
CENTRE_CANONICAL = (0.0, -0.12)

BACKGROUND_COLOURS = np.array([
    [70, 90, 120], [150, 160, 170], [90, 120, 110], [190, 180, 160], [60, 60, 66], [120, 140, 170],
    [160, 130, 110], [100, 110, 80], [200, 200, 205], [40, 60, 90]], dtype=np.float64)


@dataclass
class PreparedPhoto:
    name: str
    image: np.ndarray  # (S, S, 3) uint8 RGB, face-centred crop
    landmarks: np.ndarray  # (68, 2) float64, dlib on the crop
    foreground: np.ndarray  # (S, S) float32 0..1, soft person mask
    source: str = ""  # file path or "builtin:<name>"


@dataclass
class IdentityParams:
    mirror: bool = False
    face_width: float = 1.0  # x scale of the jaw line about the midline
    jaw_length: float = 0.0  # chin drop (canonical units)
    eye_spacing: float = 0.0  # outward shift of each eye and brow (canonical units)
    eye_size: float = 1.0
    brow_height: float = 0.0  # upward shift (canonical units)
    nose_width: float = 1.0
    nose_length: float = 1.0
    mouth_width: float = 1.0
    mouth_height: float = 1.0
    skin_dl: float = 0.0  # Lab shifts on skin pixels
    skin_da: float = 0.0
    skin_db: float = 0.0
    light_gain: float = 1.0
    light_dx: float = 0.0  # relative gain change across the frame, left -> right
    light_dy: float = 0.0
    colour_temp: float = 0.0  # +warmer / -cooler
    background: tuple[float, float, float] | None = None  # RGB, None keeps the photo's background
    background_mix: float = 0.0

    def to_json(self) -> dict:
        d = asdict(self)
        d["background"] = list(self.background) if self.background is not None else None
        return {k: (round(v, 5) if isinstance(v, float) else v) for k, v in d.items()}


@dataclass
class Subject:
    subject_id: str
    image: np.ndarray  # (S, S, 3) uint8 neutral frame
    landmarks: np.ndarray  # (68, 2) float64 neutral landmarks in pixels
    to_canonical: Similarity  # pixels -> canonical
    params: IdentityParams
    photo: str = ""

    @property
    def neutral_canonical(self) -> np.ndarray:
        return self.to_canonical.apply(self.landmarks)

    @property
    def unit(self) -> float:
        """Canonical unit (outer-eye-corner distance of the template) in pixels."""
        return 1.0 / self.to_canonical.scale

    def to_pixels(self, canonical: np.ndarray) -> np.ndarray:
        return self.to_canonical.inverse().apply(canonical)


def read_photo(path: str | Path) -> np.ndarray:
    import cv2

    p = Path(path)
    if not p.is_file():
        raise InputError(f"photo {p} not found")
    img = cv2.imread(str(p), cv2.IMREAD_COLOR)
    if img is None:
        raise InputError(f"{p} is not a readable image (use a JPEG or PNG photo)")
    return np.ascontiguousarray(img[..., ::-1])


def refine_inner_lips(image: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """Move the inner-lip points off visible teeth.

    dlib sometimes puts the inner lips of a toothy smile *on* the teeth. The renderer replaces everything
    inside the inner lips by its own mouth interior, so teeth left outside would be dragged along with
    the lips. Teeth are bright, unsaturated, not reddish pixels; from each inner-lip point the contour is
    pushed outwards (upper lip up, lower lip down) across any run of teeth pixels.
    """
    lm = np.array(landmarks, np.float64, copy=True)
    h, w = image.shape[:2]
    rgb = image.astype(np.float32) / 255.0
    v = rgb.max(-1)
    sat = (v - rgb.min(-1)) / np.maximum(v, 1e-3)
    redness = (rgb[..., 0] - rgb[..., 1]) / np.maximum(rgb[..., 0], 1e-3)
    teeth = (sat < 0.24) & (redness < 0.14) & (v > 0.42)
    limit = 0.08 * float(eye_distance(lm))  # never move a point further than this

    def is_teeth(y: int, x: float) -> bool:
        if not 0 <= y < h:
            return False
        c = int(round(x))
        return bool(teeth[y, max(c - 1, 0):min(c + 2, w)].mean() > 0.5)

    for idx, step in (((61, 62, 63), -1), ((67, 66, 65), +1)):
        for i in idx:
            x, y0 = lm[i, 0], int(round(lm[i, 1]))
            y = y0
            if not (is_teeth(y, x) or is_teeth(y + step, x)):
                continue
            while is_teeth(y + step, x) and abs(y + step - y0) <= limit:
                y += step
            lm[i, 1] = y + 0.5 * step
    return lm


def prepare_photo(image: np.ndarray, name: str, source: str = "", size: int = FRAME_SIZE) -> PreparedPhoto:
    """Detect, align and crop the largest face of ``image`` (RGB uint8) into a ``size``² frame."""
    import cv2

    img = np.asarray(image)
    if img.ndim == 2:
        img = np.stack([img] * 3, -1)
    img = np.ascontiguousarray(img[..., :3])
    if img.dtype != np.uint8:
        img = np.clip(img * (255.0 if img.max() <= 1.0 else 1.0), 0, 255).astype(np.uint8)
    where = source or name
    det = DlibLandmarker(upsample=1)
    # detect on a copy at most ~1000 px across (dlib's HOG scan is slow on camera-sized photos)
    k = min(1.0, 1000.0 / max(img.shape[:2]))
    small = cv2.resize(img, None, fx=k, fy=k, interpolation=cv2.INTER_AREA) if k < 1.0 else img
    faces = det.detect_faces(small)
    if not faces:
        faces = DlibLandmarker(upsample=2).detect_faces(small)
    if not faces:
        raise NoFaceError(f"no face found in {where}; use a frontal photo where the face is clearly visible")
    face = max(faces, key=lambda f: f.size)
    lm = face.landmarks.astype(np.float64) / k
    if eye_distance(lm) < 24:
        raise NoFaceError(f"the face in {where} is too small ({face.size / k:.0f} px); use a photo where the "
                          f"face is at least 100 pixels wide")
    to_canon = Similarity.fit(lm, canonical_template())
    unit = UNIT_FRACTION * size
    canon_to_crop = Similarity(np.array([[unit, 0.0, size / 2 - unit * CENTRE_CANONICAL[0]],
                                         [0.0, unit, size / 2 - unit * CENTRE_CANONICAL[1]]]))
    crop_tf = to_canon.then(canon_to_crop)
    if crop_tf.scale < 0.8:  # big face: area-downsample first so the warp does not alias
        f = min(1.0, crop_tf.scale * 1.25)
        img = cv2.resize(img, None, fx=f, fy=f, interpolation=cv2.INTER_AREA)
        crop_tf = Similarity(np.array([[1.0 / f, 0.0, 0.0], [0.0, 1.0 / f, 0.0]])).then(crop_tf)
    crop = cv2.warpAffine(img, crop_tf.m, (size, size), flags=cv2.INTER_CUBIC if crop_tf.scale > 1.0
                          else cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    faces = det.detect_faces(crop)
    if faces:
        crop_lm = max(faces, key=lambda f: f.size).landmarks.astype(np.float64)
    else:  # dlib usually finds the aligned face; otherwise fit inside the known box
        box_pts = crop_tf.apply(lm)
        x0, y0 = box_pts.min(0)
        x1, y1 = box_pts.max(0)
        crop_lm = det.fit(crop, (x0, y0, x1, y1)).landmarks.astype(np.float64)
    crop_lm = refine_inner_lips(crop, crop_lm)
    fg = person_mask(crop, crop_lm, feather=2.0, erode=0)  # the same GrabCut mask inference uses
    return PreparedPhoto(name=name, image=crop, landmarks=crop_lm, foreground=fg, source=source or f"builtin:{name}")


# ----------------------------------------------------------------------------------------------------
def sample_identity(rng: np.random.Generator, variant: int) -> IdentityParams:
    """Identity changes for variant ``variant`` of a photo (variant 0 = the photo as it is)."""
    if variant == 0:
        return IdentityParams()
    u = rng.uniform
    return IdentityParams(
        mirror=bool(variant % 2 == 1),
        face_width=u(0.9, 1.1), jaw_length=u(-0.03, 0.06), eye_spacing=u(-0.03, 0.035),
        eye_size=u(0.9, 1.1), brow_height=u(-0.025, 0.03), nose_width=u(0.85, 1.2), nose_length=u(0.9, 1.12),
        mouth_width=u(0.88, 1.12), mouth_height=u(0.85, 1.15),
        skin_dl=u(-12, 8), skin_da=u(-4, 4), skin_db=u(-6, 7),
        light_gain=u(0.88, 1.1), light_dx=u(-0.35, 0.35), light_dy=u(-0.15, 0.15), colour_temp=u(-0.05, 0.05),
        background=tuple(float(c) for c in BACKGROUND_COLOURS[rng.integers(len(BACKGROUND_COLOURS))]),
        background_mix=u(0.65, 0.9),
    )


def reshape_canonical(shape: np.ndarray, p: IdentityParams) -> np.ndarray:
    """Apply the geometric identity parameters to a canonical 68-point shape."""
    out = np.array(shape, np.float64, copy=True)
    side = side_sign(shape)
    mid_x = shape[[27, 28, 29, 30, 33, 51, 57, 8], 0].mean()
    jaw = np.arange(17)
    out[jaw, 0] = mid_x + (out[jaw, 0] - mid_x) * p.face_width
    chin_w = np.clip((shape[jaw, 1] - shape[[0, 16], 1].mean()) / (shape[8, 1] - shape[[0, 16], 1].mean()), 0, 1)
    out[jaw, 1] += p.jaw_length * chin_w ** 1.5
    for eye, brow in ((range(36, 42), range(17, 22)), (range(42, 48), range(22, 27))):
        eye, brow = list(eye), list(brow)
        c = out[eye].mean(0)
        out[eye] = c + (out[eye] - c) * p.eye_size
        out[eye + brow, 0] += side[eye + brow] * p.eye_spacing
    out[17:27, 1] -= p.brow_height
    nose = list(range(27, 36))
    top = out[27].copy()
    out[nose, 0] = mid_x + (out[nose, 0] - mid_x) * p.nose_width
    out[nose, 1] = top[1] + (out[nose, 1] - top[1]) * p.nose_length
    mouth = list(range(48, 68))
    dy = out[33, 1] - shape[33, 1]  # the mouth follows the nose tip
    out[mouth, 1] += dy
    c = out[mouth].mean(0)
    out[mouth, 0] = c[0] + (out[mouth, 0] - c[0]) * p.mouth_width
    out[mouth, 1] = c[1] + (out[mouth, 1] - c[1]) * p.mouth_height
    return out


def _mirror(photo: PreparedPhoto) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    w = photo.image.shape[1]
    lm = photo.landmarks[MIRROR].copy()
    lm[:, 0] = (w - 1) - lm[:, 0]
    return photo.image[:, ::-1].copy(), lm, photo.foreground[:, ::-1].copy()


def recolour(image: np.ndarray, landmarks: np.ndarray, foreground: np.ndarray, p: IdentityParams) -> np.ndarray:
    """Skin tone, illumination and background colour changes (float math, returns uint8 RGB)."""
    import cv2

    img = image.astype(np.float32) / 255.0
    h, w = img.shape[:2]
    if p.skin_dl or p.skin_da or p.skin_db:
        lab = cv2.cvtColor(img, cv2.COLOR_RGB2LAB)
        face = np.zeros((h, w), np.uint8)
        cv2.fillConvexPoly(face, cv2.convexHull(landmarks[[1, 2, 3, 13, 14, 15, 29, 31, 35]].astype(np.int32)), 1)
        ref = lab[face > 0]
        a0, b0 = np.median(ref[:, 1]), np.median(ref[:, 2])
        dist2 = (lab[..., 1] - a0) ** 2 + (lab[..., 2] - b0) ** 2
        skin = np.exp(-dist2 / (2 * 9.0 ** 2)) * np.clip(foreground * 1.2, 0, 1)
        skin *= np.clip((lab[..., 0] - 15) / 20, 0, 1)  # not hair/shadows
        lab[..., 0] += p.skin_dl * skin
        lab[..., 1] += p.skin_da * skin
        lab[..., 2] += p.skin_db * skin
        img = np.clip(cv2.cvtColor(lab, cv2.COLOR_LAB2RGB), 0, 1)
    if p.background is not None and p.background_mix > 0:
        bg = 1.0 - np.clip(foreground, 0, 1)
        lum = img.mean(-1, keepdims=True)
        lum_bg = float((lum[..., 0] * bg).sum() / max(bg.sum(), 1.0))
        texture = 0.75 + 0.25 * lum / max(lum_bg, 1e-3)
        target = np.asarray(p.background, np.float32)[None, None] / 255.0 * texture
        a = (p.background_mix * bg)[..., None]
        img = img * (1 - a) + np.clip(target, 0, 1) * a
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    gain = p.light_gain * (1 + p.light_dx * (xs / w - 0.5) * 2 * 0.5 + p.light_dy * (ys / h - 0.5) * 2 * 0.5)
    img = img * gain[..., None]
    img[..., 0] *= 1 + p.colour_temp
    img[..., 2] *= 1 - p.colour_temp
    return np.clip(img * 255.0 + 0.5, 0, 255).astype(np.uint8)


def make_subject(photo: PreparedPhoto, subject_id: str, params: IdentityParams) -> Subject:
    """Build a subject (neutral frame + landmarks + canonical alignment) from a prepared photo."""
    if params.mirror:
        image, lm, fg = _mirror(photo)
    else:
        image, lm, fg = photo.image, photo.landmarks.copy(), photo.foreground
    to_canon = Similarity.fit(lm, canonical_template())
    canon = to_canon.apply(lm)
    new_canon = reshape_canonical(canon, params)
    new_lm = to_canon.inverse().apply(new_canon)
    if not np.allclose(new_lm, lm):
        warper = FaceWarper(image, lm)
        image = warper.warp(new_lm)
        fg = warper.warp(new_lm, image=np.ascontiguousarray(fg))
    image = recolour(image, new_lm, fg, params)
    # the subject's own alignment (its face shape differs from the photo's)
    to_canon = Similarity.fit(new_lm, canonical_template())
    return Subject(subject_id=subject_id, image=image, landmarks=new_lm, to_canonical=to_canon, params=params,
                   photo=photo.name)
