"""Small generated G_T data: real public-domain face photos warped by known, smooth landmark motion.

Each subject is a real photo (``skimage.data.astronaut``, matplotlib's Grace Hopper) cropped around its
dlib landmarks with the canonical crop (``emotalk.data.face.alignment.crop_transform``). Every frame moves the
landmarks (head translation, mouth opening, smile, brow raise) and the crop is backward-warped with a
smooth displacement field (Gaussian-kernel interpolation of the landmark displacements), so the frame's
landmarks are exactly where the warped content went. Written as processed clips + subject references.
"""
from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

from emotalk.data.face.alignment import align_to_template, apply_similarity, crop_transform, retarget, warp_image
from emotalk.data.io.clip import (Clip, DatasetManifest, SubjectReference, clip_path, encode_frames, save_clip,
                               save_subject, subject_path)

JAW_LOW = list(range(5, 12))
LOWER_LIP = [55, 56, 57, 58, 59, 65, 66, 67]
UPPER_LIP = [49, 50, 51, 52, 53, 61, 62, 63]
CORNERS = {48: -1.0, 60: -1.0, 54: 1.0, 64: 1.0}
BROWS = list(range(17, 27))


@functools.lru_cache(maxsize=None)
def photo_landmarks() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    from emotalk.data.face.detect import DlibLandmarker
    from emotalk.data.io.photos import public_domain_photos

    det = DlibLandmarker()
    out = {}
    for name, img in public_domain_photos().items():
        out[name] = (img, det.largest_face(img).landmarks)
    return out


def face_crop(name: str, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(crop uint8 (S, S, 3), crop landmarks (68, 2), image landmarks (68, 2)) of a photo."""
    img, lm = photo_landmarks()[name]
    m = crop_transform(lm, size)
    return warp_image(img, m, size), apply_similarity(m, lm).astype(np.float32), lm


def _field(points: np.ndarray, centres: np.ndarray, disp: np.ndarray, sigma: float) -> np.ndarray:
    """Smooth displacement at ``points`` (N, 2): kernel-weighted landmark displacements (0 far away)."""
    d2 = ((points[:, None, :] - centres[None, :, :]) ** 2).sum(-1)
    w = np.exp(-d2 / (2 * sigma ** 2))
    return (w @ disp) / (w.sum(1, keepdims=True) + 0.15)


def random_motion(rng: np.random.Generator, size: int, emotion: str) -> tuple[np.ndarray, np.ndarray]:
    """(global translation (2,), local landmark displacements (68, 2)) in crop pixels."""
    u = size / 64.0
    t = rng.uniform(-3.0, 3.0, 2) * u
    d = np.zeros((68, 2))
    o = rng.uniform(0, 1)
    d[JAW_LOW, 1] += 3.0 * o * u
    d[LOWER_LIP, 1] += 4.0 * o * u
    d[UPPER_LIP, 1] -= 1.0 * o * u
    smile = rng.uniform(0.5, 1.0) if emotion == "happy" else 0.0
    for k, sx in CORNERS.items():
        d[k] += np.array([2.0 * sx, -1.0]) * smile * u
    brow = rng.uniform(0.5, 1.0) if emotion == "surprised" else 0.0
    d[BROWS, 1] -= 2.5 * brow * u
    return t, d


def warp_frame(crop: np.ndarray, lm: np.ndarray, t: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Move the face: content at landmark l ends at l + t + field(l); returns (frame, frame landmarks)."""
    import cv2

    S = crop.shape[0]
    sigma = 0.08 * S
    ys, xs = np.mgrid[0:S, 0:S].astype(np.float64)
    q = np.stack([xs.ravel(), ys.ravel()], 1)
    # backward map: frame(q) = crop(q - D(q)), D(q) = t + field evaluated at q - t (content moved by t first)
    D = t[None] + _field(q - t[None], lm, d, sigma)
    src = (q - D).reshape(S, S, 2).astype(np.float32)
    frame = cv2.remap(crop, src[..., 0], src[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    # where did landmark l go? solve l' = l + D(l') by fixed-point iteration
    new = lm.astype(np.float64) + t[None] + d
    for _ in range(20):
        new = lm + t[None] + _field(new - t[None], lm, d, sigma)
    return frame, new.astype(np.float32)


def make_warped_texture_dataset(root: str | Path, size: int = 64, clips_per_subject: int = 3, frames: int = 16,
                                seed: int = 0, subjects: tuple[str, ...] = ("astronaut", "grace_hopper"),
                                emotions: tuple[str, ...] = ("neutral", "happy", "surprised")) -> Path:
    root = Path(root)
    rng = np.random.default_rng(seed)
    for subject in subjects:
        crop, lm, img_lm = face_crop(subject, size)
        aligned_neutral, _ = align_to_template(img_lm)
        save_subject(SubjectReference(subject, crop, lm, aligned_neutral), subject_path(root, subject))
        for ci in range(clips_per_subject):
            emotion = emotions[ci % len(emotions)]
            imgs, lms = [], []
            for _ in range(frames):
                t, d = random_motion(rng, size, emotion)
                f, flm = warp_frame(crop, lm, t, d)
                imgs.append(f)
                lms.append(flm)
            crop_lms = np.stack(lms)
            aligned, _ = align_to_template(crop_lms)
            data, offsets = encode_frames(imgs, quality=95)
            clip = Clip(landmarks=retarget(aligned, align_to_template(lm)[0]),
                        neutral_landmarks=aligned_neutral, audio_features=np.zeros((frames, 1, 1), np.float32),
                        emotion=emotion, intensity=2, fps=30.0, subject=subject, clip_id=f"{emotion}_{seed}_{ci:02d}",
                        feature_kind="none", dataset="warped-photos", crop_landmarks=crop_lms,
                        frames_jpeg=data, frames_offsets=offsets)
            save_clip(clip, clip_path(root, subject, clip.clip_id))
    DatasetManifest(feature_kind="none", feature_dim=1, window=1, crop_size=size, source="warped-photos",
                    emotions=list(emotions)).save(root)
    return root
