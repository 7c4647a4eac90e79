"""Similarity alignment to the canonical template, retargeting (Das et al. 2020) and their inverses.

Three coordinate systems meet here:

* **image** space: pixels of a video frame or a photo (x right, y down);
* **canonical** space (:mod:`emotalk.models.face_graph`): template centroid at 0, outer eye corners one unit
  apart. ``align_to_template`` maps image landmarks into it with a per-face similarity ``M`` (2x3);
* **crop** space: pixels of the ``S x S`` face crop G_T sees; ``crop_transform`` gives the image->crop
  similarity that puts the canonical template at a fixed place and scale in the crop.

A similarity is stored as a 2x3 matrix ``[[a, -b, tx], [b, a, ty]]`` acting on column vectors
``(x, y, 1)``: ``apply_similarity(M, p) = p @ M[:, :2].T + M[:, 2]`` (scale ``hypot(a, b)``, no shear, no
reflection). Everything accepts a single face ``(68, 2)`` or a sequence ``(T, 68, 2)`` (with one matrix
per frame, ``(T, 2, 3)``, or one shared ``(2, 3)``).

Retargeting (Das et al. 2020, "Speech-driven facial animation using cascaded GANs for learning of motion
and texture"): a subject's per-frame aligned landmarks are expressed as displacements from that subject's
aligned neutral face and those displacements are added to the canonical neutral template::

    retargeted[t] = template + (aligned[t] - aligned_neutral)          # retarget
    aligned[t]    = aligned_neutral + (retargeted[t] - template)       # unretarget (the inverse)
    image[t]      = apply_similarity(invert_similarity(M[t]), aligned[t])

so G_L learns speech/emotion motion independent of face shape, and inference puts predicted motion back
onto any target face (its own aligned neutral + its own similarity). The same convention is written in
:mod:`emotalk.data.io.clip`. :func:`face_geometry` bundles, for one photo, the aligned neutral, both
similarities and the crop, with exactly the conventions preprocessing used.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from emotalk.models.face_graph import canonical_template

#: Landmarks that barely move with speech or expression (nose, inner and outer eye corners); the default
#: point set for the similarity fit, so that an open mouth or raised brows do not tilt/scale the face.
STABLE_POINTS: tuple[int, ...] = (27, 28, 29, 30, 31, 32, 33, 34, 35, 36, 39, 42, 45)

#: Default placement of the face in the crop: canonical units -> fraction of the crop size, and where the
#: canonical origin (about the nose bridge) lands, as fractions of the crop size (x, y). With 0.30 the
#: face (jaw width about 1.6 units) spans about half the crop and the whole head fits.
DEFAULT_FACE_SCALE = 0.30
DEFAULT_FACE_CENTER = (0.5, 0.52)


# --------------------------------------------------------------------------------------------------
# similarity transforms
# --------------------------------------------------------------------------------------------------
def similarity_fit(src: np.ndarray, dst: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """Least-squares similarity (Umeyama / Procrustes without reflection) mapping ``src`` onto ``dst``.

    ``src``, ``dst``: ``(N, 2)`` (N >= 2) or batched ``(B, N, 2)``; returns ``(2, 3)`` or ``(B, 2, 3)``
    float64 such that ``apply_similarity(M, src) ~= dst``.
    """
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    if src.shape != dst.shape or src.shape[-1] != 2 or src.shape[-2] < 2:
        raise ValueError(f"similarity_fit needs matching (..., N>=2, 2) arrays, got {src.shape} and {dst.shape}")
    if weights is None:
        w = np.ones(src.shape[-2])
    else:
        w = np.asarray(weights, dtype=np.float64)
    w = w / w.sum()
    wexp = w[..., :, None]
    ms = (src * wexp).sum(-2, keepdims=True)
    md = (dst * wexp).sum(-2, keepdims=True)
    a, b = src - ms, dst - md
    # Complex-number form of the 2-D similarity: z_dst = c * z_src + t, c = s * e^{i theta}.
    za = a[..., 0] + 1j * a[..., 1]
    zb = b[..., 0] + 1j * b[..., 1]
    num = (w * np.conj(za) * zb).sum(-1)
    den = (w * np.abs(za) ** 2).sum(-1)
    c = num / np.maximum(den, 1e-300)
    re, im = np.real(c), np.imag(c)
    t = md[..., 0, :] - np.stack([re * ms[..., 0, 0] - im * ms[..., 0, 1],
                                  im * ms[..., 0, 0] + re * ms[..., 0, 1]], -1)
    m = np.zeros(src.shape[:-2] + (2, 3))
    m[..., 0, 0], m[..., 0, 1], m[..., 0, 2] = re, -im, t[..., 0]
    m[..., 1, 0], m[..., 1, 1], m[..., 1, 2] = im, re, t[..., 1]
    return m


def apply_similarity(m: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply ``(2, 3)`` (or per-frame ``(T, 2, 3)`` to ``(T, N, 2)``) to points; keeps the points' dtype."""
    m = np.asarray(m, dtype=np.float64)
    p = np.asarray(points)
    dtype = p.dtype if np.issubdtype(p.dtype, np.floating) else np.float64
    pf = p.astype(np.float64)
    if m.ndim == 2:
        out = pf @ m[:, :2].T + m[:, 2]
    else:
        if pf.ndim != 3 or pf.shape[0] != m.shape[0]:
            raise ValueError(f"per-frame matrices {m.shape} need points (T, N, 2), got {pf.shape}")
        out = np.einsum("tij,tnj->tni", m[:, :, :2], pf) + m[:, None, :, 2]
    return out.astype(dtype, copy=False)


def invert_similarity(m: np.ndarray) -> np.ndarray:
    """Inverse of a ``(2, 3)`` or ``(T, 2, 3)`` similarity (any invertible affine map, in fact)."""
    m = np.asarray(m, dtype=np.float64)
    a = m[..., :, :2]
    ainv = np.linalg.inv(a)
    out = np.empty_like(m)
    out[..., :, :2] = ainv
    out[..., :, 2] = -np.einsum("...ij,...j->...i", ainv, m[..., :, 2])
    return out


def compose_similarity(outer: np.ndarray, inner: np.ndarray) -> np.ndarray:
    """``outer ∘ inner``: apply ``inner`` first, then ``outer``."""
    outer = np.asarray(outer, dtype=np.float64)
    inner = np.asarray(inner, dtype=np.float64)
    a = outer[..., :, :2] @ inner[..., :, :2]
    t = np.einsum("...ij,...j->...i", outer[..., :, :2], inner[..., :, 2]) + outer[..., :, 2]
    return np.concatenate([a, t[..., None]], -1)


def similarity_params(m: np.ndarray) -> tuple[float, float, float, float]:
    """``(scale, angle_radians, tx, ty)`` of a ``(2, 3)`` similarity."""
    m = np.asarray(m, dtype=np.float64)
    return (float(np.hypot(m[0, 0], m[1, 0])), float(np.arctan2(m[1, 0], m[0, 0])),
            float(m[0, 2]), float(m[1, 2]))


# --------------------------------------------------------------------------------------------------
# canonical alignment and retargeting
# --------------------------------------------------------------------------------------------------
def _template(template: np.ndarray | None) -> np.ndarray:
    return canonical_template().astype(np.float64) if template is None else np.asarray(template, np.float64)


def align_to_template(points: np.ndarray, template: np.ndarray | None = None,
                      indices: tuple[int, ...] | None = STABLE_POINTS) -> tuple[np.ndarray, np.ndarray]:
    """Similarity-align image landmarks to the canonical template.

    ``points`` ``(68, 2)`` or ``(T, 68, 2)`` in image pixels; the fit uses ``indices`` (default
    :data:`STABLE_POINTS`; ``None`` = all 68). Returns ``(aligned, M)`` with ``aligned`` float32 in
    canonical space and ``M`` the image->canonical matrix ``(2, 3)`` or ``(T, 2, 3)`` (one per frame).
    """
    pts = np.asarray(points, dtype=np.float64)
    tpl = _template(template)
    idx = list(range(pts.shape[-2])) if indices is None else list(indices)
    dst = np.broadcast_to(tpl[idx], pts[..., idx, :].shape)
    m = similarity_fit(pts[..., idx, :], dst)
    return apply_similarity(m, pts).astype(np.float32), m


def to_image(aligned: np.ndarray, m: np.ndarray) -> np.ndarray:
    """Canonical-space landmarks back into the image whose image->canonical similarity is ``m``."""
    return apply_similarity(invert_similarity(m), aligned)


def retarget(aligned_frames: np.ndarray, aligned_neutral: np.ndarray,
             template: np.ndarray | None = None) -> np.ndarray:
    """``template + (aligned_frames - aligned_neutral)`` (Das et al. 2020); float32, same shape as input."""
    a = np.asarray(aligned_frames, dtype=np.float64)
    n = np.asarray(aligned_neutral, dtype=np.float64)
    return (_template(template) + (a - n)).astype(np.float32)


def unretarget(retargeted: np.ndarray, aligned_neutral: np.ndarray,
               template: np.ndarray | None = None) -> np.ndarray:
    """Inverse of :func:`retarget`: put canonical motion onto a subject's aligned neutral face."""
    r = np.asarray(retargeted, dtype=np.float64)
    n = np.asarray(aligned_neutral, dtype=np.float64)
    return (n + (r - _template(template))).astype(np.float32)


def retargeted_to_image(retargeted: np.ndarray, aligned_neutral: np.ndarray, m: np.ndarray,
                        template: np.ndarray | None = None) -> np.ndarray:
    """Retargeted canonical landmarks -> the target's image pixels (``m``: the target's image->canonical)."""
    return to_image(unretarget(retargeted, aligned_neutral, template), m)


# --------------------------------------------------------------------------------------------------
# face crops
# --------------------------------------------------------------------------------------------------
def crop_template(crop_size: int = 256, face_scale: float = DEFAULT_FACE_SCALE,
                  face_center: tuple[float, float] = DEFAULT_FACE_CENTER,
                  template: np.ndarray | None = None) -> np.ndarray:
    """Where the canonical template sits in an ``S x S`` crop (pixels)."""
    tpl = _template(template)
    return tpl * (face_scale * crop_size) + np.array(face_center) * crop_size


def crop_transform(landmarks: np.ndarray, crop_size: int = 256, face_scale: float = DEFAULT_FACE_SCALE,
                   face_center: tuple[float, float] = DEFAULT_FACE_CENTER,
                   indices: tuple[int, ...] | None = STABLE_POINTS) -> np.ndarray:
    """Image->crop similarity ``(2, 3)`` that puts a face (image landmarks ``(68, 2)``) upright at the
    standard place and scale of an ``S x S`` crop (the paper's "cropped, resized to 256 and warped to a
    frontal pose", in-plane). Preprocessing uses one per clip, from the clip's median landmarks, so the
    crop does not jitter; inference uses the same function on the photo so G_T sees identical framing."""
    pts = np.asarray(landmarks, dtype=np.float64)
    dst = crop_template(crop_size, face_scale, face_center)
    idx = list(range(pts.shape[-2])) if indices is None else list(indices)
    return similarity_fit(pts[idx], dst[idx])


def warp_image(image: np.ndarray, m: np.ndarray, size: int | tuple[int, int],
               border: str = "replicate") -> np.ndarray:
    """Warp ``image`` by the similarity ``m`` (image->output pixels) into an output of ``size``
    (``S`` or ``(width, height)``). ``border``: ``replicate`` or ``constant`` (black)."""
    import cv2

    w, h = (size, size) if isinstance(size, (int, np.integer)) else size
    mode = cv2.BORDER_REPLICATE if border == "replicate" else cv2.BORDER_CONSTANT
    return cv2.warpAffine(np.ascontiguousarray(image), np.asarray(m, dtype=np.float64), (int(w), int(h)),
                          flags=cv2.INTER_LINEAR, borderMode=mode)


def paste_crop(image: np.ndarray, crop: np.ndarray, m: np.ndarray, feather: int = 8,
               alpha: np.ndarray | None = None) -> np.ndarray:
    """Put a (generated) crop back into ``image`` through the inverse of the image->crop similarity
    ``m``, blending over a ``feather``-pixel border, times ``alpha`` (an optional (S, S) crop mask in
    [0, 1], e.g. the person mask: the photo shows through where it is 0). Returns a new uint8 image.
    For many crops into one image use :class:`CropPaster` (the same result, the mask made once)."""
    return CropPaster(image.shape[:2], crop.shape[0], m, feather, alpha)(crop, image)


class CropPaster:
    """:func:`paste_crop` for many crops of one transform: the feathered, alpha-weighted blend mask is
    warped into the image once, not per crop, and with ``image`` given (the photo a whole video is
    pasted into) so is the photo's share of the blend, ``image * (1 - mask)``. Per crop only the crop's
    warp and one multiply-add remain. The arithmetic is :func:`paste_crop`'s (float32, the same mask), so
    the pixels are identical."""

    def __init__(self, shape: tuple[int, ...], crop_size: int, m: np.ndarray, feather: int = 8,
                 alpha: np.ndarray | None = None, image: np.ndarray | None = None):
        import cv2

        h, w = int(shape[0]), int(shape[1])
        s = int(crop_size)
        self.size = (w, h)
        self.inv = invert_similarity(m)
        mask = np.zeros((s, s), np.float32)
        f = max(int(feather), 0)
        mask[f:s - f, f:s - f] = 1.0
        if f:
            mask = cv2.GaussianBlur(mask, (0, 0), f / 2.0)
        if alpha is not None:
            mask = mask * np.asarray(alpha, np.float32)
        mask = warp_image(mask, self.inv, (w, h), border="constant")
        self.mask = np.ascontiguousarray(np.repeat(mask[..., None], 3, axis=2))  # (h, w, 3): no broadcasting
        self.keep = 1 - mask[..., None]  # the photo's weight, (h, w, 1) as paste_crop broadcasts it
        # a mask in [0, 1] (up to float rounding) keeps the blend in [0, 255]: then +0.5 and the cast to
        # uint8 round exactly as paste_crop's clip does, without a pass over the image for the clip
        self.needs_clip = bool(mask.min() < -1e-4 or mask.max() > 1 + 1e-4)
        self.base = None if image is None else self._base(image)

    def _base(self, image: np.ndarray) -> np.ndarray:
        if image.shape[:2] != (self.size[1], self.size[0]):
            raise ValueError(f"image {image.shape[:2]} does not match the paster's {self.size[::-1]}")
        return image.astype(np.float32) * self.keep

    def __call__(self, crop: np.ndarray, image: np.ndarray | None = None, out: np.ndarray | None = None) -> np.ndarray:
        """``crop`` ``(S, S, 3)`` uint8 blended into ``image`` (default: the one given at construction);
        into ``out`` (an ``(h, w, 3)`` uint8 array or view) when given, else a new array."""
        base = self.base if image is None else self._base(image)
        if base is None:
            raise ValueError("CropPaster needs the image to paste into (at construction or per call)")
        back = warp_image(crop, self.inv, self.size, border="constant").astype(np.float32)
        np.multiply(back, self.mask, out=back)
        np.add(base, back, out=back)
        np.add(back, 0.5, out=back)
        if self.needs_clip:
            np.clip(back, 0, 255, out=back)
        if out is None:
            return back.astype(np.uint8)
        np.copyto(out, back, casting="unsafe")  # float -> uint8 truncates, as astype does
        return out


# --------------------------------------------------------------------------------------------------
# one face, all the geometry inference needs
# --------------------------------------------------------------------------------------------------
@dataclass
class FaceGeometry:
    """Everything about one (neutral) face that inference needs, with preprocessing's conventions."""

    image_landmarks: np.ndarray  # (68, 2) pixels of the source image
    aligned: np.ndarray  # (68, 2) canonical space: the face's aligned neutral (G_L's input graph X)
    to_canonical: np.ndarray  # (2, 3) image -> canonical
    to_crop: np.ndarray  # (2, 3) image -> S x S crop (G_T's framing)
    crop_landmarks: np.ndarray  # (68, 2) pixels of the crop
    crop_size: int

    def retargeted_to_crop(self, retargeted: np.ndarray) -> np.ndarray:
        """G_L output (canonical, retargeted) -> this face's crop pixels ``(..., 68, 2)``."""
        img = retargeted_to_image(retargeted, self.aligned, self.to_canonical)
        return apply_similarity(self.to_crop, img).astype(np.float32)

    def retargeted_to_image(self, retargeted: np.ndarray) -> np.ndarray:
        return retargeted_to_image(retargeted, self.aligned, self.to_canonical).astype(np.float32)

    def crop(self, image: np.ndarray) -> np.ndarray:
        return warp_image(image, self.to_crop, self.crop_size)


def face_geometry(image_landmarks: np.ndarray, crop_size: int = 256, face_scale: float = DEFAULT_FACE_SCALE,
                  face_center: tuple[float, float] = DEFAULT_FACE_CENTER) -> FaceGeometry:
    """Alignment + crop of one face from its image landmarks (e.g. ``DlibLandmarker().largest_face(photo)``)."""
    pts = np.asarray(image_landmarks, dtype=np.float32)
    aligned, m = align_to_template(pts)
    to_crop = crop_transform(pts, crop_size, face_scale, face_center)
    return FaceGeometry(pts, aligned, m, to_crop, apply_similarity(to_crop, pts).astype(np.float32), int(crop_size))
