"""Rebuild ``emotalk/assets/face_template_68.json``, the canonical neutral 68-point face.

Provenance: dlib 68-point landmarks of two public-domain photos available offline —
``skimage.data.astronaut()`` (Eileen Collins, NASA) and matplotlib's ``grace_hopper.jpg`` (US Navy) —
each used as-is and mirrored, Procrustes-aligned, averaged, symmetrised, inner lips closed.

    python scripts/make_template.py
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from emotalk.data.face.detect import DlibLandmarker
from emotalk.models.face_graph import MIRROR, delaunay_triangles, INNER_LIP_PAIRS
from emotalk.data.io.photos import public_domain_photos


def procrustes_to(src: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Similarity-align ``src`` (N, 2) onto ``ref`` (N, 2)."""
    ms, mr = src.mean(0), ref.mean(0)
    a, b = src - ms, ref - mr
    u, s, vt = np.linalg.svd(a.T @ b)
    d = np.sign(np.linalg.det(u @ vt))
    r = u @ np.diag([1.0, d]) @ vt
    scale = (s * np.array([1.0, d])).sum() / (a ** 2).sum()
    return scale * a @ r + mr


def main() -> None:
    det = DlibLandmarker(upsample=1)
    shapes = []
    for name, img in public_domain_photos().items():
        pts = det.largest_face(img).landmarks.astype(np.float64)
        shapes.append(pts)
        mirrored = pts[MIRROR].copy()
        mirrored[:, 0] = img.shape[1] - 1 - mirrored[:, 0]
        shapes.append(mirrored)
        print(f"{name}: face found, {len(pts)} points")
    ref = shapes[0]
    for _ in range(5):  # generalised Procrustes
        aligned = [procrustes_to(s, ref) for s in shapes]
        ref = np.mean(aligned, axis=0)
    # symmetrise exactly about the vertical axis through the nose bridge
    mirrored = ref[MIRROR].copy()
    mirrored[:, 0] = -mirrored[:, 0]
    ref_c = ref - ref.mean(0)
    mirrored_c = mirrored - mirrored.mean(0)
    mirrored_c = procrustes_to(mirrored_c, ref_c)
    sym = (ref_c + mirrored_c) / 2
    # rotate so the eye line is horizontal, then make it exactly mirror-symmetric about x = 0
    eye_r, eye_l = sym[36:42].mean(0), sym[42:48].mean(0)
    ang = np.arctan2(eye_l[1] - eye_r[1], eye_l[0] - eye_r[0])
    c, s = np.cos(-ang), np.sin(-ang)
    sym = sym @ np.array([[c, s], [-s, c]])
    sym[:, 0] -= sym[[27, 28, 29, 30, 33, 51, 57, 62, 66, 8], 0].mean()
    m = sym[MIRROR].copy()
    m[:, 0] = -m[:, 0]
    sym = (sym + m) / 2
    # triangulate with the lips as detected (slightly parted) so the inner-lip points stay distinct
    opened = sym.copy()
    for up, lo in INNER_LIP_PAIRS:
        mid = (opened[up, 1] + opened[lo, 1]) / 2
        gap = max(opened[lo, 1] - opened[up, 1], 0.02 * np.ptp(sym[:, 1]))
        opened[up, 1], opened[lo, 1] = mid - gap / 2, mid + gap / 2
    triangles = delaunay_triangles(opened)
    closed = sym.copy()
    for up, lo in INNER_LIP_PAIRS:  # neutral face: closed lips
        mid = (closed[up, 1] + closed[lo, 1]) / 2
        closed[up, 1] = closed[lo, 1] = mid
    # canonical units: centroid at 0, outer-eye-corner distance = 1
    closed -= closed.mean(0)
    closed /= np.linalg.norm(closed[45] - closed[36])
    out = Path(__file__).resolve().parents[1] / "emotalk" / "assets" / "face_template_68.json"
    out.write_text(json.dumps({
        "description": "Canonical frontal neutral closed-lips 68-point face (iBUG order). x right, y down, "
                       "centroid at origin, outer eye corners (36, 45) one unit apart.",
        "source": "dlib 68-point landmarks of skimage.data.astronaut() and matplotlib grace_hopper.jpg "
                  "(public domain), each also mirrored; generalised Procrustes average, symmetrised, "
                  "inner lips closed. Rebuild with scripts/make_template.py.",
        "points": np.round(closed, 5).tolist(),
        "triangles": triangles.tolist(),
    }, indent=1))
    print(f"wrote {out}: {len(triangles)} triangles")


if __name__ == "__main__":
    main()
