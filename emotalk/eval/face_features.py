"""Face measurements several metrics share: dlib landmarks and boxes of a video, the identity photo's
landmarks, dlib face-recognition embeddings -- each computed once per sample and side and kept in the
sample's :class:`~emotalk.eval.feature_store.FeatureStore`.

Landmarks are dlib's (HOG detector + 68-point predictor, :mod:`emotalk.data.face.detect`): the largest
face of each frame; when detection fails on a frame, the landmarks are fitted inside the previous frame's
box (the box is then reported as missing), so a short detector dropout does not lose the frame.
"""
from __future__ import annotations

import numpy as np

from emotalk.errors import DataError, NoFaceError
from emotalk.eval.detectors import get_feature_detector
from emotalk.eval.feature_store import Feature, Side
from emotalk.eval.sample import MetricOptions, VideoSample, repeat_sources
from emotalk.models.face_graph import NUM_LANDMARKS


def detect_faces_video(frames: np.ndarray, upsample: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """dlib on every frame: ((T, 68, 2) landmarks, (T, 4) boxes left/top/right/bottom), float32 pixels,
    NaN rows where no face is found (see module docstring). A frame equal to the previous one gets the
    previous one's result without running dlib again (the static-photo baseline is one frame repeated)."""
    lm = get_feature_detector("dlib_landmarks", upsample=int(upsample))
    lms = np.full((len(frames), NUM_LANDMARKS, 2), np.nan, dtype=np.float32)
    boxes = np.full((len(frames), 4), np.nan, dtype=np.float32)
    box = None
    src = repeat_sources(frames)
    for t, frame in enumerate(frames):
        if src[t] != t:  # identical to frame t - 1: dlib is deterministic, and the tracked box is unchanged
            lms[t], boxes[t] = lms[t - 1], boxes[t - 1]
            continue
        faces = lm.detect_faces(frame)
        if faces:
            face = max(faces, key=lambda f: f.size)
            boxes[t] = face.box
        elif box is not None:
            face = lm.fit(frame, box)
        else:
            continue
        box = face.box
        lms[t] = face.landmarks
    return lms, boxes


def detect_landmarks(frames: np.ndarray, upsample: int = 1) -> np.ndarray:
    """(T, 68, 2) float32 dlib landmarks (see :func:`detect_faces_video`)."""
    return detect_faces_video(frames, upsample)[0]


def _detect_into(sample: VideoSample, side: Side, opts: MetricOptions) -> None:
    frames = sample.frames(side)
    if frames is None:
        raise DataError(f"{sample.name or 'sample'}: no {side.value.replace('_', '-')} frames to find landmarks in")
    lms, boxes = detect_faces_video(frames, opts.landmark_upsample)
    sample.features.put(side, Feature.LANDMARKS, lms.astype(np.float64))
    sample.features.put(side, Feature.BOXES, boxes)


def sample_landmarks(sample: VideoSample, side: Side, opts: MetricOptions) -> np.ndarray:
    """(T, 68, 2) float64 landmarks of ``side`` (given with the sample, or detected once)."""
    side = Side(side)
    if (side, Feature.LANDMARKS) not in sample.features:
        _detect_into(sample, side, opts)
    return sample.features.get(side, Feature.LANDMARKS)


def sample_boxes(sample: VideoSample, side: Side, opts: MetricOptions) -> np.ndarray:
    """(T, 4) face boxes: dlib's detections when the landmarks were detected here, otherwise the bounding
    boxes of the given landmarks."""
    side = Side(side)

    def from_landmarks() -> np.ndarray:
        lms = sample_landmarks(sample, side, opts)
        return np.concatenate([np.min(lms, axis=1), np.max(lms, axis=1)], axis=1)

    return sample.features.get_or_compute(side, Feature.BOXES, from_landmarks)


def identity_landmarks(sample: VideoSample, opts: MetricOptions) -> np.ndarray:
    """(1, 68, 2) landmarks of the identity photo; NoFaceError when dlib finds no face there."""
    lms = sample_landmarks(sample, Side.IDENTITY, opts)
    if not np.isfinite(lms).all():
        raise NoFaceError(f"{sample.name or 'sample'}: no face found in the identity photo, so its identity "
                          f"embedding cannot be computed; use a frontal photo where the face is clearly visible")
    return lms


def dlib_face_embeddings(frames: np.ndarray, landmarks: np.ndarray | None = None, upsample: int = 1) -> np.ndarray:
    """(T, 128) dlib face-recognition embeddings (NaN rows where no face was found).

    ``landmarks`` (T, 68, 2) pixel coordinates are used when given; otherwise faces are detected.
    """
    import dlib

    frames = np.asarray(frames)
    if landmarks is None:
        landmarks = detect_landmarks(frames, upsample)
    model = get_feature_detector("dlib_facerec")
    out = np.full((len(frames), 128), np.nan)
    src = repeat_sources(frames, np.asarray(landmarks))
    for t, (img, pts) in enumerate(zip(frames, landmarks)):
        if src[t] != t:  # the same frame and landmarks as before: the same embedding
            out[t] = out[t - 1]
            continue
        if not np.isfinite(pts).all():
            continue
        x0, y0 = np.floor(pts.min(0)).astype(int)
        x1, y1 = np.ceil(pts.max(0)).astype(int)
        shape = dlib.full_object_detection(dlib.rectangle(int(x0), int(y0), int(x1), int(y1)),
                                           [dlib.point(int(round(x)), int(round(y))) for x, y in pts])
        out[t] = np.asarray(model.compute_face_descriptor(np.ascontiguousarray(img), shape), dtype=np.float64)
    return out


def sample_dlib_embeddings(sample: VideoSample, side: Side, opts: MetricOptions) -> np.ndarray:
    """dlib embeddings of every ``opts.embedding_stride``-th frame of ``side`` (the identity photo: its one
    frame, whatever the stride)."""
    side = Side(side)
    k = 1 if side == Side.IDENTITY else opts.embedding_stride
    lms = identity_landmarks(sample, opts) if side == Side.IDENTITY else sample_landmarks(sample, side, opts)
    return sample.features.get_or_compute(
        side, Feature.DLIB_EMBEDDING, lambda: dlib_face_embeddings(sample.frames(side)[::k], lms[::k]), params=k)
