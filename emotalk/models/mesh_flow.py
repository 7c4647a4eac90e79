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

Cost: OpenCV rasterises the ~150 moving triangles per face on the CPU: about 1-2 ms per face at 128 x 128.
No parameters, no gradient (landmarks are inputs).
"""
from __future__ import annotations

import functools
import threading

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


@functools.lru_cache(maxsize=4)
def _pixel_centres(size: int) -> tuple[np.ndarray, np.ndarray]:
    """``(x, y)`` float64 of every pixel of a ``size`` x ``size`` grid, flattened in C order."""
    ys, xs = np.divmod(np.arange(size * size), size)
    return xs.astype(np.float64), ys.astype(np.float64)


@functools.lru_cache(maxsize=1)
def _mesh_tables() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(moving, fan, starts, lengths)``: which triangles move (not anchor-only), and
    :func:`corner_neighbours` without each triangle itself (it is looked up first anyway) and without the
    padding, as one flat list: triangle ``k``'s are ``fan[starts[k]:starts[k] + lengths[k]]``, in
    increasing triangle order (the order decides which of two overlapping triangles a pixel takes)."""
    tri = mesh_triangles()
    rows = [[int(t) for t in sorted(set(r.tolist())) if t != k] for k, r in enumerate(corner_neighbours())]
    lengths = np.array([len(r) for r in rows], np.int64)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    return (tri < 68).any(axis=1), np.array([t for r in rows for t in r], np.int64), starts, lengths


#: neutral face -> its half of the mesh set-up (grid coordinates and the source triangles); a stream or a
#: video renders hundreds of frames of one photo, so this is computed once per photo, not per frame
_NEUTRAL_CACHE: dict[tuple, tuple[Tensor, np.ndarray, np.ndarray]] = {}
_NEUTRAL_CACHE_SIZE = 8
_NEUTRAL_LOCK = threading.Lock()  # the app renders for several users at once


def _neutral_setup(neutral_px: Tensor, scale: float) -> tuple[Tensor, np.ndarray, np.ndarray]:
    """``(anchors (B, A, 2) float32 grid pixels, src (B, N, 2) float64, src triangles (B, T, 3, 2))``."""
    neutral = (neutral_px + 0.5) * scale - 0.5  # grid pixel coordinates
    anchors = mesh_anchors(neutral)
    src = torch.cat([neutral, anchors], dim=1).double().numpy()  # (B, N, 2)
    return anchors, src, src[:, mesh_triangles()]


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
    one call per moving triangle: ~150 per face, about 1 ms per face at 128 x 128).

    Speed (it runs in every G_T forward, once per streamed frame): what depends only on the neutral face
    (anchors, source triangles) is cached per neutral face, the pixel grid per size; per pixel only the
    rasterised triangle's row of the barycentric matrices is gathered, and the pixels that OpenCV marks on
    a triangle's outline are looked up among the neighbour triangles as flat (pixel, candidate) pairs. The
    arithmetic is the same, operation for operation, as the straightforward per-pixel version, so the
    result does not depend on these arrangements.
    """
    import cv2

    if neutral_px.shape != driven_px.shape:
        neutral_px = neutral_px.expand_as(driven_px)
    B = driven_px.shape[0]
    scale = size / float(image_size)
    neutral_cpu = neutral_px.detach().float().cpu()
    driven = (driven_px.detach().float().cpu() + 0.5) * scale - 0.5  # grid pixel coordinates
    one = B == 1 or (B > 1 and bool((neutral_cpu == neutral_cpu[:1]).all()))  # one face for the batch
    if one:
        key = (neutral_cpu[0].numpy().tobytes(), float(scale))
        with _NEUTRAL_LOCK:
            hit = _NEUTRAL_CACHE.get(key)
        if hit is None:
            hit = _neutral_setup(neutral_cpu[:1], scale)
            with _NEUTRAL_LOCK:
                if len(_NEUTRAL_CACHE) >= _NEUTRAL_CACHE_SIZE:
                    _NEUTRAL_CACHE.pop(next(iter(_NEUTRAL_CACHE)))
                _NEUTRAL_CACHE[key] = hit
        anchors, _, s1 = hit
        anchors = anchors.expand(B, -1, -1)
        s = np.broadcast_to(s1, (B,) + s1.shape[1:])
    else:
        anchors, _, s = _neutral_setup(neutral_cpu, scale)
    dst = torch.cat([driven, anchors], dim=1).double().numpy()
    tri = mesh_triangles()
    moving, fan, fan_start, fan_len = _mesh_tables()
    T = len(tri)
    d = dst[:, tri]  # (B, T, 3, 2)
    D = np.concatenate([d, np.ones((B, T, 3, 1))], axis=-1)  # rows [x, y, 1] of the driven corners
    det = np.linalg.det(D)  # twice the signed area, grid pixels²
    ok = np.abs(det) > 1e-6  # a fully closed eye or mouth: no area, nothing to draw
    Dinv = np.zeros((B, T, 3, 3))
    Dinv[ok] = np.linalg.inv(D[ok])  # barycentric coordinates of p: [x, y, 1] @ Dinv
    fixed = np.ascontiguousarray(np.round(d * 16).astype(np.int32))  # 4 fractional bits for fillConvexPoly
    # per-triangle tables as separate contiguous columns: a gather of one column per pixel is much
    # cheaper than a gather of (3, 3) blocks followed by reductions over axes of length 3
    rows_x = np.ascontiguousarray(Dinv[:, :, 0, :].transpose(0, 2, 1))  # (B, 3, T): bary_c = x * rows_x[c]
    rows_y = np.ascontiguousarray(Dinv[:, :, 1, :].transpose(0, 2, 1))  # + y * rows_y[c]
    rows_1 = np.ascontiguousarray(Dinv[:, :, 2, :].transpose(0, 2, 1))  # + rows_1[c]
    corners = np.ascontiguousarray(s.transpose(0, 2, 3, 1))  # (B, 3, 2, T): source corner c, coordinate
    px_all, py_all = _pixel_centres(size)
    flow = np.zeros((B, 2, size * size), np.float32)
    index = np.empty((size, size), np.int32)
    flat_index = index.reshape(-1)
    tol = -1e-6
    unit = 2.0 / size
    for b in range(B):
        index.fill(0)  # 0: no moving triangle -> identity
        poly = fixed[b]
        for k in np.nonzero(ok[b] & moving)[0].tolist():
            cv2.fillConvexPoly(index, poly[k], k + 1, lineType=cv2.LINE_8, shift=4)
        pix = np.flatnonzero(flat_index)
        k = flat_index[pix] - 1
        px, py = px_all[pix], py_all[pix]
        bary = [px * rows_x[b, c][k] + py * rows_y[b, c][k] + rows_1[b, c][k] for c in range(3)]
        # OpenCV also marks the pixels its edges pass through, whose centres may lie just outside the
        # triangle: look those up exactly among the triangles around it (anchor-only ones: identity map)
        rows = np.flatnonzero(np.minimum(np.minimum(bary[0], bary[1]), bary[2]) < tol)
        if len(rows):
            kr = k[rows]
            n_c = fan_len[kr]  # candidates per pixel, as flat (pixel, candidate) pairs in fan order
            owner = np.repeat(np.arange(len(rows)), n_c)
            cand = fan[np.repeat(fan_start[kr] - (np.cumsum(n_c) - n_c), n_c) + np.arange(int(n_c.sum()))]
            qx, qy = px[rows][owner], py[rows][owner]
            bc = [qx * rows_x[b, c][cand] + qy * rows_y[b, c][cand] + rows_1[b, c][cand] for c in range(3)]
            inside = np.flatnonzero((np.minimum(np.minimum(bc[0], bc[1]), bc[2]) >= tol) & ok[b][cand])
            if len(inside):  # the first containing candidate of each pixel (pairs are in pixel order)
                firsts = inside[np.concatenate([[True], owner[inside[1:]] != owner[inside[:-1]]])]
                got = rows[owner[firsts]]
                k[got] = cand[firsts]
                for c in range(3):
                    bary[c][got] = bc[c][firsts]
            found = np.zeros(len(rows), bool)
            found[owner[inside]] = True
            # still outside (near a corner): extend the rasterised triangle's affine map a fraction of a
            # pixel, unless that map stretches (a collapsing eye or mouth): then stay inside the triangle
            lost = rows[~found]
            if len(lost):
                # how much the driven -> neutral affine map stretches (Frobenius norm of its linear part)
                kl = k[lost]
                stretch = np.linalg.norm(np.einsum("tij,tjc->tic", Dinv[b, kl, :2, :], s[b, kl]), axis=(1, 2))
                lost = lost[stretch > 4.0]
                if len(lost):
                    bl = np.stack([bary[c][lost] for c in range(3)], axis=1).clip(0.0, 1.0)
                    bl /= bl.sum(axis=1, keepdims=True).clip(1e-9)
                    for c in range(3):
                        bary[c][lost] = bl[:, c]
        src = corners[b]
        for j, p in enumerate((px, py)):  # source point - output pixel, in grid_sample's units
            f = bary[0] * src[0, j][k] + bary[1] * src[1, j][k] + bary[2] * src[2, j][k] - p
            flow[b, j, pix] = f * unit
    return torch.from_numpy(flow).reshape(B, 2, size, size).to(driven_px.device)
