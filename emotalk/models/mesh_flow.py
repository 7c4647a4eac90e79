"""Piecewise-affine (mesh) prior flow: the landmark motion G -> G' as a dense backward flow (not in the paper).

Why a mesh and not a smooth interpolation: a blink moves the upper eyelid by the whole eye opening while
the lower lid, a few pixels away, barely moves; at the blink's middle frame both lids lie on the same line.
Any smooth interpolation of the landmark displacements (the Gaussian-weighted prior of
:func:`emotalk.models.heatmap.landmark_prior_flow`) averages the two lids there and samples the *open* eye,
so the rendered eye stays open. A piecewise-affine map over a triangulation of the landmarks keeps the two
lids apart: the triangles inside the eye collapse, the lid skin above them stretches down over the eye and
the output samples skin. The same holds for the lips (the triangles between the inner lips open and
sample the lip line, which D_T then paints over with teeth and the oral cavity, see the occlusion map).
This is the warp the mead-mini generator and the warp baseline use (:mod:`emotalk.data.face.warp`), written
in torch so it runs inside G_T's forward on a batch, on any device.

Mesh: the 68 landmarks plus 19 anchors built from the *neutral* landmarks (they never move): a ring around
the face (jaw points pushed out from the face centre, points over the forehead) and four far corners, so
every pixel of the crop lies in a triangle and the displacement falls linearly to zero between the face
outline and the ring (hair, neck and backdrop stay still). The triangulation is computed once, on the
canonical template (lips slightly parted so the mouth has interior triangles, as the warp baseline does);
every face reuses it, which keeps the operation batched and its cost fixed. A face whose own triangulation
would differ a little just gets slightly folded triangles; where triangles overlap their maps are averaged.

Cost: OpenCV rasterises the ~150 moving triangles per face on the CPU: a few milliseconds per batch at
128 x 128. No parameters, no gradient (landmarks are inputs).
"""
from __future__ import annotations

import functools

import numpy as np
import torch
from torch import Tensor

from emotalk.models.face_graph import INNER_LIP_PAIRS, canonical_template, eye_distance

#: landmark indices whose centre is the face centre the ring is built around (nose bridge and tip)
_CENTRE = (27, 28, 29, 30, 33)
_RING_JAW = tuple(range(0, 17, 2))
_RING_BROW = (17, 19, 21, 22, 24, 26)
RING_SCALE = 1.45  # jaw ring: this many times the jaw point's distance from the face centre
FOREHEAD_RISE = 0.55  # forehead anchors: this many eye distances above the brow points
CORNER_REACH = 6.0  # far corners: this many eye distances from the face centre (outside any crop)
NUM_ANCHORS = len(_RING_JAW) + len(_RING_BROW) + 4


def mesh_anchors(neutral: Tensor) -> Tensor:
    """``(B, 68, 2)`` neutral landmarks -> ``(B, 19, 2)`` fixed anchors (ring + far corners), same units."""
    pts = neutral.float()
    centre = pts[:, list(_CENTRE)].mean(dim=1, keepdim=True)  # (B, 1, 2)
    eye = eye_distance(pts).clamp_min(1e-3)[:, None, None]  # (B, 1, 1)
    jaw = centre + RING_SCALE * (pts[:, list(_RING_JAW)] - centre)
    brow = pts[:, list(_RING_BROW)]
    up = torch.tensor([0.0, -FOREHEAD_RISE], device=pts.device)
    forehead = brow + eye * up + 0.25 * (brow - centre)
    signs = torch.tensor([[-1.0, -1.0], [1.0, -1.0], [1.0, 1.0], [-1.0, 1.0]], device=pts.device)
    corners = centre + CORNER_REACH * eye * signs
    return torch.cat([jaw, forehead, corners], dim=1)


@functools.lru_cache(maxsize=1)
def mesh_triangles() -> np.ndarray:
    """``(T, 3)`` triangles over the 68 landmarks + :data:`NUM_ANCHORS` anchors (indices 68...).

    Delaunay triangulation of the canonical template with its inner lips parted by 0.03 eye distances
    (so the mouth gets interior triangles even though the template's lips are closed) and its anchors.
    """
    from scipy.spatial import Delaunay

    tpl = canonical_template().astype(np.float64)
    for up, lo in INNER_LIP_PAIRS:
        mid = (tpl[up, 1] + tpl[lo, 1]) / 2
        tpl[up, 1], tpl[lo, 1] = min(tpl[up, 1], mid - 0.015), max(tpl[lo, 1], mid + 0.015)
    anchors = mesh_anchors(torch.from_numpy(tpl).float()[None])[0].double().numpy()
    tri = Delaunay(np.concatenate([tpl, anchors])).simplices
    return np.ascontiguousarray(tri, dtype=np.int64)


@functools.lru_cache(maxsize=1)
def corner_neighbours() -> np.ndarray:
    """``(T, K)``: for every triangle of :func:`mesh_triangles` the triangles that share a corner with it
    (itself included; rows padded by repeating it). A pixel OpenCV marks on a triangle's outline whose
    centre lies just outside lies inside one of them."""
    tri = mesh_triangles()
    fans = [sorted(set(np.nonzero(np.isin(tri, t).any(axis=1))[0].tolist())) for t in tri]
    K = max(len(f) for f in fans)
    return np.array([f + [i] * (K - len(f)) for i, f in enumerate(fans)], dtype=np.int64)


def mesh_prior_flow(neutral_px: Tensor, driven_px: Tensor, image_size: int, size: int) -> Tensor:
    """Dense *backward* flow ``(B, 2, size, size)`` of the piecewise-affine warp G' -> G (see module doc).

    An output pixel ``p`` (a pixel centre of the ``size`` x ``size`` grid; landmarks are mapped onto it as
    the heatmaps are) inside driven triangle ``k`` samples the identity image at ``A_k p``, the affine map
    that takes triangle ``k`` of G' onto the same triangle of G. Degenerate driven triangles (a closed eye,
    closed lips) cover no pixel; where triangles fold over each other the later one wins (as in the warp
    baseline); triangles made only of anchors do not move and are not drawn (their pixels keep flow 0).
    Landmarks are ``(B, 68, 2)`` crop pixels of the ``image_size`` crop (``neutral_px`` may have batch 1).
    Returns grid_sample's normalised units (``align_corners=False``; channel 0 = x, 1 = y) on the
    landmarks' device, exactly zero when G' = G. Rasterised on the CPU with OpenCV (``fillConvexPoly``,
    one call per moving triangle: ~150 per face, a few milliseconds for a batch of 8 at 128 x 128).
    """
    import cv2

    if neutral_px.shape != driven_px.shape:
        neutral_px = neutral_px.expand_as(driven_px)
    scale = size / float(image_size)
    neutral = (neutral_px.detach().float().cpu() + 0.5) * scale - 0.5  # grid pixel coordinates
    driven = (driven_px.detach().float().cpu() + 0.5) * scale - 0.5
    anchors = mesh_anchors(neutral)
    src = torch.cat([neutral, anchors], dim=1).double().numpy()  # (B, N, 2)
    dst = torch.cat([driven, anchors], dim=1).double().numpy()
    B = src.shape[0]
    tri = mesh_triangles()
    moving = (tri < 68).any(axis=1)  # triangles made only of anchors keep flow 0: not drawn
    T = len(tri)
    d, s = dst[:, tri], src[:, tri]  # (B, T, 3, 2)
    D = np.concatenate([d, np.ones((B, T, 3, 1))], axis=-1)  # rows [x, y, 1] of the driven corners
    det = np.linalg.det(D)  # twice the signed area, grid pixels²
    ok = np.abs(det) > 1e-6  # a fully closed eye or mouth: no area, nothing to draw
    Dinv = np.zeros((B, T, 3, 3))
    Dinv[ok] = np.linalg.inv(D[ok])  # barycentric coordinates of p: [x, y, 1] @ Dinv
    # how much each triangle's driven -> neutral affine map stretches (Frobenius norm of its linear part)
    stretch = np.linalg.norm(np.einsum("btij,btjc->btic", Dinv[..., :2, :], s), axis=(2, 3))
    fixed = np.round(d * 16).astype(np.int32)  # 4 fractional bits for fillConvexPoly
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float64)
    grid = np.stack([xs, ys, np.ones_like(xs)], axis=-1)  # (H, W, 3)
    flow = np.zeros((B, size, size, 2))
    index = np.empty((size, size), np.int32)
    tol = -1e-6
    fan = corner_neighbours()
    for b in range(B):
        index.fill(0)  # 0: no moving triangle -> identity
        for k in np.nonzero(ok[b] & moving)[0]:
            cv2.fillConvexPoly(index, np.ascontiguousarray(fixed[b, k]), int(k) + 1, lineType=cv2.LINE_8,
                               shift=4)
        hit = index > 0
        p = grid[hit]  # (n, 3)
        k = index[hit] - 1
        M = Dinv[b, k]  # (n, 3, 3)
        bary = p[:, 0:1] * M[:, 0] + p[:, 1:2] * M[:, 1] + M[:, 2]
        # OpenCV also marks the pixels its edges pass through, whose centres may lie just outside the
        # triangle: look those up exactly among the triangles around it (anchor-only ones: identity map)
        out = (bary < tol).any(axis=1)
        if out.any():
            rows = np.nonzero(out)[0]
            cand = fan[k[rows]]  # (m, K): the triangles sharing a corner with the rasterised one
            M = Dinv[b, cand]  # (m, K, 3, 3)
            q = p[rows][:, None]  # (m, 1, 3)
            bc = q[..., 0:1] * M[:, :, 0] + q[..., 1:2] * M[:, :, 1] + M[:, :, 2]  # (m, K, 3)
            inside = (np.minimum(np.minimum(bc[..., 0], bc[..., 1]), bc[..., 2]) >= tol) & ok[b, cand]
            first = inside.argmax(axis=1)
            found = inside[np.arange(len(rows)), first]
            k[rows[found]] = cand[found, first[found]]
            bary[rows[found]] = bc[found, first[found]]
            # still outside (near a corner): extend the rasterised triangle's affine map a fraction of a
            # pixel, unless that map stretches (a collapsing eye or mouth): then stay inside the triangle
            lost = rows[~found]
            steep = stretch[b, k[lost]] > 4.0
            if steep.any():
                lost = lost[steep]
                bary[lost] = bary[lost].clip(0.0, 1.0)
                bary[lost] /= bary[lost].sum(axis=1, keepdims=True).clip(1e-9)
        sk = s[b, k]  # (n, 3, 2)
        flow[b][hit] = (bary[:, 0:1] * sk[:, 0] + bary[:, 1:2] * sk[:, 1] + bary[:, 2:3] * sk[:, 2]
                        - p[:, :2])
    out = torch.from_numpy(flow * (2.0 / size)).float().permute(0, 3, 1, 2).contiguous()
    return out.to(driven_px.device)
