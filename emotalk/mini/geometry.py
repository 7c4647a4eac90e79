"""Small geometry helpers shared by the mead-mini modules: similarity transforms between a photo's pixel
space and canonical space, and the left/right side of every landmark."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from emotalk.data.face.alignment import similarity_fit
from emotalk.models.face_graph import MIRROR

#: landmarks on the facial midline used to find it
MIDLINE = (27, 28, 29, 30, 33, 51, 57, 62, 66, 8)


def side_sign(points: np.ndarray) -> np.ndarray:
    """(68,) -1 for the face's right side (image left), +1 for its left side, 0 on the midline."""
    pts = np.asarray(points)
    s = np.sign(pts[:, 0] - pts[list(MIDLINE), 0].mean())
    s[MIRROR == np.arange(len(MIRROR))] = 0.0
    return s


@dataclass(frozen=True)
class Similarity:
    """``y = scale * R x + t`` as a 2x3 matrix ``m`` (rows ``[A | t]``, ``A = scale * R``)."""

    m: np.ndarray

    @staticmethod
    def fit(src: np.ndarray, dst: np.ndarray) -> "Similarity":
        """Least-squares similarity (Umeyama, no reflection) mapping ``src`` (N, 2) onto ``dst`` (N, 2):
        :func:`emotalk.data.face.alignment.similarity_fit`, the one fit preprocessing uses too."""
        return Similarity(similarity_fit(src, dst))

    @property
    def linear(self) -> np.ndarray:
        return self.m[:, :2]

    @property
    def scale(self) -> float:
        return float(np.sqrt(abs(np.linalg.det(self.linear))))

    def apply(self, pts: np.ndarray) -> np.ndarray:
        pts = np.asarray(pts, np.float64)
        return pts @ self.linear.T + self.m[:, 2]

    def apply_vectors(self, vec: np.ndarray) -> np.ndarray:
        return np.asarray(vec, np.float64) @ self.linear.T

    def inverse(self) -> "Similarity":
        Ai = np.linalg.inv(self.linear)
        return Similarity(np.hstack([Ai, (-Ai @ self.m[:, 2])[:, None]]))

    def then(self, other: "Similarity") -> "Similarity":
        """``other ∘ self``."""
        A = other.linear @ self.linear
        return Similarity(np.hstack([A, (other.linear @ self.m[:, 2] + other.m[:, 2])[:, None]]))
