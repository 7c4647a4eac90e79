"""The target photo for inference: load any image, find the face, align it like preprocessing does.

:func:`load_image` reads JPEG / PNG / WebP / BMP / TIFF (anything Pillow opens, EXIF orientation applied)
or takes an array, and always returns RGB uint8: grayscale is expanded, an alpha channel is composited
over white, 16-bit and float images are rescaled.

:func:`prepare_photo` then

1. detects faces with dlib (on a copy downscaled to at most ``detect_max_side`` for speed) and keeps the
   largest one, with a warning naming how many faces were found when there are several;
2. refuses a face smaller than :data:`MIN_FACE_SIZE` pixels (:class:`~emotalk.errors.NoFaceError`, which
   names the minimum) - the landmarks of a tinier face are too coarse to drive anything;
3. fits the 68 landmarks at full resolution and similarity-aligns them to the canonical template
   (:func:`emotalk.data.face.alignment.align_to_template`): the aligned landmarks are G_L's input graph X;
4. cuts the face crop exactly as preprocessing cuts its neutral reference
   (:func:`emotalk.data.face.alignment.crop_transform` + :func:`~emotalk.data.face.alignment.warp_image`, border
   replicated), so G_T sees the framing it was trained on.

A photo larger than ``max_side`` is downscaled first (with a warning) and its size is made even (the last
row/column dropped) because H.264 needs even frame sizes; the output video has exactly the prepared
image's size.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from emotalk.data.face.alignment import (align_to_template, apply_similarity, crop_transform, to_image,
                                         warp_image)
from emotalk.data.face.detect import DlibLandmarker
from emotalk.data.face.track import detect_boxes
from emotalk.errors import InputError, NoFaceError
from emotalk.models.face_graph import mouth_opening

#: Smallest usable face (the detector box's longer side, in pixels of the prepared photo).
MIN_FACE_SIZE = 64
#: Photos whose longer side exceeds this are downscaled before anything else.
DEFAULT_MAX_SIDE = 1920
#: Aligned inner-lip gap (canonical units) above which the photo counts as "mouth open".
OPEN_MOUTH_WARNING = 0.15
IMAGE_HINT = "use a JPEG, PNG or WebP photo"


def _from_pil(img) -> np.ndarray:
    from PIL import Image, ImageOps

    try:
        img = ImageOps.exif_transpose(img)
    except Exception:  # noqa: BLE001 - broken EXIF data: keep the pixels as stored
        pass
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if arr.max() > 255 else 255.0
        return to_rgb_uint8(np.clip(arr / top * 255.0, 0, 255).astype(np.uint8))
    if img.mode == "F":
        return to_rgb_uint8(np.asarray(img, dtype=np.float32))
    has_alpha = img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info)
    if has_alpha:
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return np.asarray(Image.alpha_composite(white, rgba).convert("RGB"), dtype=np.uint8).copy()
    return np.asarray(img.convert("RGB"), dtype=np.uint8).copy()


def to_rgb_uint8(image: np.ndarray) -> np.ndarray:
    """Any image array -> (H, W, 3) RGB uint8: gray (H, W) / (H, W, 1) expanded, RGBA composited over
    white, float in [0, 1] (or [0, 255]) and uint16 rescaled."""
    a = np.asarray(image)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[..., 0]
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] not in (3, 4)) or min(a.shape[:2]) < 1:
        raise InputError(f"an image must be (H, W), (H, W, 3) or (H, W, 4), got shape {a.shape}")
    if a.dtype == np.uint8:
        f = None
    elif a.dtype == np.uint16:
        f = a.astype(np.float32) / 65535.0
    elif np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer) or a.dtype == bool:
        f = a.astype(np.float32)
        if not np.isfinite(f).all():
            raise InputError("the image contains NaN or infinite values")
        if f.max() > 1.0:
            f = f / 255.0
    else:
        raise InputError(f"unsupported image dtype {a.dtype}")
    if f is not None:
        a = np.clip(f * 255.0 + 0.5, 0, 255).astype(np.uint8)
    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, axis=2)
    if a.shape[2] == 4:
        alpha = a[..., 3:].astype(np.float32) / 255.0
        a = np.clip(a[..., :3] * alpha + 255.0 * (1 - alpha) + 0.5, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(a)


def load_image(source: str | Path | np.ndarray) -> np.ndarray:
    """Read a photo (path or array) as RGB uint8 (H, W, 3); :class:`InputError` for missing, unreadable
    or corrupt files."""
    if isinstance(source, np.ndarray):
        return to_rgb_uint8(source)
    if not isinstance(source, (str, Path)):
        if hasattr(source, "convert") and hasattr(source, "mode"):  # a PIL image
            return _from_pil(source)
        raise InputError(f"an image must be a file path or an array, got {type(source).__name__}")
    path = Path(source)
    if not path.exists():
        raise InputError(f"image file {path} not found")
    if not path.is_file():
        raise InputError(f"image path {path} is not a file; {IMAGE_HINT}")
    if path.stat().st_size == 0:
        raise InputError(f"image file {path} is empty (0 bytes); {IMAGE_HINT}")
    try:
        from PIL import Image

        Image.MAX_IMAGE_PIXELS = max(Image.MAX_IMAGE_PIXELS or 0, 300_000_000)
        with Image.open(path) as img:
            img.load()
            return _from_pil(img)
    except ImportError:  # pragma: no cover - Pillow comes with matplotlib / scikit-image
        pass
    except PermissionError:
        raise InputError(f"image file {path} is not readable (permission denied)") from None
    except Exception as e:  # noqa: BLE001 - PIL raises many types for corrupt files
        raise InputError(f"{path} is not a readable image ({type(e).__name__}: {e}); {IMAGE_HINT}") from None
    import cv2  # pragma: no cover

    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)  # pragma: no cover
    if bgr is None:  # pragma: no cover
        raise InputError(f"{path} is not a readable image; {IMAGE_HINT}")
    return np.ascontiguousarray(bgr[..., ::-1])  # pragma: no cover


@dataclass
class Photo:
    """A prepared target photo. Coordinates: ``landmarks`` image pixels, ``aligned`` canonical space,
    ``crop_landmarks`` pixels of the ``crop_size`` face crop."""

    image: np.ndarray  # (H, W, 3) uint8 RGB, even H and W: the output video's frame
    landmarks: np.ndarray  # (68, 2) float32 image pixels
    box: tuple[float, float, float, float]  # detector box (left, top, right, bottom), image pixels
    num_faces: int
    aligned: np.ndarray  # (68, 2) float32 canonical space: G_L's input graph X for this face
    to_canonical: np.ndarray  # (2, 3) image -> canonical similarity
    crop_size: int
    crop_matrix: np.ndarray  # (2, 3) image -> crop similarity (alignment.crop_transform)
    crop: np.ndarray  # (S, S, 3) uint8 face crop, as preprocessing cuts it
    crop_landmarks: np.ndarray  # (68, 2) float32 crop pixels
    warnings: list[str] = field(default_factory=list)
    source: str = ""

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of the output frames."""
        return int(self.image.shape[1]), int(self.image.shape[0])

    @property
    def face_size(self) -> float:
        return float(max(self.box[2] - self.box[0], self.box[3] - self.box[1]))

    def aligned_to_image(self, aligned: np.ndarray) -> np.ndarray:
        """Landmarks in this photo's aligned canonical space (``(68, 2)`` or ``(T, 68, 2)``) -> image pixels."""
        return to_image(aligned, self.to_canonical).astype(np.float32)

    def aligned_to_crop(self, aligned: np.ndarray) -> np.ndarray:
        """Aligned canonical landmarks -> pixels of the ``crop_size`` face crop."""
        return apply_similarity(self.crop_matrix, self.aligned_to_image(aligned)).astype(np.float32)


def _even(image: np.ndarray) -> np.ndarray:
    h, w = image.shape[:2]
    if h < 2 or w < 2:
        raise InputError(f"the image is only {w}x{h} pixels; use a real photo")
    return np.ascontiguousarray(image[: h - h % 2, : w - w % 2])


def detect_faces(image: np.ndarray, landmarker=None, detect_max_side: int = 1024):
    """All face boxes (full-resolution pixels), largest first, and the landmarker used."""
    lm = landmarker if landmarker is not None else DlibLandmarker(upsample=1)
    return detect_boxes(lm, image, detect_max_side), lm


def prepare_photo(image: str | Path | np.ndarray, crop_size: int = 256, landmarker=None,
                  min_face_size: int = MIN_FACE_SIZE, max_side: int | None = DEFAULT_MAX_SIDE,
                  detect_max_side: int = 1024) -> Photo:
    """Load ``image`` and prepare its largest face for generation (see the module docstring)."""
    import cv2

    source = str(image) if isinstance(image, (str, Path)) else ""
    img = load_image(image)
    warnings: list[str] = []
    h, w = img.shape[:2]
    if max_side and max(h, w) > max_side:
        s = float(max_side) / max(h, w)
        img = cv2.resize(img, (max(2, round(w * s)), max(2, round(h * s))), interpolation=cv2.INTER_AREA)
        warnings.append(f"the photo ({w}x{h}) was downscaled to {img.shape[1]}x{img.shape[0]} "
                        f"(longer side at most {max_side} pixels)")
    img = _even(img)
    boxes, lm = detect_faces(img, landmarker, detect_max_side)
    what = f"in {source}" if source else "in the image"
    if not boxes:
        raise NoFaceError(f"no face found {what}; use a frontal photo where the face is clearly visible")
    if len(boxes) > 1:
        warnings.append(f"{len(boxes)} faces found {what}; using the largest one")
    box = boxes[0]
    face = lm.fit(img, box)
    size = float(max(face.box[2] - face.box[0], face.box[3] - face.box[1]))
    if size < min_face_size:
        raise NoFaceError(f"the face {what} is too small ({size:.0f} pixels); it must be at least "
                          f"{min_face_size} pixels across - use a larger photo or one where the face fills "
                          f"more of the frame")
    landmarks = face.landmarks.astype(np.float32)
    aligned, m = align_to_template(landmarks)
    crop_m = crop_transform(landmarks, crop_size)
    crop = warp_image(img, crop_m, crop_size)
    crop_lm = apply_similarity(crop_m, landmarks).astype(np.float32)
    if float(mouth_opening(aligned)) > OPEN_MOUTH_WARNING:
        warnings.append("the mouth in the photo is open; results are best with a neutral face and closed lips")
    return Photo(image=img, landmarks=landmarks, box=tuple(float(v) for v in face.box), num_faces=len(boxes),
                 aligned=aligned.astype(np.float32), to_canonical=m, crop_size=int(crop_size),
                 crop_matrix=crop_m, crop=crop, crop_landmarks=crop_lm, warnings=warnings, source=source)
