"""The mesh prior flow's fast arrangement (cached neutral set-up, column gathers, flat edge look-ups) gives
exactly the numbers of the plain per-pixel algorithm it replaced (written out below as the reference)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from emotalk.data.face.alignment import crop_template
from emotalk.data.face.blinks import apply_blink
from emotalk.models import mesh_flow
from emotalk.models.mesh_flow import corner_neighbours, mesh_anchors, mesh_prior_flow, mesh_triangles


def reference_flow(neutral_px, driven_px, image_size: int, size: int) -> torch.Tensor:
    """The straightforward version: per-pixel 3 x 3 gathers, every corner neighbour tested per edge pixel."""
    import cv2

    neutral_px = neutral_px.expand_as(driven_px)
    scale = size / float(image_size)
    neutral = (neutral_px.float() + 0.5) * scale - 0.5
    driven = (driven_px.float() + 0.5) * scale - 0.5
    anchors = mesh_anchors(neutral)
    src = torch.cat([neutral, anchors], 1).double().numpy()
    dst = torch.cat([driven, anchors], 1).double().numpy()
    B, tri, fan = src.shape[0], mesh_triangles(), corner_neighbours()
    T, moving = len(tri), (tri < 68).any(axis=1)
    d, s = dst[:, tri], src[:, tri]
    D = np.concatenate([d, np.ones((B, T, 3, 1))], -1)
    ok = np.abs(np.linalg.det(D)) > 1e-6
    Dinv = np.zeros((B, T, 3, 3))
    Dinv[ok] = np.linalg.inv(D[ok])
    stretch = np.linalg.norm(np.einsum("btij,btjc->btic", Dinv[..., :2, :], s), axis=(2, 3))
    fixed = np.round(d * 16).astype(np.int32)
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float64)
    grid = np.stack([xs, ys, np.ones_like(xs)], -1)
    flow = np.zeros((B, size, size, 2))
    for b in range(B):
        index = np.zeros((size, size), np.int32)
        for k in np.nonzero(ok[b] & moving)[0]:
            cv2.fillConvexPoly(index, np.ascontiguousarray(fixed[b, k]), int(k) + 1, cv2.LINE_8, 4)
        hit = index > 0
        p, k = grid[hit], index[hit] - 1
        M = Dinv[b, k]
        bary = p[:, 0:1] * M[:, 0] + p[:, 1:2] * M[:, 1] + M[:, 2]
        for i in np.nonzero((bary < -1e-6).any(axis=1))[0]:
            for c in fan[k[i]]:  # the first corner neighbour whose triangle holds the pixel centre
                bc = p[i, 0] * Dinv[b, c, 0] + p[i, 1] * Dinv[b, c, 1] + Dinv[b, c, 2]
                if ok[b, c] and bc.min() >= -1e-6:
                    k[i], bary[i] = c, bc
                    break
            else:
                if stretch[b, k[i]] > 4.0:
                    bary[i] = bary[i].clip(0.0, 1.0)
                    bary[i] /= max(bary[i].sum(), 1e-9)
        sk = s[b, k]
        flow[b][hit] = bary[:, 0:1] * sk[:, 0] + bary[:, 1:2] * sk[:, 1] + bary[:, 2:3] * sk[:, 2] - p[:, :2]
    return torch.from_numpy(flow * (2.0 / size)).float().permute(0, 3, 1, 2)


@pytest.fixture(scope="module")
def faces():
    """A neutral face in a 128 crop and driven faces: mouth open + jitter, one strongly jittered (folded
    triangles: pixels in no triangle, some of them next to a stretching one, the clamped path), a shut
    eye (collapsed triangles), a half blink."""
    rng = np.random.default_rng(0)
    neutral = torch.from_numpy(crop_template(128).astype(np.float32))[None]
    moved = neutral.numpy() + rng.normal(0, 0.8, (3, 68, 2)).astype(np.float32)
    moved[:, 57:68, 1] += 3.0
    moved[2] += rng.normal(0, 2.5, (68, 2)).astype(np.float32)  # folds: pixels outside every triangle
    blinks = apply_blink(np.repeat(neutral.numpy(), 2, 0), np.array([1.0, 0.5]))
    driven = torch.from_numpy(np.concatenate([moved, blinks]).astype(np.float32))
    return neutral, driven


@pytest.mark.parametrize("size", [128, 32])
def test_equals_the_plain_algorithm(faces, size):
    neutral, driven = faces
    mesh_flow._NEUTRAL_CACHE.clear()
    ref = reference_flow(neutral, driven, 128, size)
    first = mesh_prior_flow(neutral, driven, 128, size)  # fills the neutral cache
    again = mesh_prior_flow(neutral.expand_as(driven), driven, 128, size)  # hits it (rows all equal)
    assert len(mesh_flow._NEUTRAL_CACHE) == 1
    assert torch.equal(first, ref) and torch.equal(again, ref)
    assert first.abs().max() > 0.02  # something moved (a few pixels)


def test_distinct_neutrals_per_sample(faces):
    """A batch of different faces (training) takes the uncached path and still equals the reference."""
    neutral, driven = faces
    neutrals = neutral + torch.linspace(0, 2, len(driven))[:, None, None]
    assert torch.equal(mesh_prior_flow(neutrals, driven, 128, 64), reference_flow(neutrals, driven, 128, 64))
