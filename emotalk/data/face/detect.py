"""68-point landmark detection backends.

``dlib`` (default, offline): HOG frontal face detector + the 68-point shape predictor shipped by the
``face-recognition-models`` package. Its ``.dat`` files are opened by path (that package's own import
is broken on recent setuptools, so it is never imported).
"""
from __future__ import annotations

import functools
import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from emotalk.errors import DependencyError, NoFaceError


def face_recognition_models_dir() -> Path:
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or spec.origin is None:
        raise DependencyError("the dlib model files are missing; run: pip install face-recognition-models")
    return Path(spec.origin).parent / "models"


def dlib_model_path(name: str) -> Path:
    """Path of a ``face-recognition-models`` file, e.g. ``shape_predictor_68_face_landmarks.dat``."""
    path = face_recognition_models_dir() / name
    if not path.is_file():
        raise DependencyError(f"{path} is missing; reinstall with: pip install --force-reinstall "
                              f"face-recognition-models")
    return path


@functools.lru_cache(maxsize=None)
def _dlib_objects():
    try:
        import dlib
    except ImportError:
        raise DependencyError("dlib is not installed; run: pip install dlib-bin") from None
    detector = dlib.get_frontal_face_detector()
    predictor = dlib.shape_predictor(str(dlib_model_path("shape_predictor_68_face_landmarks.dat")))
    return dlib, detector, predictor


@dataclass
class Face:
    box: tuple[float, float, float, float]  # left, top, right, bottom (pixels)
    landmarks: np.ndarray  # (68, 2) float32, pixels

    @property
    def size(self) -> float:
        return float(max(self.box[2] - self.box[0], self.box[3] - self.box[1]))


def _to_gray_uint8(image: np.ndarray) -> np.ndarray:
    img = np.asarray(image)
    if img.dtype != np.uint8:
        img = np.clip(img * (255.0 if img.max() <= 1.0 else 1.0), 0, 255).astype(np.uint8)
    if img.ndim == 3:
        img = (img[..., :3] @ np.array([0.299, 0.587, 0.114])).astype(np.uint8)
    return np.ascontiguousarray(img)


class DlibLandmarker:
    """Detect faces and fit 68 landmarks with dlib. ``upsample`` helps with small faces."""

    name = "dlib"

    def __init__(self, upsample: int = 1):
        self.upsample = upsample
        self._dlib, self._detector, self._predictor = _dlib_objects()

    def detect_faces(self, image: np.ndarray) -> list[Face]:
        gray = _to_gray_uint8(image)
        rects = self._detector(gray, self.upsample)
        return [self._fit(gray, r) for r in rects]

    def fit(self, image: np.ndarray, box: tuple[float, float, float, float]) -> Face:
        """Fit landmarks inside a known box (tracking: no detection)."""
        gray = _to_gray_uint8(image)
        rect = self._dlib.rectangle(*[int(round(v)) for v in box])
        return self._fit(gray, rect)

    def _fit(self, gray: np.ndarray, rect) -> Face:
        shape = self._predictor(gray, rect)
        pts = np.array([[p.x, p.y] for p in shape.parts()], dtype=np.float32)
        return Face((rect.left(), rect.top(), rect.right(), rect.bottom()), pts)

    def largest_face(self, image: np.ndarray) -> Face:
        faces = self.detect_faces(image)
        if not faces:
            raise NoFaceError("no face found in the image; use a frontal photo where the face is clearly "
                              "visible")
        return max(faces, key=lambda f: f.size)
