"""The 68-point face graph: canonical template, facial regions, Delaunay edges and adjacency.

Points follow the iBUG-300W / dlib order. The canonical template (``assets/face_template_68.json``) is a
frontal, neutral, closed-lips face built by ``scripts/make_template.py`` from dlib landmarks of the
public-domain photos ``skimage.data.astronaut()`` and matplotlib's ``grace_hopper.jpg`` (each also
mirrored), Procrustes-aligned, averaged and symmetrised.

Canonical space: x to the right, y downwards, origin at the template's centroid, unit = the distance
between the template's outer eye corners (points 36 and 45).
"""
from __future__ import annotations

import functools
import json
from importlib import resources

import numpy as np

NUM_LANDMARKS = 68

#: The K = 8 facial regions used for hierarchical graph pooling (paper §3.1 / appendix).
REGIONS: dict[str, tuple[int, ...]] = {
    "jaw": tuple(range(0, 17)),
    "right_brow": tuple(range(17, 22)),
    "left_brow": tuple(range(22, 27)),
    "nose": tuple(range(27, 36)),
    "right_eye": tuple(range(36, 42)),
    "left_eye": tuple(range(42, 48)),
    "outer_lips": tuple(range(48, 60)),
    "inner_lips": tuple(range(60, 68)),
}
REGION_NAMES = tuple(REGIONS)
MOUTH = tuple(range(48, 68))
BROWS = REGIONS["right_brow"] + REGIONS["left_brow"]
EYES = REGIONS["right_eye"] + REGIONS["left_eye"]
#: Upper/lower eyelid pairs whose vertical gap closes during a blink.
EYELID_PAIRS = ((37, 41), (38, 40), (43, 47), (44, 46))
#: Inner-lip upper/lower pairs (mouth opening).
INNER_LIP_PAIRS = ((61, 67), (62, 66), (63, 65))


def _mirror_permutation() -> np.ndarray:
    pairs = [(i, 16 - i) for i in range(17)]
    pairs += list(zip(range(17, 22), range(26, 21, -1)))
    pairs += [(27, 27), (28, 28), (29, 29), (30, 30), (31, 35), (32, 34), (33, 33)]
    pairs += [(36, 45), (37, 44), (38, 43), (39, 42), (40, 47), (41, 46)]
    pairs += [(48, 54), (49, 53), (50, 52), (51, 51), (55, 59), (56, 58), (57, 57)]
    pairs += [(60, 64), (61, 63), (62, 62), (65, 67), (66, 66)]
    perm = np.arange(NUM_LANDMARKS)
    for a, b in pairs:
        perm[a], perm[b] = b, a
    return perm


#: ``points[MIRROR]`` with x negated is the left-right mirror image of a face.
MIRROR = _mirror_permutation()


def region_assignment() -> np.ndarray:
    """(68,) region index of every landmark."""
    out = np.empty(NUM_LANDMARKS, dtype=np.int64)
    for k, idx in enumerate(REGIONS.values()):
        out[list(idx)] = k
    return out


@functools.lru_cache(maxsize=1)
def _template_json() -> dict:
    text = resources.files("emotalk.assets").joinpath("face_template_68.json").read_text()
    return json.loads(text)


def canonical_template() -> np.ndarray:
    """(68, 2) float32 frontal neutral closed-lips face in canonical space."""
    return np.asarray(_template_json()["points"], dtype=np.float32)


def template_triangles() -> np.ndarray:
    """(T, 3) Delaunay triangles of the template (computed with slightly parted lips, see make_template)."""
    return np.asarray(_template_json()["triangles"], dtype=np.int64)


def delaunay_triangles(points: np.ndarray) -> np.ndarray:
    from scipy.spatial import Delaunay

    return np.asarray(Delaunay(np.asarray(points, dtype=np.float64)).simplices, dtype=np.int64)


def edges_from_triangles(triangles: np.ndarray) -> np.ndarray:
    """Unique undirected edges (E, 2), i < j, sorted."""
    e = np.concatenate([triangles[:, [0, 1]], triangles[:, [1, 2]], triangles[:, [0, 2]]])
    e = np.sort(e, axis=1)
    return np.unique(e, axis=0)


def adjacency_matrix(edges: np.ndarray | None = None, n: int = NUM_LANDMARKS) -> np.ndarray:
    """Symmetric 0/1 adjacency A (n, n) without self-loops; defaults to the template's Delaunay graph."""
    if edges is None:
        edges = edges_from_triangles(template_triangles())
    a = np.zeros((n, n), dtype=np.float32)
    a[edges[:, 0], edges[:, 1]] = 1.0
    a[edges[:, 1], edges[:, 0]] = 1.0
    return a


def mouth_opening(points):
    """Mean vertical inner-lip gap; (..., 68, 2) numpy array (or anything array-like) or torch tensor,
    returned as the same kind."""
    pts = points if hasattr(points, "shape") else np.asarray(points)
    gaps = [pts[..., lo, 1] - pts[..., up, 1] for up, lo in INNER_LIP_PAIRS]
    return sum(gaps) / len(gaps)


def brow_height(points: np.ndarray) -> np.ndarray:
    """Mean vertical distance from the brows down to the eyes (larger = raised brows); (..., 68, 2)."""
    pts = np.asarray(points)
    return pts[..., list(EYES), 1].mean(-1) - pts[..., list(BROWS), 1].mean(-1)


#: The outer eye corners: their distance is the face's unit of length everywhere in emotalk (the canonical
#: template has it at 1; the mead-mini generator, the warp renderer, G_T's heatmaps and the metrics all
#: measure in it), because it barely moves with speech or expression.
OUTER_EYE_CORNERS = (36, 45)


def eye_axis(points):
    """(..., 2) vector from the face's right outer eye corner (36) to its left one (45); numpy array or
    torch tensor of (..., 68, 2), returned as the same kind."""
    pts = points if hasattr(points, "shape") else np.asarray(points)
    return pts[..., OUTER_EYE_CORNERS[1], :] - pts[..., OUTER_EYE_CORNERS[0], :]


def eye_distance(points):
    """(...,) outer-eye-corner distance of (..., 68, 2) landmarks: numpy in, float64 numpy out (a float
    for one face's (68, 2) gives a 0-d array; wrap in ``float()``); torch in, torch out (same dtype)."""
    axis = eye_axis(points)
    if isinstance(axis, np.ndarray):
        return np.linalg.norm(axis.astype(np.float64, copy=False), axis=-1)
    return axis.norm(dim=-1)
