"""Frame rendering: piecewise-affine (Delaunay) warping of a photo plus a drawn mouth interior.

:class:`FaceWarper` triangulates the subject's neutral landmarks together with fixed anchor points — a
ring around the face and points along the image border — so the warp covers the whole frame while
everything outside the ring (hair, shoulders, background) stays still. For every frame it maps each
destination pixel through the affine map of the triangle containing it back into the neutral photo
(``cv2.remap``, bilinear). Where the lips part, :func:`draw_mouth_interior` paints the inside of the
smoothed inner-lip contour: teeth anchored to the head (upper incisors fixed, lower ones travelling with
the jaw), the dark oral cavity and the tongue between them, anti-aliased by supersampling and tinted to
the scene's lighting.
"""
from __future__ import annotations

import numpy as np

from emotalk.models.face_graph import INNER_LIP_PAIRS, eye_distance


def anchor_points(neutral: np.ndarray, size: tuple[int, int], ring_scale: float = 1.45,
                  border_step: int = 32) -> np.ndarray:
    """Fixed anchors for a face with landmarks ``neutral`` (68, 2) in a ``(width, height)`` frame: a ring
    of points around the face (jaw line and brows pushed out from the face centre, the forehead above the
    brows) and points along the image border."""
    w, h = size
    pts = np.asarray(neutral, np.float64)
    centre = pts[[27, 28, 29, 30, 33]].mean(0)
    eye_dist = float(eye_distance(pts))
    ring = [centre + ring_scale * (pts[i] - centre) for i in range(0, 17, 2)]
    for i in (17, 19, 21, 22, 24, 26):
        ring.append(pts[i] + np.array([0.0, -0.55 * eye_dist]) + 0.25 * (pts[i] - centre))
    ring = np.array(ring)
    inside = (ring[:, 0] > 2) & (ring[:, 0] < w - 3) & (ring[:, 1] > 2) & (ring[:, 1] < h - 3)
    ring = ring[inside]
    xs = np.unique(np.concatenate([np.arange(0, w, border_step), [w - 1]])).astype(np.float64)
    ys = np.unique(np.concatenate([np.arange(0, h, border_step), [h - 1]])).astype(np.float64)
    border = np.concatenate([
        np.stack([xs, np.zeros_like(xs)], 1), np.stack([xs, np.full_like(xs, h - 1)], 1),
        np.stack([np.zeros_like(ys[1:-1]), ys[1:-1]], 1), np.stack([np.full_like(ys[1:-1], w - 1), ys[1:-1]], 1)])
    return np.concatenate([ring, border])


def _open_lips(points: np.ndarray, min_gap: float) -> np.ndarray:
    """Copy with the inner-lip pairs at least ``min_gap`` apart (keeps the triangulation of the mouth)."""
    out = np.array(points, np.float64, copy=True)
    for up, lo in INNER_LIP_PAIRS:
        gap = out[lo, 1] - out[up, 1]
        if gap < min_gap:
            mid = (out[lo, 1] + out[up, 1]) / 2
            out[up, 1], out[lo, 1] = mid - min_gap / 2, mid + min_gap / 2
    return out


class FaceWarper:
    """Piecewise-affine warp of ``image`` from its landmarks ``neutral`` to new landmark positions."""

    def __init__(self, image: np.ndarray, neutral: np.ndarray, anchors: np.ndarray | None = None):
        from scipy.spatial import Delaunay

        self.image = np.ascontiguousarray(image)
        self.h, self.w = image.shape[:2]
        self.neutral = np.asarray(neutral, np.float64)
        self.anchors = anchor_points(self.neutral, (self.w, self.h)) if anchors is None else anchors
        self.src = np.concatenate([self.neutral, self.anchors])
        eye_dist = float(eye_distance(self.neutral))
        tri_pts = np.concatenate([_open_lips(self.neutral, 0.03 * eye_dist), self.anchors])
        self.triangles = np.asarray(Delaunay(tri_pts).simplices, dtype=np.int64)
        ys, xs = np.mgrid[0:self.h, 0:self.w]
        self._xs = xs.astype(np.float32)
        self._ys = ys.astype(np.float32)
        # triangles with a landmark corner move; those spanned by anchors alone never do (their affine map is
        # the identity), so only the box around the moving ones needs warping in each frame
        self._moving = (self.triangles < len(self.neutral)).any(axis=1)

    def moving_box(self, points: np.ndarray, margin: int = 2) -> tuple[int, int, int, int]:
        """``(x0, y0, x1, y1)``: the pixels the moving triangles cover for landmarks ``points`` (and at rest),
        plus ``margin``; outside it the warp is the identity."""
        dst = np.concatenate([np.asarray(points, np.float64), self.anchors])
        corners = np.concatenate([dst[self.triangles[self._moving]].reshape(-1, 2),
                                  self.src[self.triangles[self._moving]].reshape(-1, 2)])
        x0 = int(max(np.floor(corners[:, 0].min()) - margin, 0))
        y0 = int(max(np.floor(corners[:, 1].min()) - margin, 0))
        x1 = int(min(np.ceil(corners[:, 0].max()) + margin + 1, self.w))
        y1 = int(min(np.ceil(corners[:, 1].max()) + margin + 1, self.h))
        return x0, y0, max(x1, x0 + 1), max(y1, y0 + 1)

    def maps(self, points: np.ndarray, box: tuple[int, int, int, int] | None = None
             ) -> tuple[np.ndarray, np.ndarray]:
        """Backward maps (x, y) float32: destination pixel -> source pixel, for 68 new points; (H, W) for the
        whole frame, or for the pixels of ``box`` = ``(x0, y0, x1, y1)`` only (values stay in frame pixels)."""
        import cv2

        x0, y0, x1, y1 = box if box is not None else (0, 0, self.w, self.h)
        dst = np.concatenate([np.asarray(points, np.float64), self.anchors])
        tri = self.triangles
        d = dst[tri]  # (T, 3, 2)
        s = self.src[tri]
        # affine dst -> src per triangle: [sx, sy] = M @ [dx, dy, 1]
        D = np.concatenate([d, np.ones((len(tri), 3, 1))], axis=2)  # (T, 3, 3)
        det = np.linalg.det(D)
        ok = np.abs(det) > 1e-6
        M = np.zeros((len(tri), 2, 3))
        M[ok] = np.transpose(np.linalg.solve(D[ok], s[ok]), (0, 2, 1))
        # 0 = no triangle (identity); 8-bit when the triangles fit, for cv2.LUT below
        index = np.zeros((y1 - y0, x1 - x0), dtype=np.uint8 if len(tri) < 256 else np.int32)
        fixed = ((d - [x0, y0]) * 16).round().astype(np.int32)  # the same rounding as in frame pixels
        keep = np.flatnonzero(ok)  # python ints and a list of polygons: numpy scalars cost more than the fills
        for k, poly in zip((keep + 1).tolist(), list(fixed[keep])):
            cv2.fillConvexPoly(index, poly, k, lineType=cv2.LINE_8, shift=4)
        Mf = np.concatenate([np.array([[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]]), M]).astype(np.float32)
        xs, ys = self._xs[y0:y1, x0:x1], self._ys[y0:y1, x0:x1]
        if index.dtype == np.uint8:  # the same values as the indexing below, ~3x faster (mead-mini renders 30k frames)
            table = np.zeros((6, 256), np.float32)
            table[:, :len(Mf)] = Mf.reshape(len(Mf), 6).T
            c = [cv2.LUT(index, table[j]) for j in range(6)]
        else:
            c = [Mf[:, j // 3, j % 3][index] for j in range(6)]
        mx = c[0] * xs + c[1] * ys + c[2]
        my = c[3] * xs + c[4] * ys + c[5]
        return mx, my

    def warp(self, points: np.ndarray, image: np.ndarray | None = None) -> np.ndarray:
        """The photo (or ``image``, same size) warped to ``points``: only the box the moving triangles reach
        is remapped (about half of a 256x256 frame); the rest is the source pixels, exactly what the identity
        map of the anchor-only triangles gives."""
        import cv2

        src = self.image if image is None else image
        box = self.moving_box(points)
        x0, y0, x1, y1 = box
        mx, my = self.maps(points, box)
        out = np.array(src, copy=True)
        out[y0:y1, x0:x1] = cv2.remap(src, mx, my, interpolation=cv2.INTER_LINEAR,
                                      borderMode=cv2.BORDER_REPLICATE)
        return out


# ----------------------------------------------------------------------------------------------------
# mouth interior
# ----------------------------------------------------------------------------------------------------
CAVITY_RGB = np.array([62.0, 22.0, 26.0])
TEETH_RGB = np.array([232.0, 226.0, 210.0])
TONGUE_RGB = np.array([160.0, 72.0, 78.0])


def _catmull_rom(chain: np.ndarray, per_segment: int = 8) -> np.ndarray:
    """Open uniform Catmull–Rom curve through ``chain`` (K, 2); ends are kept (sharp mouth corners)."""
    p = np.concatenate([chain[:1], chain, chain[-1:]])
    t = (np.arange(per_segment) / per_segment)[:, None]
    out = []
    for i in range(1, len(p) - 2):
        p0, p1, p2, p3 = p[i - 1], p[i], p[i + 1], p[i + 2]
        out.append(0.5 * ((2 * p1) + (-p0 + p2) * t + (2 * p0 - 5 * p1 + 4 * p2 - p3) * t ** 2
                          + (-p0 + 3 * p1 - 3 * p2 + p3) * t ** 3))
    out.append(chain[-1:])
    return np.concatenate(out)


def _curve(points: np.ndarray, xs: np.ndarray) -> np.ndarray:
    order = np.argsort(points[:, 0], kind="stable")
    return np.interp(xs, points[order, 0], points[order, 1])


def mouth_contour(landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Smooth upper and lower inner-lip curves (each (K, 2), corner 60 to corner 64)."""
    lm = np.asarray(landmarks, np.float64)
    upper = _catmull_rom(lm[[60, 61, 62, 63, 64]])
    lower = _catmull_rom(lm[[60, 67, 66, 65, 64]])
    # the lips never cross: the lower curve stays at or below the upper one
    lower[:, 1] = np.maximum(lower[:, 1], _curve(upper, lower[:, 0]))
    return upper, lower


def draw_mouth_interior(frame: np.ndarray, landmarks: np.ndarray, unit: float, teeth_centre: np.ndarray,
                        jaw: float = 0.0, supersample: int = 4, min_gap: float = 0.4) -> np.ndarray:
    """Paint what shows between the parted lips of ``landmarks`` (68, 2, pixels) into ``frame`` (RGB,
    modified in place and returned).

    The teeth are anchored to the head, not to the lips: the upper incisal edge runs through
    ``teeth_centre`` (x, y pixels; where the lips meet at rest) with a slight smile arc, the lower
    incisors travel down with the jaw by ``jaw`` pixels (minus a small overbite), and the oral cavity and
    tongue show between them. So a retracted upper lip reveals more upper teeth, a dropped jaw opens a
    dark gap, and a lowered lower lip (AU16) bares the lower teeth. ``unit`` is the outer-eye-corner
    distance in pixels.
    """
    import cv2

    lm = np.asarray(landmarks, np.float64)
    gaps = np.array([lm[lo, 1] - lm[up, 1] for up, lo in INNER_LIP_PAIRS])
    if gaps.max() < min_gap:
        return frame
    up_c, lo_c = mouth_contour(lm)
    poly = np.concatenate([up_c, lo_c[::-1][1:-1]])
    h, w = frame.shape[:2]
    x0 = int(max(np.floor(poly[:, 0].min()) - 2, 0))
    x1 = int(min(np.ceil(poly[:, 0].max()) + 3, w))
    y0 = int(max(np.floor(poly[:, 1].min()) - 2, 0))
    y1 = int(min(np.ceil(poly[:, 1].max()) + 3, h))
    if x1 - x0 < 2 or y1 - y0 < 2:
        return frame
    s = supersample
    H, W = (y1 - y0) * s, (x1 - x0) * s
    # supersampled pixel centres in frame coordinates; the per-pixel shading runs in float32 (half the memory
    # traffic of float64 on these (H*s, W*s, 3) arrays; the result is rounded to uint8 anyway)
    xs = (x0 + (np.arange(W) + 0.5) / s - 0.5).astype(np.float32)
    ys = (y0 + (np.arange(H) + 0.5) / s - 0.5).astype(np.float32)
    mask = np.zeros((H, W), np.uint8)
    pts = np.round((poly - [x0 - 0.5 + 0.5 / s, y0 - 0.5 + 0.5 / s]) * s * 16).astype(np.int32)
    cv2.fillPoly(mask, [pts], 255, lineType=cv2.LINE_AA, shift=4)
    upper_lip = _curve(up_c, xs).astype(np.float32)  # (W,)
    lower_lip = _curve(lo_c, xs).astype(np.float32)
    cx, cy = float(teeth_centre[0]), float(teeth_centre[1])
    unit = float(unit)
    cavity_rgb, teeth_rgb, tongue_rgb = (c.astype(np.float32) for c in (CAVITY_RGB, TEETH_RGB, TONGUE_RGB))
    du = (xs - cx) / unit  # horizontal offset from the midline, canonical units
    Y = ys[:, None]
    # incisal edges: a smile arc (higher towards the canines), lower teeth follow the jaw
    upper_edge = cy + 0.004 * unit - 0.45 * du ** 2 * unit
    overbite = 0.015 * unit
    lower_edge = upper_edge + max(jaw - overbite, 0.0) + 0.6 * du ** 2 * unit * min(jaw / (0.1 * unit), 1.0)
    lower_root = lower_edge + 0.11 * unit
    # cavity colour: darkest in the depth, lighter towards the lips and the corners
    gap = np.maximum(lower_lip - upper_lip, np.float32(1e-3))
    depth = np.clip((Y - upper_lip[None]) / gap[None], 0, 1)
    shade = 0.75 + 0.25 * np.abs(2 * depth - 1) + 0.15 * np.clip(np.abs(du) / 0.3, 0, 1)[None]
    color = cavity_rgb[None, None] * shade[..., None]
    # tongue behind the lower incisors once the jaw is open
    tongue_h = np.clip(0.45 * (lower_edge - upper_edge), 0, 0.06 * unit) * np.clip(1 - (du / 0.2) ** 2, 0, 1)
    tongue = (Y > (lower_edge - tongue_h)[None]) & (Y <= lower_edge[None])
    tcol = tongue_rgb * (0.8 + 0.2 * np.clip(1 - np.abs(du) / 0.2, 0, 1))[:, None]
    color = np.where(tongue[..., None], np.broadcast_to(tcol[None], color.shape), color)
    # teeth: canine to canine bright, premolars towards the corners in shadow; faint gaps between teeth
    span = np.clip(1.0 - np.clip((np.abs(du) - 0.17) / 0.2, 0, 1), 0, 1)
    tooth_w = 0.085 * unit
    phase = (xs - cx) / tooth_w
    sep = 1.0 - 0.12 * np.exp(-((phase - np.round(phase)) * tooth_w) ** 2 / 0.3)
    tshade = (0.42 + 0.58 * span) * sep  # (W,)
    upper_teeth = Y <= upper_edge[None]
    lower_teeth = (Y >= lower_edge[None]) & (Y <= lower_root[None])
    vert_up = 1.0 - 0.25 * np.clip((upper_edge[None] - Y) / (0.1 * unit), 0, 1)  # shadow under the lip
    vert_lo = 0.9 - 0.25 * np.clip((Y - lower_edge[None]) / (0.1 * unit), 0, 1)
    tcolor_up = teeth_rgb[None, None] * (tshade[None] * vert_up)[..., None]
    tcolor_lo = teeth_rgb[None, None] * (tshade[None] * vert_lo)[..., None]
    color = np.where(upper_teeth[..., None], tcolor_up, color)
    color = np.where(lower_teeth[..., None], tcolor_lo, color)
    # a thin shadow right inside the lips
    rim = np.minimum(np.abs(Y - upper_lip[None]), np.abs(lower_lip[None] - Y))
    color *= (1.0 - 0.3 * np.exp(-rim / (0.008 * unit)))[..., None]
    # match the scene brightness: skin between nose and upper lip
    ref = lm[[31, 32, 33, 34, 35, 50, 51, 52]]
    rx0, ry0 = np.floor(ref.min(0)).astype(int)
    rx1, ry1 = np.ceil(ref.max(0)).astype(int) + 1
    patch = frame[max(ry0, 0):max(ry1, 1), max(rx0, 0):max(rx1, 1)]
    if patch.size:
        skin = patch.reshape(-1, 3).astype(np.float64).mean(0)
        lum = float(skin.mean())
        tint = (skin / max(lum, 1.0)) ** 0.3  # follow the scene's white balance a little
    else:
        lum, tint = 150.0, np.ones(3)
    color = color * np.float32(np.clip(lum / 165.0, 0.6, 1.15) ** 0.6) * tint.astype(np.float32)[None, None]
    # downsample (box filter) and composite
    color_ds = color.reshape(y1 - y0, s, x1 - x0, s, 3).mean(axis=(1, 3))
    alpha = mask.astype(np.float64).reshape(y1 - y0, s, x1 - x0, s).mean(axis=(1, 3)) / 255.0
    roi = frame[y0:y1, x0:x1].astype(np.float64)
    frame[y0:y1, x0:x1] = np.clip(roi * (1 - alpha[..., None]) + color_ds * alpha[..., None], 0, 255
                                  ).round().astype(np.uint8)
    return frame


def teeth_centre(neutral: np.ndarray) -> np.ndarray:
    """Where the incisal edges meet at rest: the middle of the inner lips of the neutral face."""
    lm = np.asarray(neutral, np.float64)
    return np.array([lm[[62, 66], 0].mean(), lm[[62, 66], 1].mean()])


def render_frame(warper: FaceWarper, landmarks: np.ndarray, unit: float, jaw: float = 0.0,
                 supersample: int = 4) -> np.ndarray:
    """One RGB frame: the warped photo with the mouth interior drawn for ``landmarks`` (68, 2, px);
    ``jaw`` is the jaw opening in pixels (lower-incisor travel); ``supersample``: the mouth's anti-aliasing
    (mead-mini renders with 2: ~2.4x cheaper, 50 dB from 4)."""
    frame = warper.warp(landmarks)
    return draw_mouth_interior(frame, landmarks, unit, teeth_centre(warper.neutral), jaw, supersample=supersample)
