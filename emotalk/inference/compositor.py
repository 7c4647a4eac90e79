"""Paste-back (paper Fig. 12): a generated face crop -> the full photo, on the photo's own background.

The crop goes back through the inverse of the photo's crop similarity with
:func:`emotalk.data.face.alignment.paste_crop` (feathered crop border, times the person alpha when the
background was replaced, so pixels outside the person come straight from the photo). :class:`Compositor`
restricts that to the crop's bounding box in the photo (the rest of a frame is the photo itself, so a
frame costs a warp of the size of the face region instead of the whole photo) and, since the crop
transform is fixed for a photo, prepares the warped blend mask and the photo's share of the blend once
(:class:`~emotalk.data.face.alignment.CropPaster`): per frame one warp of the crop and one multiply-add
remain, with :func:`paste_crop`'s pixels exactly (a quarter of its time at 512 x 600).
"""
from __future__ import annotations

import numpy as np

from emotalk.data.face.alignment import CropPaster, apply_similarity, compose_similarity, invert_similarity
from emotalk.data.face.background import restore_background
from emotalk.inference.photo import Photo

#: Feather of the paste-back border, as a fraction of the crop size (8 px at 256, paste_crop's default).
PASTE_FEATHER = 8 / 256


class Compositor:
    """Full frames from face crops of one photo. ``alpha``: the person mask of the photo crop (or None)."""

    def __init__(self, photo: Photo, alpha: np.ndarray | None = None, feather: float | None = None):
        S = photo.crop_size
        self.image = photo.image
        self.alpha = alpha
        h, w = self.image.shape[:2]
        corners = apply_similarity(invert_similarity(photo.crop_matrix),
                                   np.array([[-1, -1], [S, -1], [S, S], [-1, S]], np.float64))
        x0 = int(max(np.floor(corners[:, 0].min()) - 2, 0))
        y0 = int(max(np.floor(corners[:, 1].min()) - 2, 0))
        x1 = int(min(np.ceil(corners[:, 0].max()) + 3, w))
        y1 = int(min(np.ceil(corners[:, 1].max()) + 3, h))
        if x1 <= x0 or y1 <= y0:  # pragma: no cover - the face is inside the photo
            x0, y0, x1, y1 = 0, 0, w, h
        self.roi = (x0, y0, x1, y1)
        # region pixels -> crop pixels: the crop similarity after shifting the region's origin to (x0, y0)
        self.m = compose_similarity(photo.crop_matrix, np.array([[1, 0, x0], [0, 1, y0]], np.float64))
        self.feather = max(int(round((PASTE_FEATHER * S) if feather is None else feather)), 0)
        self.region = np.ascontiguousarray(self.image[y0:y1, x0:x1])
        self.paster = CropPaster(self.region.shape, S, self.m, self.feather, alpha, image=self.region)

    def __call__(self, crop: np.ndarray) -> np.ndarray:
        """One ``(S, S, 3)`` uint8 crop -> a full ``(H, W, 3)`` uint8 frame."""
        x0, y0, x1, y1 = self.roi
        out = self.image.copy()
        self.paster(crop, out=out[y0:y1, x0:x1])
        return out


def crop_on_own_background(crop: np.ndarray, photo: Photo, alpha: np.ndarray | None) -> np.ndarray:
    """A generated crop with the photo crop's own background restored (paste=False output)."""
    return crop if alpha is None else restore_background(crop, photo.crop, alpha)
